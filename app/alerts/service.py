"""Operations of the alerts domain: reading alerts (filters, cursors, per record and trace) and resolving them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select

from app.activity.service import record_activity
from app.alerts.models import Alert
from app.alerts.writing import alert_event_data
from app.db import AsyncSession, utcnow, within
from app.errors import BadUserInput, NotFound
from app.masking import mask_text
from app.pagination import PageRequest
from app.principal import Principal
from app.webhooks import service as webhooks


@dataclass
class AlertQuery:
    resolved: bool | None = None
    severities: list[str] | None = None
    agent_ids: list[str] | None = None
    rule_ids: list[str] | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    audit_log_id: str | None = None
    trace_id: str | None = None

    def matches(self, alert: Alert) -> bool:
        """The same conditions in Python, for live alerts."""
        return (
            (self.resolved is None or (alert.resolved_at is not None) == self.resolved)
            and (not self.severities or alert.severity in self.severities)
            and (not self.agent_ids or alert.agent_id in self.agent_ids)
            and (not self.rule_ids or alert.rule_id in self.rule_ids)
            and (self.created_from is None or alert.created_at >= self.created_from)
            and (self.created_to is None or alert.created_at < self.created_to)
            and (self.audit_log_id is None or alert.audit_log_id == self.audit_log_id)
            and (self.trace_id is None or alert.trace_id == self.trace_id)
        )


def _alert_conditions(query: AlertQuery) -> list[Any]:
    conditions: list[Any] = []
    if query.resolved is not None:
        conditions.append(col(Alert.resolved_at).is_not(None) if query.resolved else col(Alert.resolved_at).is_(None))
    if query.severities:
        conditions.append(col(Alert.severity).in_(query.severities))
    if query.agent_ids:
        conditions.append(col(Alert.agent_id).in_(query.agent_ids))
    if query.rule_ids:
        conditions.append(col(Alert.rule_id).in_(query.rule_ids))
    conditions += within(Alert.created_at, query.created_from, query.created_to)
    if query.audit_log_id:
        conditions.append(Alert.audit_log_id == query.audit_log_id)
    if query.trace_id:
        conditions.append(Alert.trace_id == query.trace_id)
    return conditions


async def list_alerts(session: AsyncSession, query: AlertQuery, *, page: PageRequest) -> list[Alert]:
    """Newest first (by seq); the page's positions are seqs (`cursor_position`)."""
    stmt = select(Alert).where(*_alert_conditions(query))
    return list((await session.exec(page.apply(stmt, col(Alert.seq)))).all())


async def alerts_after(session: AsyncSession, query: AlertQuery, *, after_seq: int, limit: int) -> list[Alert]:
    """Oldest first, after a cursor: the replay part of the live subscription."""
    stmt = (
        select(Alert).where(*_alert_conditions(query), col(Alert.seq) > after_seq).order_by(col(Alert.seq)).limit(limit)
    )
    return list((await session.exec(stmt)).all())


async def alerts_since(
    session: AsyncSession, query: AlertQuery, *, since: datetime, after_seq: int, limit: int
) -> list[Alert]:
    """Raised at or after `since`, by seq after `after_seq` (a page): what a live subscriber may have missed
    while the pub/sub connection was down."""
    stmt = (
        select(Alert)
        .where(*_alert_conditions(query), col(Alert.created_at) >= since, col(Alert.seq) > after_seq)
        .order_by(col(Alert.seq))
        .limit(limit)
    )
    return list((await session.exec(stmt)).all())


async def get_alert(session: AsyncSession, alert_id: str) -> Alert:
    alert = await session.get(Alert, alert_id)
    if alert is None:
        raise NotFound("alert not found", id=alert_id)
    return alert


async def resolve_alert(
    session: AsyncSession, principal: Principal, alert_id: str, *, note: str | None, source_ip: str | None
) -> Alert:
    """Idempotent: resolving a resolved alert changes nothing."""
    if note is not None and len(note) > 2000:
        raise BadUserInput("note must be at most 2000 characters", field="note")
    alert = await get_alert(session, alert_id)
    if alert.resolved_at is None:
        alert.resolved_at = utcnow()
        alert.resolved_by = principal.user_id
        alert.resolution_note = mask_text(note)[0] if note else note  # secrets never land, in any free text
        record_activity(
            session,
            principal,
            "alert.resolved",
            target_type="alert",
            target_id=alert.id,
            metadata={"rule": alert.rule_name},
            source_ip=source_ip,
        )
        await webhooks.emit_event(session, "alert.resolved", alert_event_data(alert))
        await session.flush()
    return alert


async def reopen_alert(session: AsyncSession, principal: Principal, alert_id: str, *, source_ip: str | None) -> Alert:
    alert = await get_alert(session, alert_id)
    if alert.resolved_at is not None:
        alert.resolved_at = None
        alert.resolved_by = None
        alert.resolution_note = None
        record_activity(
            session, principal, "alert.reopened", target_type="alert", target_id=alert.id, source_ip=source_ip
        )
        await session.flush()
    return alert


async def alerts_by_record(session: AsyncSession, record_ids: Iterable[str]) -> dict[str, list[Alert]]:
    ids = list(set(record_ids))
    out: dict[str, list[Alert]] = {i: [] for i in ids}
    if ids:
        rows = (
            await session.exec(select(Alert).where(col(Alert.audit_log_id).in_(ids)).order_by(col(Alert.seq)))
        ).all()
        for alert in rows:
            out[alert.audit_log_id].append(alert)
    return out


async def alert_counts_by_trace(session: AsyncSession, trace_ids: Iterable[str]) -> dict[str, int]:
    ids = list(set(trace_ids))
    if not ids:
        return {}
    stmt = (
        sa.select(col(Alert.trace_id), sa.func.count())
        .where(col(Alert.trace_id).in_(ids))
        .group_by(col(Alert.trace_id))
    )
    counts = {t: int(n) for t, n in (await session.execute(stmt)).all()}
    return {t: counts.get(t, 0) for t in ids}


ERASED_EXCERPT = "[ERASED]"


async def erase_excerpts(session: AsyncSession, record_ids: Sequence[str]) -> int:
    """The excerpts of the alerts these records raised go with the records' content (an erasure, in its
    transaction): replaced with ERASED_EXCERPT. Returns how many alerts."""
    if not record_ids:
        return 0
    stmt = (
        sa.update(Alert)
        .where(col(Alert.audit_log_id).in_(list(record_ids)))
        .values(excerpt=ERASED_EXCERPT)
        .execution_options(synchronize_session=False)
    )
    return int((await session.execute(stmt)).rowcount or 0)


def has_alerts_condition(record_id: Any) -> Any:
    """SQL condition: the record with id `record_id` raised at least one alert."""
    return sa.exists().where(Alert.audit_log_id == record_id)


def alert_cursor_values(alert: Alert) -> list[Any]:
    # the alert's id, not its seq: seq is one sequence for all organisations, and its steps would tell a
    # tenant how many alerts the others raise; the id says nothing beyond the alert's own time
    return [alert.id]


async def cursor_position(session: AsyncSession, alert_id: str) -> int:
    """Where the alert a cursor names sits (its seq), in the session's organisation; BAD_USER_INPUT for an
    alert that is not there (another organisation's included)."""
    seq = (await session.exec(select(Alert.seq).where(Alert.id == alert_id))).first()
    if seq is None:
        raise BadUserInput("after is not a valid cursor", field="after")
    return int(seq)


def agent_has_open_alerts(agent_id: Any) -> Any:
    """SQL condition: the agent with id `agent_id` has at least one unresolved alert."""
    return sa.exists().where(col(Alert.agent_id) == agent_id, col(Alert.resolved_at).is_(None))
