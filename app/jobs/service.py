"""Background jobs of exports and reports: claiming a job's row, and live updates. Each change of an export's
or report's status is published to the user who asked for it.

Updates travel through Redis pub/sub (any API node serves the subscription). They are best effort: the job's
row is the truth, and a client that reconnects reads it with `exportJob(id)` / `report(id)`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
import structlog
from sqlmodel import select

from app.db import AsyncSession, iso, utcnow
from app.runtime.redis import Broadcaster
from app.runtime.signed_links import sign_path
from app.settings import Settings

log = structlog.get_logger(__name__)


@dataclass
class JobUpdate:
    job_id: str
    kind: str  # "export" | "report"
    status: str
    progress: float | None = None
    row_count: int | None = None
    download_url: str | None = None
    error: str | None = None
    updated_at: str = field(default_factory=lambda: iso(utcnow()) or "")


async def lock_claimable(
    session: AsyncSession, model: Any, row_id: str, *, lease: str, lease_timeout: timedelta
) -> Any:
    """The job's row, locked for this worker, if it may be claimed: PENDING, or RUNNING with its lease (the
    column `lease`: last heartbeat or claim) older than `lease_timeout`, its worker having died. None otherwise, and
    for a row another worker is claiming right now (SKIP LOCKED)."""
    row = (await session.exec(select(model).where(model.id == row_id).with_for_update(skip_locked=True))).first()
    if row is None:
        return None
    leased_at = getattr(row, lease)
    stale = row.status == "RUNNING" and (leased_at is None or leased_at < utcnow() - lease_timeout)
    return row if row.status == "PENDING" or stale else None


def job_updates_channel(org_id: str, requester_id: str) -> str:
    return f"jobs:{org_id}:{requester_id}"


async def publish_job_update(broadcaster: Broadcaster, org_id: str, requester_id: str, update: JobUpdate) -> None:
    """Tells the requester's live subscriptions; never fails the job (a lost update is re-read from the row)."""
    try:
        await broadcaster.publish(job_updates_channel(org_id, requester_id), orjson.dumps(asdict(update)))
    except Exception:
        log.warning("could not publish a job update", job_id=update.job_id, exc_info=True)


def decode_job_update(message: bytes) -> JobUpdate:
    data: dict[str, Any] = orjson.loads(message)
    return JobUpdate(**data)


def api_base_url(settings: Settings) -> str:
    return (settings.api_url or f"http://{settings.host}:{settings.port}").rstrip("/")


def signed_download_url(
    settings: Settings, secret_key: str, path: str, org_id: str, *, not_after: datetime | None = None
) -> str:
    """An absolute, signed link to `path`, valid for `download_link_minutes` (never past `not_after`)."""
    expires_at = utcnow() + timedelta(minutes=settings.download_link_minutes)
    if not_after is not None:
        expires_at = min(expires_at, not_after)
    return api_base_url(settings) + sign_path(secret_key, path, org_id, expires_at)
