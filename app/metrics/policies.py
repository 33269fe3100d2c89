"""Policy analytics: records evaluated, violations, rates and breakdowns, computed with GROUP BY in SQL
(through the metrics and alerts services), never by loading records into Python."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY

from app.alerts.analytics import alert_breakdown
from app.db import AsyncSession, scoped_text
from app.errors import BadUserInput
from app.metrics import service as metrics
from app.policies import service as policies

MAX_WINDOW = timedelta(days=400)
DEFAULT_WINDOW = timedelta(days=30)


@dataclass
class Analytics:
    occurred_from: datetime
    occurred_to: datetime
    records_evaluated: int
    violations: int
    records_with_violations: int
    blocked: int
    by_rule: list[tuple[str, str, int]]
    by_severity: dict[str, int]
    by_agent: dict[str | None, int]
    by_version: list[tuple[str | None, int | None, int]]
    daily: list[tuple[date, int, int]]  # day, records, violations

    @property
    def violation_rate(self) -> float:
        return self.records_with_violations / self.records_evaluated if self.records_evaluated else 0.0

    @property
    def block_rate(self) -> float:
        return self.blocked / self.records_evaluated if self.records_evaluated else 0.0


def window(occurred_from: datetime | None, occurred_to: datetime | None) -> tuple[datetime, datetime]:
    end = occurred_to or datetime.now(UTC)
    start = occurred_from or end - DEFAULT_WINDOW
    if start >= end:
        raise BadUserInput("from must be before to", field="from")
    if end - start > MAX_WINDOW:
        raise BadUserInput("the window can span at most 400 days", field="from")
    return start, end


async def _record_counts(
    session: AsyncSession, start: datetime, end: datetime, agent_ids: list[str] | None
) -> tuple[int, int, dict[date, int], dict[str | None, int]]:
    """Records evaluated, blocked, per day and per agent — from the hourly metrics rollups (plus their live
    tail), one query instead of a scan of every record in the window."""
    if agent_ids is not None and not agent_ids:
        return 0, 0, {}, {}
    query = metrics.MetricsQuery(
        start=start, end=end, group_by=["day", "agent", "governance_status"], agent_ids=agent_ids
    )
    total = blocked = 0
    by_day: dict[date, int] = {}
    by_agent: dict[str | None, int] = {}
    for row in await metrics.metrics(session, query):
        total += row.count
        if row.governance_status == "blocked":
            blocked += row.count
        day = row.start.astimezone(UTC).date()
        by_day[day] = by_day.get(day, 0) + row.count
        by_agent[row.agent_id] = by_agent.get(row.agent_id, 0) + row.count
    return total, blocked, by_day, by_agent


# The records a policy evaluated: those its agents sent while it was attached to them (by arrival, which is
# when ingest checked them), occurring in the window. A (policy, agent) pair has one interval open at a time,
# so the intervals never overlap and no record is counted twice.
_EVALUATED = scoped_text(
    """
    SELECT (date_trunc('day', a.occurred_at AT TIME ZONE 'UTC'))::date AS day, a.agent_id, count(*)::bigint,
           count(*) FILTER (WHERE a.governance_status = 'blocked')::bigint
    FROM unnest(CAST(:agent_ids AS text[]), CAST(:attached AS timestamptz[]), CAST(:detached AS timestamptz[]))
        AS i(agent_id, attached_at, detached_at)
    JOIN audit_logs a ON a.org_id = :org AND a.agent_id = i.agent_id
        AND a.occurred_at >= :start AND a.occurred_at < :end
        AND a.received_at >= i.attached_at AND (i.detached_at IS NULL OR a.received_at < i.detached_at)
    GROUP BY 1, 2
    """
).bindparams(
    sa.bindparam("agent_ids", type_=ARRAY(sa.Text)),
    sa.bindparam("attached", type_=ARRAY(sa.DateTime(timezone=True))),
    sa.bindparam("detached", type_=ARRAY(sa.DateTime(timezone=True))),
)


async def _evaluated_counts(
    session: AsyncSession, policy_id: str, start: datetime, end: datetime
) -> tuple[int, int, dict[date, int], dict[str | None, int]]:
    """Like `_record_counts`, for what one policy evaluated: its attachment intervals, not today's agents."""
    intervals = await policies.attachment_intervals(session, policy_id)
    if not intervals:
        return 0, 0, {}, {}
    params = {
        "agent_ids": [i.agent_id for i in intervals],
        "attached": [i.attached_at for i in intervals],
        "detached": [i.detached_at for i in intervals],
        "start": start,
        "end": end,
    }
    total = blocked = 0
    by_day: dict[date, int] = {}
    by_agent: dict[str | None, int] = {}
    for day, agent_id, count, blocked_count in (await session.execute(_EVALUATED, params)).all():
        total += count
        blocked += blocked_count
        by_day[day] = by_day.get(day, 0) + count
        by_agent[agent_id] = by_agent.get(agent_id, 0) + count
    return total, blocked, by_day, by_agent


async def analytics(
    session: AsyncSession,
    *,
    occurred_from: datetime | None,
    occurred_to: datetime | None,
    policy_id: str | None = None,
) -> Analytics:
    """Organisation-wide (every record), or for one policy: the records it evaluated (those its agents sent
    while it was attached to them), and its alerts."""
    start, end = window(occurred_from, occurred_to)
    if policy_id is not None:
        await policies.get_policy(session, policy_id)
        records = await _evaluated_counts(session, policy_id, start, end)
    else:
        records = await _record_counts(session, start, end, None)
    alerts = await alert_breakdown(session, created_from=start, created_to=end, policy_id=policy_id)
    days: list[date] = []
    day = start.astimezone(UTC).date()
    while day <= (end - timedelta(microseconds=1)).astimezone(UTC).date():
        days.append(day)
        day += timedelta(days=1)
    return Analytics(
        occurred_from=start,
        occurred_to=end,
        records_evaluated=records[0],
        violations=alerts.total,
        records_with_violations=alerts.records_with_alerts,
        blocked=records[1],
        by_rule=sorted(alerts.by_rule, key=lambda r: -r[2]),
        by_severity=alerts.by_severity,
        by_agent=alerts.by_agent,
        by_version=alerts.by_version,
        daily=[(d, records[2].get(d, 0), alerts.by_day.get(d, 0)) for d in days],
    )
