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

from app.db import AsyncSession
from app.orgs.models import ApiKey, User
from app.principal import Principal
from app.runtime.redis import Broadcaster

log = structlog.get_logger(__name__)

REVOKED_CHANNEL = "agentrail:credentials:revoked"


@dataclass(frozen=True)
class Revoked:
    api_key_ids: tuple[str, ...] = ()
    user_ids: tuple[str, ...] = ()

    def covers(self, principal: Principal) -> bool:
        if principal.api_key_id is not None:
            return principal.api_key_id in self.api_key_ids
        return principal.user_id in self.user_ids

    def encode(self) -> bytes:
        return orjson.dumps({"apiKeyIds": list(self.api_key_ids), "userIds": list(self.user_ids)})

    @classmethod
    def decode(cls, message: bytes) -> Revoked:
        data = orjson.loads(message)
        return cls(tuple(map(str, data.get("apiKeyIds", ()))), tuple(map(str, data.get("userIds", ()))))


async def announce(broadcaster: Broadcaster, revoked: Revoked) -> None:
    try:
        await broadcaster.publish(REVOKED_CHANNEL, revoked.encode())
    except Exception as exc:
        log.warning("could not announce a revocation; the periodic re-check closes its subscriptions",
                    error=type(exc).__name__)  # fmt: skip


async def no_longer_valid(session: AsyncSession, principals: Iterable[Principal]) -> Revoked:
    """Of these principals, the API keys revoked (or deleted) and the users gone from their organisation, in
    two queries however many there are. A system session."""
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
        pairs = sa.tuple_(col(User.id), col(User.org_id)).in_(list(user_ids))
        rows = await session.execute(sa.select(col(User.id), col(User.org_id)).where(pairs))
        present_users = {(r.id, r.org_id) for r in rows}
    return Revoked(
        api_key_ids=tuple(sorted(key_ids - active_keys)),
        user_ids=tuple(sorted({u for u, _ in user_ids - present_users})),
    )
