"""Policy analytics: records evaluated, violations, rates and breakdowns, computed with GROUP BY in SQL
(through the metrics and alerts services), never by loading records into Python."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from app.alerts.analytics import alert_breakdown
from app.db import AsyncSession
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


async def analytics(
    session: AsyncSession,
    *,
    occurred_from: datetime | None,
    occurred_to: datetime | None,
    policy_id: str | None = None,
) -> Analytics:
    """Organisation-wide, or for one policy: the records of the agents it is attached to, and its alerts."""
    start, end = window(occurred_from, occurred_to)
    agent_ids = None
    if policy_id is not None:
        await policies.get_policy(session, policy_id)
        agent_ids = (await policies.agents_of(session, [policy_id]))[policy_id]
    records = await _record_counts(session, start, end, agent_ids)
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
