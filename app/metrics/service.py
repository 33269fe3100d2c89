"""Metrics over audit records: hourly rollups kept by a worker, and queries that add the live tail.

Rollups: `rollup_organization` recomputes whole hours from the raw records, in one transaction (delete the
hours' rows, then one INSERT … SELECT … GROUP BY), so re-running an hour gives the same rows. It keeps the
invariant of `MetricRollupState`: the rollups hold exactly the records with `seq <= rolled_seq` that occurred
before `rolled_until`. Each run picks the new watermark `seq` under the ingest lock (taken exclusively, like
sealing, so every record at or below it is committed), then recomputes every hour that got a record since
the previous watermark (late records for old hours included) and every hour completed since the last run.

Queries: complete hours come from the rollups; the partial hours at the range's edges, the hours not yet
rolled up (the current one) and records that arrived after the last run are read from the raw records.
Both parts run in one statement (one snapshot), so a rollup committing meanwhile is never counted twice.

Records and alerts are read with raw SQL here (set-based, on the hot path), always filtered by `org_id`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY

from app.audit.service import INGEST_LOCK_NAMESPACE
from app.db import AsyncSession, Database, global_text, lock_organisation, scoped_text, utcnow
from app.errors import BadUserInput
from app.metrics import histogram
from app.runtime.isolation import each_organization
from app.unit_of_work import transaction

METRICS_LOCK_NAMESPACE = 0x4D455452  # "METR": one rollup run per organisation at a time
MAX_RANGE = timedelta(days=400)
HOUR = timedelta(hours=1)

DIMENSIONS = ("agent", "action", "status", "governance_status", "verb", "provider", "tenant")
TIME_GRAINS = ("hour", "day")


def _utc_hour(expr: str) -> str:
    return f"(date_trunc('hour', {expr} AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')"


def _utc_day(expr: str) -> str:
    return f"(date_trunc('day', {expr} AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')"


def floor_hour(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def ceil_hour(value: datetime) -> datetime:
    floor = floor_hour(value)
    return floor if floor == value else floor + HOUR


# --- rollups -----------------------------------------------------------------------------------
_TOKENS = "CASE WHEN jsonb_typeof(a.metadata->'tokens') = 'number' THEN (a.metadata->>'tokens')::double precision END"
_ALERTS = "(SELECT count(*) FROM alerts al WHERE al.org_id = a.org_id AND al.audit_log_id = a.id)"
_RAW_COLUMNS = f"""
    a.occurred_at, coalesce(a.agent_id, '') AS agent_id, a.action, a.status,
    coalesce(a.governance_status, '') AS governance_status, coalesce(a.verb, '') AS verb,
    coalesce(a.provider, '') AS provider, coalesce(a.tenant_id, '') AS tenant_id, a.idempotent,
    {_ALERTS} AS alerts, {_TOKENS} AS tokens, a.duration_ms, {histogram.bucket_sql("a.duration_ms")} AS bucket
"""
_HISTOGRAM_FROM_RAW = (
    "ARRAY[" + ", ".join(f"count(*) FILTER (WHERE s.bucket = {i})" for i in range(histogram.BUCKETS)) + "]"
)
_AGGREGATES_FROM_RAW = """
    count(*)::bigint AS count,
    count(*) FILTER (WHERE s.status = 'error')::bigint AS errors,
    -- blocked: by a rule (or as sent: governanceStatus "blocked"), or sent with status BLOCKED
    count(*) FILTER (WHERE s.governance_status = 'blocked' OR s.status = 'blocked')::bigint AS blocked,
    count(*) FILTER (WHERE s.idempotent)::bigint AS idempotent,
    coalesce(sum(s.alerts), 0)::bigint AS alerts,
    coalesce(sum(s.tokens), 0)::double precision AS tokens,
    count(s.duration_ms)::bigint AS duration_count,
    coalesce(sum(s.duration_ms), 0)::double precision AS duration_sum,
    min(s.duration_ms) AS duration_min,
    max(s.duration_ms) AS duration_max
"""

# S608: the SQL here is assembled from constants and whitelisted column names; values are always bound
_ROLLUP_INSERT = scoped_text(
    f"""
    INSERT INTO metric_rollups (org_id, hour, agent_id, action, status, governance_status, verb, provider,
        tenant_id, count, errors, blocked, idempotent, alerts, tokens, duration_count, duration_sum, duration_min,
        duration_max, duration_buckets)
    SELECT :org, s.hour, s.agent_id, s.action, s.status, s.governance_status, s.verb, s.provider, s.tenant_id,
        {_AGGREGATES_FROM_RAW},
        {_HISTOGRAM_FROM_RAW}::int[]
    FROM (
        SELECT {_utc_hour("a.occurred_at")} AS hour, {_RAW_COLUMNS}
        FROM audit_logs a
        WHERE a.org_id = :org AND a.seq <= :seq AND a.occurred_at >= :low AND a.occurred_at < :high
    ) s
    WHERE s.hour = ANY(:hours)
    GROUP BY s.hour, s.agent_id, s.action, s.status, s.governance_status, s.verb, s.provider, s.tenant_id
    """  # noqa: S608
).bindparams(sa.bindparam("hours", type_=ARRAY(sa.DateTime(timezone=True))))

_HOURS_TO_RECOMPUTE = scoped_text(
    f"""
    SELECT DISTINCT {_utc_hour("occurred_at")} AS hour FROM audit_logs
    WHERE org_id = :org AND seq > :old_seq AND seq <= :new_seq AND occurred_at < :until
    UNION
    SELECT DISTINCT {_utc_hour("occurred_at")} AS hour FROM audit_logs
    WHERE org_id = :org AND occurred_at >= :old_until AND occurred_at < :until AND seq <= :new_seq
    """  # noqa: S608
)


# read in a tenant session, but across organisations: seq is global, and so is its watermark
_MAX_SEQ = global_text("SELECT coalesce(max(seq), 0) FROM audit_logs")
_JIT_OFF = global_text("SET LOCAL jit = off")


@dataclass
class RollupResult:
    org_id: str
    hours: int
    rows: int
    rolled_seq: int
    rolled_until: datetime


async def orgs_to_roll_up(db: Database, *, now: datetime | None = None) -> list[str]:
    """Organisations with records since their last run, or with an hour completed since then."""
    until = floor_hour(now or utcnow())
    query = sa.text(
        """
        SELECT o.id FROM organizations o
        LEFT JOIN metric_rollup_state s ON s.org_id = o.id
        WHERE EXISTS (SELECT 1 FROM audit_logs a WHERE a.org_id = o.id AND a.seq > coalesce(s.rolled_seq, 0))
           OR (s.rolled_until IS NOT NULL AND s.rolled_until < :until)
        ORDER BY o.id
        """
    )
    async with db.system_session() as session:
        return list((await session.execute(query, {"until": until})).scalars().all())


async def rollup_organization(db: Database, org_id: str, *, now: datetime | None = None) -> RollupResult:
    """Brings the organisation's rollups up to the last completed hour. Idempotent."""
    until = floor_hour(now or utcnow())
    async with transaction(db, org_id) as session:
        # exclusive ingest lock (ingest holds it shared): every record of this organisation with seq <= max
        # is committed, and none committed later can have a smaller seq. The max is global (seq is), so the
        # watermark of an idle organisation keeps up and the late-record scan of a query stays short.
        await lock_organisation(session, INGEST_LOCK_NAMESPACE)
        new_seq = (await session.execute(_MAX_SEQ)).scalar_one()

    async with transaction(db, org_id) as session:
        await lock_organisation(session, METRICS_LOCK_NAMESPACE)
        state = (
            await session.execute(
                scoped_text("SELECT rolled_seq, rolled_until FROM metric_rollup_state WHERE org_id = :org")
            )
        ).first()
        old_seq, old_until = (state[0], state[1]) if state else (0, None)
        new_seq = max(new_seq, old_seq)  # a concurrent run may already have gone further
        if old_until is not None and old_until > until:
            until = old_until
        hours = sorted(
            (
                await session.execute(
                    _HOURS_TO_RECOMPUTE,
                    {
                        "old_seq": old_seq,
                        "new_seq": new_seq,
                        "until": until,
                        "old_until": old_until or until,
                    },
                )
            )
            .scalars()
            .all()
        )
        rows = 0
        if hours:
            await session.execute(
                scoped_text("DELETE FROM metric_rollups WHERE org_id = :org AND hour = ANY(:hours)").bindparams(
                    sa.bindparam("hours", type_=ARRAY(sa.DateTime(timezone=True)))
                ),
                {"hours": hours},
            )
            result = await session.execute(
                _ROLLUP_INSERT,
                {"seq": new_seq, "low": hours[0], "high": hours[-1] + HOUR, "hours": hours},
            )
            rows = result.rowcount
        await session.execute(
            scoped_text(
                """
                INSERT INTO metric_rollup_state (org_id, rolled_seq, rolled_until, updated_at)
                VALUES (:org, :seq, :until, now())
                ON CONFLICT (org_id) DO UPDATE
                SET rolled_seq = EXCLUDED.rolled_seq, rolled_until = EXCLUDED.rolled_until, updated_at = now()
                """
            ),
            {"seq": new_seq, "until": until},
        )
    return RollupResult(org_id=org_id, hours=len(hours), rows=rows, rolled_seq=new_seq, rolled_until=until)


async def rollup_all(db: Database, *, now: datetime | None = None) -> list[RollupResult]:
    """Every organisation due; one that fails is skipped (and retried on the next run)."""
    orgs = await orgs_to_roll_up(db, now=now)
    return await each_organization("rollup_metrics", orgs, lambda org_id: rollup_organization(db, org_id, now=now))


# --- queries -----------------------------------------------------------------------------------
@dataclass
class MetricsQuery:
    start: datetime
    end: datetime | None = None
    group_by: list[str] = field(default_factory=list)  # DIMENSIONS and at most one of TIME_GRAINS
    agent_ids: list[str] | None = None
    actions: list[str] | None = None
    statuses: list[str] | None = None
    governance_statuses: list[str] | None = None
    verbs: list[str] | None = None
    providers: list[str] | None = None
    tenant_ids: list[str] | None = None


@dataclass
class MetricRow:
    start: datetime
    agent_id: str | None
    action: str | None
    status: str | None
    governance_status: str | None
    verb: str | None = None
    provider: str | None = None
    tenant_id: str | None = None
    count: int = 0
    errors: int = 0
    blocked: int = 0
    idempotent: int = 0
    alerts: int = 0
    tokens: float = 0.0
    duration_count: int = 0
    duration_sum: float = 0.0
    duration_min: float | None = None
    duration_max: float | None = None
    buckets: list[int] = field(default_factory=lambda: [0] * histogram.BUCKETS)

    def percentile(self, q: float) -> float | None:
        return histogram.percentile(self.buckets, q, minimum=self.duration_min, maximum=self.duration_max)

    def figures(self) -> dict[str, Any]:
        """The bucket's aggregates, as GraphQL's `MetricBucket` and REST's hourly counts name them."""
        return {
            "count": self.count,
            "errors": self.errors,
            "blocked": self.blocked,
            "idempotent": self.idempotent,
            "idempotency_hit_rate": self.idempotent / self.count if self.count else 0.0,
            "governance_block_rate": self.blocked / self.count if self.count else 0.0,
            "alerts": self.alerts,
            "tokens": self.tokens,
            "duration_p50": self.percentile(0.5),
            "duration_p95": self.percentile(0.95),
        }


def validate(query: MetricsQuery, now: datetime) -> tuple[datetime, datetime]:
    start = query.start.astimezone(UTC)
    end = (query.end or now).astimezone(UTC)
    problems = []
    if end <= start:
        problems.append({"field": "to", "message": "must be after `from`"})
    elif end - start > MAX_RANGE:
        problems.append({"field": "to", "message": "the range may span at most 400 days"})
    if sum(1 for g in query.group_by if g in TIME_GRAINS) > 1:
        problems.append({"field": "groupBy", "message": "group by at most one of HOUR and DAY"})
    if problems:
        raise BadUserInput("invalid metrics range: " + "; ".join(p["message"] for p in problems), problems=problems)
    return start, end


_DIMENSION_COLUMNS = {
    "agent": "agent_id",
    "action": "action",
    "status": "status",
    "governance_status": "governance_status",
    "verb": "verb",
    "provider": "provider",
    "tenant": "tenant_id",
}


def _select_sql(query: MetricsQuery, source: str, time_column: str) -> tuple[str, str]:
    """The dimension columns selected (others NULL) and the GROUP BY list, over alias `source`."""
    if "hour" in query.group_by:
        time_expr = _utc_hour(f"{source}.{time_column}")
    elif "day" in query.group_by:
        time_expr = _utc_day(f"{source}.{time_column}")
    else:
        time_expr = "CAST(:start AS timestamptz)"
    selected = [f"{time_expr} AS t"]
    grouped = [time_expr] if query.group_by and any(g in TIME_GRAINS for g in query.group_by) else []
    for dimension, column in _DIMENSION_COLUMNS.items():
        if dimension in query.group_by:
            selected.append(f"{source}.{column} AS {column}")
            grouped.append(f"{source}.{column}")
        else:
            selected.append(f"NULL::text AS {column}")
    return ", ".join(selected), (" GROUP BY " + ", ".join(grouped)) if grouped else ""


_NULLABLE = ("agent_id", "governance_status", "verb", "provider", "tenant_id")


def _filters_sql(query: MetricsQuery, source: str, params: dict[str, Any]) -> str:
    clauses = []
    for name, column, values in (
        ("agent_ids", "agent_id", query.agent_ids),
        ("actions", "action", query.actions),
        ("statuses", "status", query.statuses),
        ("governance_statuses", "governance_status", query.governance_statuses),
        ("verbs", "verb", query.verbs),
        ("providers", "provider", query.providers),
        ("tenant_ids", "tenant_id", query.tenant_ids),
    ):
        if values is not None:
            params[name] = list(values)
            # rollups store an absent agent, governance status, verb, provider or tenant as '': the raw records agree
            expr = f"coalesce({source}.{column}, '')" if source == "a" and column in _NULLABLE else f"{source}.{column}"
            clauses.append(f"{expr} = ANY(CAST(:{name} AS text[]))")
    return "".join(f" AND {c}" for c in clauses)


_HISTOGRAM_FROM_ROLLUPS = (
    "ARRAY[" + ", ".join(f"sum(m.duration_buckets[{i + 1}])::bigint" for i in range(histogram.BUCKETS)) + "]"
)
_AGGREGATES_FROM_ROLLUPS = """
    sum(m.count)::bigint, sum(m.errors)::bigint, sum(m.blocked)::bigint, sum(m.idempotent)::bigint,
    sum(m.alerts)::bigint,
    sum(m.tokens)::double precision, sum(m.duration_count)::bigint, sum(m.duration_sum)::double precision,
    min(m.duration_min), max(m.duration_max)
"""


def _metrics_sql(query: MetricsQuery, params: dict[str, Any]) -> str:
    rollup_select, rollup_group = _select_sql(query, "m", "hour")
    raw_select, raw_group = _select_sql(query, "s", "occurred_at")
    rollup_filters = _filters_sql(query, "m", params)
    raw_filters = _filters_sql(query, "a", params)
    raw_from = f"SELECT {_RAW_COLUMNS} FROM audit_logs a WHERE a.org_id = :org{raw_filters}"  # noqa: S608
    # one statement, one snapshot: the watermark and the rollups it describes are read together
    return f"""
    WITH st AS (
        SELECT coalesce(max(rolled_seq), 0) AS seq,
               least(CAST(:b AS timestamptz), coalesce(max(rolled_until), '-infinity'::timestamptz)) AS s1
        FROM metric_rollup_state WHERE org_id = :org
    )
    SELECT {rollup_select}, {_AGGREGATES_FROM_ROLLUPS}, {_HISTOGRAM_FROM_ROLLUPS}
    FROM metric_rollups m
    WHERE m.org_id = :org AND m.hour >= :a AND m.hour < (SELECT s1 FROM st){rollup_filters}
    {rollup_group}
    UNION ALL
    SELECT {raw_select}, {_AGGREGATES_FROM_RAW}, {_HISTOGRAM_FROM_RAW}
    FROM (
        {raw_from} AND a.occurred_at >= :start AND a.occurred_at < LEAST(CAST(:end AS timestamptz), :a)
        UNION ALL
        {raw_from} AND a.occurred_at >= GREATEST(CAST(:start AS timestamptz), :a, (SELECT s1 FROM st))
            AND a.occurred_at < :end
        UNION ALL
        SELECT late.* FROM (
            -- a fence, so these few rows are read through a seq index; the upper bound only tells the
            -- planner that the range is narrow (an open `seq > x` is guessed at a third of the table)
            {raw_from} AND a.seq BETWEEN (SELECT seq FROM st) + 1 AND {2**63 - 1} OFFSET 0
        ) late WHERE late.occurred_at >= :a AND late.occurred_at < (SELECT s1 FROM st)
    ) s
    {raw_group}
    """  # noqa: S608


async def metrics(session: AsyncSession, query: MetricsQuery, *, now: datetime | None = None) -> list[MetricRow]:
    """Buckets of the session's organisation, ordered by start then dimensions."""
    start, end = validate(query, now or utcnow())
    params: dict[str, Any] = {
        "start": start,
        "end": end,
        "a": ceil_hour(start),
        "b": floor_hour(end),
    }
    sql = _metrics_sql(query, params)
    # JIT compilation costs more than this statement runs; planners' guesses on big tables can trigger it
    await session.execute(_JIT_OFF)
    merged: dict[tuple[Any, ...], MetricRow] = {}
    for row in (await session.execute(scoped_text(sql), params)).all():
        (t, agent_id, action, status, gov, verb, provider, tenant_id, count, errors, blocked, idempotent, alerts) = row[
            :13
        ]
        tokens, d_count, d_sum, d_min, d_max, b = row[13:]
        if not count:
            continue  # an aggregate without GROUP BY over no rows
        key = (t, agent_id, action, status, gov, verb, provider, tenant_id)
        target = merged.get(key)
        if target is None:
            target = merged[key] = MetricRow(
                start=t,
                agent_id=agent_id or None,
                action=action,
                status=status,
                governance_status=gov or None,
                verb=verb or None,
                provider=provider or None,
                tenant_id=tenant_id or None,
            )
        target.count += count
        target.errors += errors
        target.blocked += blocked
        target.idempotent += idempotent
        target.alerts += alerts
        target.tokens += tokens or 0.0
        target.duration_count += d_count
        target.duration_sum += d_sum or 0.0
        if d_min is not None:
            target.duration_min = d_min if target.duration_min is None else min(target.duration_min, d_min)
        if d_max is not None:
            target.duration_max = d_max if target.duration_max is None else max(target.duration_max, d_max)
        target.buckets = [x + y for x, y in zip(target.buckets, b, strict=True)]
    return sorted(
        merged.values(),
        key=lambda r: (
            r.start,
            r.agent_id or "",
            r.action or "",
            r.status or "",
            r.governance_status or "",
            r.verb or "",
            r.provider or "",
            r.tenant_id or "",
        ),
    )
