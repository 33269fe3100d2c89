"""Alert figures for analytics and reports: counts by severity, breakdowns and resolution times, each in SQL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import col

from app.alerts.models import Alert
from app.compliance.engine import SEVERITIES
from app.db import AsyncSession, within


async def alert_counts_by_severity(
    session: AsyncSession, agent_id: str, *, created_from: datetime | None, created_to: datetime | None
) -> dict[str, int]:
    conditions = [Alert.agent_id == agent_id, *within(Alert.created_at, created_from, created_to)]
    stmt = sa.select(col(Alert.severity), sa.func.count()).where(*conditions).group_by(col(Alert.severity))
    counts = {severity: int(n) for severity, n in (await session.execute(stmt)).all()}
    return {severity: counts.get(severity, 0) for severity in SEVERITIES}


@dataclass
class AlertBreakdown:
    total: int
    records_with_alerts: int
    by_rule: list[tuple[str, str, int]]  # rule id, rule name, count
    by_severity: dict[str, int]
    by_agent: dict[str | None, int]
    by_version: list[tuple[str | None, int | None, int]]  # policy id, version, count
    by_day: dict[Any, int]


async def alert_breakdown(
    session: AsyncSession,
    *,
    created_from: datetime,
    created_to: datetime,
    policy_id: str | None = None,
    agent_ids: list[str] | None = None,
) -> AlertBreakdown:
    """Alerts in a window grouped every way analytics needs, each a GROUP BY in SQL."""
    conditions = within(Alert.created_at, created_from, created_to)
    if policy_id is not None:
        conditions.append(Alert.policy_id == policy_id)
    if agent_ids is not None:
        conditions.append(col(Alert.agent_id).in_(agent_ids))

    async def grouped(*columns: Any) -> list[Any]:
        stmt = sa.select(*columns, sa.func.count()).where(*conditions).group_by(*columns)
        return list((await session.execute(stmt)).all())

    totals = (
        await session.execute(
            sa.select(sa.func.count(), sa.func.count(sa.distinct(col(Alert.audit_log_id)))).where(*conditions)
        )
    ).one()
    day = sa.func.date_trunc("day", Alert.created_at, "UTC")
    return AlertBreakdown(
        total=int(totals[0]),
        records_with_alerts=int(totals[1]),
        by_rule=[(r[0], r[1], int(r[2])) for r in await grouped(Alert.rule_id, Alert.rule_name)],
        by_severity={r[0]: int(r[1]) for r in await grouped(Alert.severity)},
        by_agent={r[0]: int(r[1]) for r in await grouped(Alert.agent_id)},
        by_version=[(r[0], r[1], int(r[2])) for r in await grouped(Alert.policy_id, Alert.policy_version)],
        by_day={r[0].date(): int(r[1]) for r in await grouped(day)},
    )


@dataclass
class AlertResolution:
    resolved: int
    open: int
    median_seconds: float | None  # of the resolved alerts: resolved_at - created_at
    p90_seconds: float | None
    by_agent: dict[str | None, tuple[int, int]]  # agent id -> (alerts, still open)


async def alert_resolution(
    session: AsyncSession, *, created_from: datetime, created_to: datetime, agent_ids: list[str] | None = None
) -> AlertResolution:
    """How the alerts raised in a window were handled: resolution-time percentiles and open counts (SQL)."""
    conditions = within(Alert.created_at, created_from, created_to)
    if agent_ids is not None:
        conditions.append(col(Alert.agent_id).in_(agent_ids))
    seconds = sa.func.extract("epoch", col(Alert.resolved_at) - col(Alert.created_at))
    is_open = col(Alert.resolved_at).is_(None)
    totals = (
        await session.execute(
            sa.select(
                sa.func.count().filter(col(Alert.resolved_at).is_not(None)),
                sa.func.count().filter(is_open),
                sa.func.percentile_cont(0.5).within_group(seconds),
                sa.func.percentile_cont(0.9).within_group(seconds),
            ).where(*conditions)
        )
    ).one()
    per_agent = await session.execute(
        sa.select(col(Alert.agent_id), sa.func.count(), sa.func.count().filter(is_open))
        .where(*conditions)
        .group_by(Alert.agent_id)
    )
    return AlertResolution(
        resolved=int(totals[0]),
        open=int(totals[1]),
        median_seconds=float(totals[2]) if totals[2] is not None else None,
        p90_seconds=float(totals[3]) if totals[3] is not None else None,
        by_agent={agent: (int(n), int(o)) for agent, n, o in per_agent.all()},
    )
