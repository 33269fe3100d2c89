"""Who is calling: a signed-in user or an agent's API key, always inside one organisation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from app.errors import Forbidden


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

    @property
    def actor_id(self) -> str:
        return self.user_id or self.api_key_id or ""

    @property
    def is_user(self) -> bool:
        return self.kind == "user"

    def require_user(self, action: str) -> None:
        if not self.is_user:
            raise Forbidden(f"an API key cannot {action}; sign in as a user")

    def require_role(self, action: str, *roles: str) -> None:
        self.require_user(action)
        if self.role not in roles:
            raise Forbidden(f"only {' or '.join(roles)} may {action}")
