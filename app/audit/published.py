"""The newest digest each organisation has published, kept outside the database (in Redis), so that a trail
cut short in the database (its newest records deleted with their digests, or every table truncated) is noticed.

Sealing records each digest it publishes (webhook `audit.digest_sealed`) here, only ever moving forward; `/readyz`
reports `audit_trail` broken while some organisation's digest chain in the database is shorter than what was
published, or holds another digest at that place.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
import structlog
from redis.exceptions import RedisError

from app.audit.models import AuditDigest
from app.db import Database

log = structlog.get_logger(__name__)

KEY = "agentrail:audit:published"  # hash: "<stream>:<org_id>" -> "<sequence>:<tree_size>:<digest_hash>"
_FORWARD = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  local seq = tonumber(string.match(old, '^(%d+):'))
  if seq and seq >= tonumber(ARGV[2]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""


async def record(redis: Any, digest: AuditDigest) -> None:
    """Remembers `digest` as its organisation's newest published one (never moves back). A Redis outage loses
    only this check's memory, never a record: logged, not raised."""
    value = f"{digest.sequence}:{digest.tree_size or 0}:{digest.digest_hash}"
    try:
        await redis.eval(_FORWARD, 1, KEY, f"{digest.stream}:{digest.org_id}", digest.sequence, value)
    except RedisError as exc:
        log.warning("could not record the published digest", org_id=digest.org_id, reason=type(exc).__name__)


async def shortfalls(db: Database, redis: Any) -> list[str]:
    """What the database lacks of the published digests: one line per organisation and stream, or []."""
    published = await redis.hgetall(KEY)
    if not published:
        return []
    wanted: dict[tuple[str, str, int], str] = {}
    for field, value in published.items():
        field, value = _text(field), _text(value)
        stream, _, org_id = field.partition(":")
        sequence, _, rest = value.partition(":")
        wanted[(org_id, stream, int(sequence))] = rest.partition(":")[2]
    digest = AuditDigest.__table__.c  # type: ignore[attr-defined]
    stmt = sa.select(digest.org_id, digest.stream, digest.sequence, digest.digest_hash).where(
        sa.tuple_(digest.org_id, digest.stream, digest.sequence).in_(list(wanted))
    )
    async with db.system_session() as session:
        found = {(r[0], r[1], int(r[2])): r[3] for r in (await session.execute(stmt)).all()}
    problems = []
    for key, digest_hash in sorted(wanted.items()):
        org, kind, number = key
        if key not in found:
            problems.append(f"{org} {kind}: digest {number} was published but is missing (the trail was cut)")
        elif found[key] != digest_hash:
            problems.append(f"{org} {kind}: digest {number} differs from the one published (it was replaced)")
    return problems


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def floor(redis: Any, org_id: str, stream: str = "audit") -> tuple[int, str] | None:
    """The newest digest published for the organisation: (sequence, digest hash), or None (none recorded, or
    Redis unavailable: verification then relies on the database and the verifier's own copies)."""
    try:
        value = await redis.hget(KEY, f"{stream}:{org_id}")
    except RedisError:
        return None
    if not value:
        return None
    sequence, _, rest = _text(value).partition(":")
    return int(sequence), rest.partition(":")[2]
