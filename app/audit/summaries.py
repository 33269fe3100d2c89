"""Trace summaries (`audit_traces`), kept in the ingest transaction: one statement per batch adds the records
written now to their traces' rows, so that listing the newest traces never aggregates the spans.

The aggregate is computed by PostgreSQL from the same values that are stored (`_SUMMARISE` and the migration's
backfill use the same expressions), so a summary equals the aggregate over its trace's records. Traces are
upserted in trace id order: two batches that share traces lock their rows in the same order (no deadlock), and
a batch holds those row locks only from this statement to its commit (the quota update comes after it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.db import AsyncSession, scoped_text

# the aggregate as the migration that backfilled the table computes it (0015_audit_traces.py)
_SUMMARISE = scoped_text(
    """
    WITH src AS (
        SELECT * FROM unnest(
            CAST(:trace_id AS text[]), CAST(:occurred_at AS timestamptz[]), CAST(:duration_ms AS float8[]),
            CAST(:status AS text[]), CAST(:agent_id AS text[])
        ) AS r(trace_id, occurred_at, duration_ms, status, agent_id)
    ), summary AS (
        SELECT trace_id, count(*) AS span_count, min(occurred_at) AS started_at,
            max(occurred_at + make_interval(secs => coalesce(duration_ms, 0) / 1000.0)) AS ended_at,
            count(*) FILTER (WHERE status = 'error') AS error_count,
            count(*) FILTER (WHERE status = 'blocked') AS blocked_count,
            array_remove(array_agg(DISTINCT agent_id), NULL) AS agent_ids
        FROM src GROUP BY trace_id
    )
    INSERT INTO audit_traces AS t (
        org_id, trace_id, span_count, started_at, ended_at, error_count, blocked_count, agent_ids)
    SELECT :org, trace_id, span_count, started_at, ended_at, error_count, blocked_count, agent_ids
    FROM summary ORDER BY trace_id
    ON CONFLICT (org_id, trace_id) DO UPDATE SET
        span_count = t.span_count + EXCLUDED.span_count,
        started_at = least(t.started_at, EXCLUDED.started_at),
        ended_at = greatest(t.ended_at, EXCLUDED.ended_at),
        error_count = t.error_count + EXCLUDED.error_count,
        blocked_count = t.blocked_count + EXCLUDED.blocked_count,
        agent_ids = CASE WHEN EXCLUDED.agent_ids <@ t.agent_ids THEN t.agent_ids ELSE ARRAY(
            SELECT DISTINCT a FROM unnest(t.agent_ids || EXCLUDED.agent_ids) AS a ORDER BY a) END
    """
)


async def add_records(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Adds the records written now (rows as inserted: trace_id, occurred_at, duration_ms, status, agent_id) to
    their traces' summaries, in the caller's transaction."""
    if not rows:
        return
    params: dict[str, Any] = {
        name: [row[name] for row in rows] for name in ("trace_id", "occurred_at", "duration_ms", "status", "agent_id")
    }
    await session.execute(_SUMMARISE, params)


# a trace's summary from the records still stored (retention removed some of its spans): the same aggregate
_RECOMPUTE = scoped_text(
    """
    WITH gone AS (
        DELETE FROM audit_traces WHERE org_id = :org AND trace_id = ANY(CAST(:traces AS text[])) RETURNING trace_id
    )
    INSERT INTO audit_traces (org_id, trace_id, span_count, started_at, ended_at, error_count, blocked_count, agent_ids)
    SELECT :org, trace_id, count(*), min(occurred_at),
        max(occurred_at + make_interval(secs => coalesce(duration_ms, 0) / 1000.0)),
        count(*) FILTER (WHERE status = 'error'), count(*) FILTER (WHERE status = 'blocked'),
        array_remove(array_agg(DISTINCT agent_id ORDER BY agent_id), NULL)
    FROM audit_logs
    WHERE org_id = :org AND trace_id IN (SELECT trace_id FROM gone)
    GROUP BY trace_id ORDER BY trace_id
    """
)


async def recompute(session: AsyncSession, trace_ids: Sequence[str]) -> None:
    """Summarises these traces afresh from their remaining records (a trace left without any loses its row)."""
    if trace_ids:
        await session.execute(_RECOMPUTE, {"traces": list(trace_ids)})
