"""The outbox: emails are rows first (written in the caller's unit of work), sent by the worker afterwards.

Sending, in `send_due`: a batch is claimed with a lease (FOR UPDATE SKIP LOCKED, committed), the SMTP server is
reached, then each email is marked SENDING (committed) just before it is handed over and SENT once the server
accepted it. So:
- the server down, or answering 4xx: the email goes back to PENDING with a later attempt (never lost);
- the worker dying before it marked an email SENDING: its lease expires and it is claimed again;
- the worker dying between SENDING and SENT (the server may have accepted it): UNCERTAIN once the lease
  expires, never sent again (never twice); counted in `mail_report` for an operator.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import sqlalchemy as sa
import structlog

from app.db import SYSTEM, AsyncSession, Database, new_id, utcnow
from app.mail import templates
from app.mail.models import CLAIMED, FAILED, PENDING, SENDING, SENT, UNCERTAIN, OutboxEmail
from app.settings import Settings
from app.unit_of_work import after_commit, transaction

log = structlog.get_logger(__name__)

SEND_JOB = "send_emails"
RETRY_DELAYS = (30, 120, 600, 1800, 3600)  # seconds after each failed attempt; then every hour
LEASE_SECONDS = 120


def enqueue(
    session: AsyncSession,
    *,
    to: str,
    template: str,
    values: dict[str, Any],
    org_id: str | None = None,
    user_id: str | None = None,
    settings: Settings | None = None,
) -> OutboxEmail:
    """Adds an email to the outbox in the caller's transaction; the worker is asked to send it after the commit
    (and the sweeper sends it anyway within a minute if that request is lost)."""
    rendered = templates.render(template, values)
    domain = (settings.mail_from.rpartition("@")[2] if settings else "") or "agentrail.local"
    email = OutboxEmail(
        id=new_id("eml"),
        org_id=org_id,
        user_id=user_id,
        template=template,
        to_address=to,
        subject=rendered.subject[:500],
        body_text=rendered.text,
        body_html=rendered.html,
        message_id=make_msgid(domain=domain.strip(">")),
    )
    session.add(email)
    after_commit(session, _ask_worker, key="mail.send")
    return email


async def _ask_worker(runtime: Any) -> None:
    try:
        await runtime.queue.enqueue_job(SEND_JOB)
    except Exception:
        log.warning("could not queue the email sender; the sweeper will send within a minute", exc_info=True)


# --- sending ------------------------------------------------------------------------------------------
_CLAIM = sa.text(
    """
    WITH due AS (
        SELECT id FROM email_outbox
        WHERE (status = 'PENDING' AND next_attempt_at <= :now) OR (status = 'CLAIMED' AND lease_expires_at <= :now)
        ORDER BY next_attempt_at LIMIT :limit FOR UPDATE SKIP LOCKED
    )
    UPDATE email_outbox AS e SET status = 'CLAIMED', claim_token = :token, lease_expires_at = :lease,
        attempt_count = e.attempt_count + 1
    FROM due WHERE e.id = due.id
    RETURNING e.id, e.to_address, e.subject, e.body_text, e.body_html, e.message_id, e.attempt_count
    """
)
_UNCERTAIN = sa.text(
    "UPDATE email_outbox SET status = 'UNCERTAIN', claim_token = NULL, body_text = NULL, body_html = NULL,"
    " last_error = 'the sender stopped while handing this email over; not sent again'"
    " WHERE status = 'SENDING' AND lease_expires_at <= :now"
)
_MOVE = sa.text(
    "UPDATE email_outbox SET status = :status, claim_token = :keep_token, last_error = :error,"
    " next_attempt_at = :next_at, sent_at = :sent_at,"
    " body_text = CASE WHEN :clear THEN NULL ELSE body_text END,"
    " body_html = CASE WHEN :clear THEN NULL ELSE body_html END"
    " WHERE id = :id AND claim_token = :token AND status = ANY(CAST(:from_statuses AS text[]))"
)


@dataclass(frozen=True)
class Claimed:
    id: str
    to_address: str
    subject: str
    body_text: str
    body_html: str
    message_id: str
    attempt: int


@dataclass
class SendReport:
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    uncertain: int = 0
    errors: list[str] = field(default_factory=list)


class Temporary(Exception):
    """The server is down or said "try later" (4xx): the email is attempted again."""


class Permanent(Exception):
    """The server refused the email for good (5xx): it is FAILED."""


Deliver = Callable[[EmailMessage], Awaitable[None]]


class Transport:
    """Where the worker hands emails over (app/mail/smtp.py: SMTP, or the development folder)."""

    async def __aenter__(self) -> Deliver:
        raise NotImplementedError

    async def __aexit__(self, *exc: object) -> None:
        return None


def message(email: Claimed, settings: Settings) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = settings.mail_from
    msg["To"] = email.to_address
    msg["Subject"] = email.subject
    msg["Message-ID"] = email.message_id
    msg.set_content(email.body_text)
    msg.add_alternative(email.body_html, subtype="html")
    return msg


async def send_due(
    db: Database, transport: Transport, settings: Settings, *, now: datetime | None = None
) -> SendReport:
    """One batch of due emails through `transport`."""
    now = now or utcnow()
    report = SendReport()
    token = secrets.token_hex(8)
    async with transaction(db, SYSTEM) as session:
        report.uncertain = (await session.execute(_UNCERTAIN, {"now": now})).rowcount or 0
        rows = (
            await session.execute(
                _CLAIM,
                {
                    "now": now,
                    "limit": settings.mail_batch_size,
                    "token": token,
                    "lease": now + timedelta(seconds=LEASE_SECONDS),
                },
            )
        ).all()
    claimed = [
        Claimed(r.id, r.to_address, r.subject, r.body_text or "", r.body_html or "", r.message_id, r.attempt_count)
        for r in rows
    ]
    report.claimed = len(claimed)
    if not claimed:
        return report
    remaining = list(claimed)
    try:
        async with transport as deliver:
            while remaining:
                email = remaining[0]
                await _move(db, email, token, SENDING, from_statuses=[CLAIMED], keep_token=True)
                try:
                    await deliver(message(email, settings))
                except Permanent as exc:
                    remaining.pop(0)
                    await _move(db, email, token, FAILED, from_statuses=[SENDING], error=str(exc), clear=True)
                    report.failed += 1
                    continue
                except Temporary as exc:
                    # not accepted: this one and the rest go back (the connection may be gone)
                    await _retry(db, remaining, token, str(exc), settings, report, sending_first=True)
                    return report
                remaining.pop(0)
                await _move(db, email, token, SENT, from_statuses=[SENDING], sent_at=utcnow(), clear=True)
                report.sent += 1
    except Temporary as exc:  # the server could not be reached (or refused us before any email)
        await _retry(db, remaining, token, str(exc), settings, report, sending_first=False)
    return report


async def _retry(
    db: Database,
    emails: list[Claimed],
    token: str,
    error: str,
    settings: Settings,
    report: SendReport,
    *,
    sending_first: bool,
) -> None:
    report.errors.append(error)
    for i, email in enumerate(emails):
        statuses = [SENDING] if sending_first and i == 0 else [CLAIMED]
        if email.attempt >= settings.mail_max_attempts:
            await _move(db, email, token, FAILED, from_statuses=statuses, error=error, clear=True)
            report.failed += 1
            continue
        delay = RETRY_DELAYS[min(email.attempt - 1, len(RETRY_DELAYS) - 1)]
        await _move(
            db, email, token, PENDING, from_statuses=statuses, error=error, next_at=utcnow() + timedelta(seconds=delay)
        )
        report.retried += 1


async def _move(
    db: Database,
    email: Claimed,
    token: str,
    status: str,
    *,
    from_statuses: list[str],
    error: str | None = None,
    next_at: datetime | None = None,
    sent_at: datetime | None = None,
    clear: bool = False,
    keep_token: bool = False,
) -> None:
    async with transaction(db, SYSTEM) as session:
        await session.execute(
            _MOVE,
            {
                "id": email.id,
                "token": token,
                "keep_token": token if keep_token else None,
                "status": status,
                "error": error[:1000] if error else None,
                "next_at": next_at or utcnow(),
                "sent_at": sent_at,
                "clear": clear,
                "from_statuses": from_statuses,
            },
        )


async def mail_report(session: AsyncSession) -> dict[str, int]:
    """Emails per status (a system session)."""
    rows = await session.execute(sa.text("SELECT status, count(*) AS n FROM email_outbox GROUP BY status"))
    counts = {s: 0 for s in (PENDING, CLAIMED, SENDING, SENT, FAILED, UNCERTAIN)}
    counts.update({r.status: int(r.n) for r in rows})
    return counts
