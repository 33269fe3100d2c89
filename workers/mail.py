"""Email jobs: the outbox sent after each commit that wrote to it, and swept every minute for the rest."""

from __future__ import annotations

import time
from typing import Any

import structlog

from app.mail import service
from app.mail.smtp import transport_for

log = structlog.get_logger(__name__)

SWEEP_SECONDS = 50.0


async def send_emails(ctx: dict[str, Any]) -> int:
    """Every due email, batch after batch (queued after a commit that wrote one, and every minute by cron)."""
    runtime = ctx["runtime"]
    settings = runtime.settings
    transport = transport_for(settings)
    if transport is None:
        log.warning("emails are waiting in the outbox: set AGENTRAIL_SMTP_HOST to send them")
        return 0
    started = time.monotonic()
    sent = 0
    while time.monotonic() - started < SWEEP_SECONDS:
        report = await service.send_due(runtime.db, transport_for(settings) or transport, settings)
        sent += report.sent
        if report.uncertain:
            log.warning(
                "emails left uncertain by a sender that stopped mid-way; not sent again", count=report.uncertain
            )
        if report.errors:
            log.warning("emails not sent yet; retried later", count=report.retried, error=report.errors[-1][:200])
            break
        if report.claimed < settings.mail_batch_size:
            break
    return sent
