"""Revoked credentials, told to every API process so that they close the subscriptions opened with them.

A revocation is announced on Redis after its commit (immediate, on every node); every node also re-checks the
credentials of its open subscriptions against PostgreSQL every `credential_recheck_seconds`, which catches what
an announcement lost while Redis was down (and users removed by other means).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import orjson
import sqlalchemy as sa
import structlog
from sqlmodel import col, select

from app.db import AsyncSession, utcnow
from app.orgs.models import ApiKey, Membership, SignInSession
from app.principal import Principal
from app.runtime.redis import Broadcaster

log = structlog.get_logger(__name__)

REVOKED_CHANNEL = "agentrail:credentials:revoked"


@dataclass(frozen=True)
class Revoked:
    """What ended: API keys, users (everywhere), a user in one organisation (`memberships`: user id, org id),
    sign-in sessions (`session_ids`: every token issued for them)."""

    api_key_ids: tuple[str, ...] = ()
    user_ids: tuple[str, ...] = ()
    memberships: tuple[tuple[str, str], ...] = ()
    session_ids: tuple[str, ...] = ()

    def covers(self, principal: Principal) -> bool:
        if principal.api_key_id is not None:
            return principal.api_key_id in self.api_key_ids
        return (
            principal.user_id in self.user_ids
            or (principal.user_id, principal.org_id) in self.memberships
            or (principal.session_id is not None and principal.session_id in self.session_ids)
        )

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "apiKeyIds": list(self.api_key_ids),
                "userIds": list(self.user_ids),
                "memberships": [list(m) for m in self.memberships],
                "sessionIds": list(self.session_ids),
            }
        )

    @classmethod
    def decode(cls, message: bytes) -> Revoked:
        data = orjson.loads(message)
        memberships = tuple((str(m[0]), str(m[1])) for m in data.get("memberships", ()) if len(m) == 2)
        return cls(
            tuple(map(str, data.get("apiKeyIds", ()))),
            tuple(map(str, data.get("userIds", ()))),
            memberships,
            tuple(map(str, data.get("sessionIds", ()))),
        )


async def announce(broadcaster: Broadcaster, revoked: Revoked) -> None:
    try:
        await broadcaster.publish(REVOKED_CHANNEL, revoked.encode())
    except Exception as exc:
        log.warning("could not announce a revocation; the periodic re-check closes its subscriptions",
                    error=type(exc).__name__)  # fmt: skip


async def no_longer_valid(session: AsyncSession, principals: Iterable[Principal]) -> Revoked:
    """Of these principals, the API keys revoked (or deleted) and the users gone from their organisation, in
    two queries however many there are (a third for sign-in sessions). A system session."""
    principals = list(principals)
    key_ids = {p.api_key_id for p in principals if p.api_key_id}
    user_ids = {(p.user_id, p.org_id) for p in principals if p.user_id}
    active_keys: set[str] = set()
    present_users: set[tuple[str, str]] = set()
    if key_ids:
        keys = await session.exec(
            select(ApiKey.id).where(col(ApiKey.id).in_(key_ids), col(ApiKey.revoked_at).is_(None))
        )
        active_keys = set(keys.all())
    if user_ids:
        pairs = sa.tuple_(col(Membership.user_id), col(Membership.org_id)).in_(list(user_ids))
        rows = await session.execute(sa.select(col(Membership.user_id), col(Membership.org_id)).where(pairs))
        present_users = {(r.user_id, r.org_id) for r in rows}
    session_ids = {p.session_id for p in principals if p.session_id}
    ended_sessions: set[str] = set()
    if session_ids:
        ended_sessions = session_ids - await active_sessions(session, session_ids)
    return Revoked(
        api_key_ids=tuple(sorted(key_ids - active_keys)),
        memberships=tuple(sorted(user_ids - present_users)),
        session_ids=tuple(sorted(ended_sessions)),
    )


async def active_sessions(session: AsyncSession, ids: set[str]) -> set[str]:
    """Of these sign-in sessions, those still active (not revoked, not expired)."""
    rows = await session.exec(
        select(SignInSession.id).where(
            col(SignInSession.id).in_(ids), col(SignInSession.revoked_at).is_(None),
            col(SignInSession.expires_at) > utcnow(),
        )
    )  # fmt: skip
    return set(rows.all())
