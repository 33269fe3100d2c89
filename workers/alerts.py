"""Alert notification emails: per organisation after alerts commit, and a sweep every minute (digests)."""

from __future__ import annotations

from typing import Any

import structlog

from app.alerts import notify

log = structlog.get_logger(__name__)


async def notify_alerts(ctx: dict[str, Any], org_id: str) -> int:
    report = await notify.notify(ctx["runtime"], org_id)
    return report.emails


async def sweep_alert_notifications(ctx: dict[str, Any]) -> int:
    """Every minute: each organisation where someone has alert emails on (digests fall due here)."""
    runtime = ctx["runtime"]
    sent = 0
    for org_id in await notify.organisations_to_notify(runtime):
        try:
            sent += (await notify.notify(runtime, org_id)).emails
        except Exception:
            log.warning("alert emails failed for an organisation; retried next minute", exc_info=True)
    return sent
