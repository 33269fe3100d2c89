"""Who is calling: a signed-in user or an agent's API key, always inside one organisation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal


class Role(StrEnum):
    """A user's role in the organisation, highest first: the order ranks them (app/permissions.py)."""

    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"
    VIEWER = "viewer"  # read-only: every operation declared for any role, nothing declared for MEMBER or above


class Scope(StrEnum):
    """What an API key is for (app/permissions.py): a key holds the scopes it was created with; FULL stands in
    for every scope."""

    INGEST = "ingest"  # write audit records and spans (GraphQL, REST, OTLP)
    READ = "read"  # read the organisation's data
    FULL = "full"  # everything an API key may do


@dataclass(frozen=True)
class Principal:
    kind: Literal["user", "api_key", "organization"]  # organization: a shared execution's, no caller
    org_id: str
    user_id: str | None = None
    api_key_id: str | None = None
    role: str | None = None  # users only
    # who, at the time (kept on activity events): the user's name and email, or the key's name and prefix
    actor_name: str | None = None
    actor_email: str | None = None
    # a user token's expiry: open subscriptions are closed when it passes
    expires_at: datetime | None = None
    session_id: str | None = None  # users: the sign-in session the token belongs to
    scopes: frozenset[Scope] = frozenset(Scope)  # API keys only
    # API keys only: the agents the key may write records for; None: any agent of the organisation
    agent_ids: frozenset[str] | None = None

    @property
    def actor_id(self) -> str:
        return self.user_id or self.api_key_id or ""

    @property
    def is_user(self) -> bool:
        return self.kind == "user"

    def holds(self, scope: Scope) -> bool:
        """Whether an API key holds `scope` (FULL holds every scope)."""
        return scope in self.scopes or Scope.FULL in self.scopes
