"""Alert notification emails, per member and per their `notificationPreferences.alertEmails`:

    {"alertEmails": {"enabled": true, "severities": ["HIGH", "CRITICAL"], "digestMinutes": 0}}

Opt-in (absent or `enabled: false`: none). `severities`: which alerts count (default HIGH and CRITICAL).
`digestMinutes`: 0 sends as soon as alerts arrive, at most one email a minute; N sends at most one email every N
minutes (a digest). Either way one email covers every alert since the previous one: a burst of 1,000 alerts is
one email. Each email links to the alerts and to a one-click unsubscribe.

Run by the worker: queued (one job per organisation, deduplicated while it waits) a few seconds after an ingest
that raised alerts commits, and swept every minute (digests fall due, and a lost job is caught up). Each run
holds a per-organisation advisory lock, and the email is written to the outbox in the transaction that moves
the member's cursor: never two emails for the same alerts, never an alert skipped.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
import structlog
from sqlmodel import col, select

from app.alerts.models import Alert, AlertNotificationState
from app.db import SYSTEM, AsyncSession, lock_organisation, utcnow
from app.mail import service as mail
from app.orgs import service as orgs
from app.orgs.models import Membership, User
from app.orgs.preferences import SEVERITIES
from app.runtime.resources import Runtime
from app.unit_of_work import transaction, unit_of_work

log = structlog.get_logger(__name__)

NOTIFY_JOB = "notify_alerts"
LOCK_NAMESPACE = 0x414C4E54  # "ALNT"
DEFER_SECONDS = 5  # a burst arriving within this goes out in the first email
SETTLE_SECONDS = 2  # alerts younger than this wait for the next run (a slower transaction may still commit one)
MIN_INTERVAL_SECONDS = 60  # "immediate" is at most one email a minute
DEFAULT_SEVERITIES = ("HIGH", "CRITICAL")
SUMMARY_LINES = 20


@dataclass(frozen=True)
class Preferences:
    severities: tuple[str, ...]
    interval_seconds: int


def preferences(raw: Any) -> Preferences | None:
    """The member's alert email settings, None when off (or unreadable: a bad setting sends nothing)."""
    if not isinstance(raw, dict):
        return None
    settings = raw.get("alertEmails")
    if not isinstance(settings, dict) or settings.get("enabled") is not True:
        return None
    severities = settings.get("severities", list(DEFAULT_SEVERITIES))
    if not isinstance(severities, list):
        return None
    chosen = tuple(s.upper() for s in severities if isinstance(s, str) and s.upper() in SEVERITIES)
    minutes = settings.get("digestMinutes", 0)
    if not isinstance(minutes, int) or isinstance(minutes, bool) or not 0 <= minutes <= 1440:
        minutes = 0
    return Preferences(chosen, max(minutes * 60, MIN_INTERVAL_SECONDS)) if chosen else None


# --- unsubscribe links ----------------------------------------------------------------------------------
def _signature(secret_key: str, user_id: str, org_id: str) -> str:
    key = hmac.new(secret_key.encode(), b"agentrail alert unsubscribe v1", hashlib.sha256).digest()
    mac = hmac.new(key, f"{user_id}\n{org_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def unsubscribe_link(runtime: Runtime, user_id: str, org_id: str) -> str:
    settings = runtime.settings
    base = (settings.api_url or f"http://{settings.host}:{settings.port}").rstrip("/")
    query = urlencode({"user": user_id, "org": org_id, "signature": _signature(runtime.secret_key, user_id, org_id)})
    return f"{base}/api/v1/alerts/unsubscribe?{query}"


def valid_unsubscribe(secret_key: str, user_id: str, org_id: str, signature: str) -> bool:
    return hmac.compare_digest(_signature(secret_key, user_id, org_id).encode(), signature.encode())


async def unsubscribe(session: AsyncSession, user_id: str) -> bool:
    """Turns the user's alert emails off (a system session). False when there is no such user."""
    user = await session.get(User, user_id)
    if user is None:
        return False
    prefs = dict(user.notification_preferences or {})
    current = prefs.get("alertEmails")
    prefs["alertEmails"] = {**(current if isinstance(current, dict) else {}), "enabled": False}
    user.notification_preferences = prefs
    user.updated_at = utcnow()
    await session.flush()
    return True


# --- running ------------------------------------------------------------------------------------------
async def queue(runtime: Runtime, org_ids: set[str]) -> None:
    """After alerts committed: one deferred job per organisation (a job already waiting takes them too)."""
    for org_id in org_ids:
        try:
            await runtime.queue.enqueue_job(
                NOTIFY_JOB, org_id, _job_id=f"notify-alerts:{org_id}", _defer_by=timedelta(seconds=DEFER_SECONDS)
            )
        except Exception:
            log.warning("could not queue alert emails; the minute sweep sends them", exc_info=True)


@dataclass
class NotifyReport:
    emails: int = 0
    alerts: int = 0
    waiting: list[str] = field(default_factory=list)  # members whose digest is not due yet


async def organisations_to_notify(runtime: Runtime) -> list[str]:
    """Organisations where someone has alert emails on (the sweep's list)."""
    enabled = User.notification_preferences["alertEmails"]["enabled"].as_boolean()
    async with transaction(runtime.db, SYSTEM) as session:
        rows = await session.exec(
            select(Membership.org_id)
            .join(User, col(User.id) == col(Membership.user_id))
            .where(enabled.is_(True))
            .distinct()
        )
        return list(rows.all())


async def notify(runtime: Runtime, org_id: str, *, now: datetime | None = None) -> NotifyReport:
    now = now or utcnow()
    settled = now - timedelta(seconds=SETTLE_SECONDS)
    report = NotifyReport()
    async with unit_of_work(runtime, org_id) as session:
        await lock_organisation(session, LOCK_NAMESPACE)
        members = (
            await session.exec(select(Membership, User).join(User, col(User.id) == col(Membership.user_id)))
        ).all()
        wanted = [(u, p) for _, u in members if (p := preferences(u.notification_preferences)) is not None]
        if not wanted:
            return report
        top = (await session.exec(select(sa.func.max(Alert.seq)).where(Alert.created_at <= settled))).one()
        if top is None:
            return report
        org = await orgs.get_organization(session, org_id)
        for user, prefs in wanted:
            state = await session.get(AlertNotificationState, (org_id, user.id))
            if state is None:
                # from when the member turned emails on (their profile's last change), not the whole history
                first = await session.exec(select(sa.func.min(Alert.seq)).where(Alert.created_at > user.updated_at))
                start = first.one()
                state = AlertNotificationState(
                    org_id=org_id, user_id=user.id, last_seq=(start - 1) if start is not None else top
                )
                session.add(state)
            if state.last_seq >= top:
                continue
            if state.last_sent_at is not None and (now - state.last_sent_at).total_seconds() < prefs.interval_seconds:
                report.waiting.append(user.id)
                continue
            window = (col(Alert.seq) > state.last_seq, col(Alert.seq) <= top, col(Alert.severity).in_(prefs.severities))
            count = int((await session.exec(select(sa.func.count()).select_from(Alert).where(*window))).one())
            state.last_seq = top
            if count == 0:
                continue
            latest = (
                await session.exec(select(Alert).where(*window).order_by(col(Alert.seq).desc()).limit(SUMMARY_LINES))
            ).all()
            lines = [f"[{a.severity}] {a.rule_name}: {a.message}" for a in latest]
            if count > len(latest):
                lines.append(f"… and {count - len(latest)} more")
            mail.enqueue(
                session,
                to=user.email,
                template="alert_notification",
                values={
                    "count": count,
                    "organization": org.name,
                    "summary": "\n".join(lines),
                    "link": f"{orgs.public_url(runtime.settings)}/alerts",
                    "unsubscribe": unsubscribe_link(runtime, user.id, org_id),
                },
                org_id=org_id,
                user_id=user.id,
                settings=runtime.settings,
            )
            state.last_sent_at = now
            state.emails_sent += 1
            report.emails += 1
            report.alerts += count
        await session.flush()
    return report
