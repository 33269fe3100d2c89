"""Policy analytics: records evaluated, violations, rates and breakdowns, computed with GROUP BY in SQL
(through the audit and compliance services), never by loading records into Python."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from app.audit import service as audit
from app.compliance import service as compliance
from app.db import AsyncSession
from app.errors import BadUserInput
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
    records = await audit.record_counts(session, occurred_from=start, occurred_to=end, agent_ids=agent_ids)
    alerts = await compliance.alert_breakdown(session, created_from=start, created_to=end, policy_id=policy_id)
    days: list[date] = []
    day = start.astimezone(UTC).date()
    while day <= (end - timedelta(microseconds=1)).astimezone(UTC).date():
        days.append(day)
        day += timedelta(days=1)
    return Analytics(
        occurred_from=start,
        occurred_to=end,
        records_evaluated=records.total,
        violations=alerts.total,
        records_with_violations=alerts.records_with_alerts,
        blocked=records.blocked,
        by_rule=sorted(alerts.by_rule, key=lambda r: -r[2]),
        by_severity=alerts.by_severity,
        by_agent=alerts.by_agent,
        by_version=alerts.by_version,
        daily=[(d, records.by_day.get(d, 0), alerts.by_day.get(d, 0)) for d in days],
    )
