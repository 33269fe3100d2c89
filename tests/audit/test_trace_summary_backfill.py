"""Migration 0015 backfills the trace summaries (audit_traces) of a database that already holds records: on a
database of its own, migrated to 0014, records written, then upgraded to 0015."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from app.db import to_async_url
from app.runtime import migrations

_ORG = "INSERT INTO organizations (id, name, created_at) VALUES ('org_backfill', 'Backfill', now())"
_SEED = """
INSERT INTO audit_logs (id, org_id, trace_id, span_id, parent_span_id, action, metadata, occurred_at, received_at,
    duration_ms, status, credential_masked, checksum)
SELECT 'log_' || i, 'org_backfill', 'trace-' || (i % 7), 'span-' || i, CASE WHEN i >= 7 THEN 'span-' || (i - 7) END,
    'step', '{}', timestamptz '2026-01-01Z' + i * interval '1 second', now(), i * 10.0,
    CASE WHEN i = 3 THEN 'error' WHEN i = 5 THEN 'blocked' ELSE 'ok' END, false, 'sha256:x'
FROM generate_series(0, 199) AS i
"""
_AGGREGATE = """
SELECT org_id, trace_id, count(*), min(occurred_at),
    max(occurred_at + make_interval(secs => coalesce(duration_ms, 0) / 1000.0)),
    count(*) FILTER (WHERE status = 'error'), count(*) FILTER (WHERE status = 'blocked'),
    array_remove(array_agg(DISTINCT agent_id), NULL)
FROM audit_logs GROUP BY org_id, trace_id ORDER BY org_id, trace_id
"""
_KEPT = """SELECT org_id, trace_id, span_count, started_at, ended_at, error_count, blocked_count, agent_ids
FROM audit_traces ORDER BY org_id, trace_id"""


async def _run(url: str, *statements: str) -> list[list[tuple]]:
    """Runs each statement; the rows of each SELECT."""
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    out: list[list[tuple]] = []
    try:
        async with engine.connect() as conn:
            for statement in statements:
                result = await conn.execute(sa.text(statement))
                out.append([tuple(r) for r in result.all()] if statement.lstrip().startswith("SELECT") else [])
    finally:
        await engine.dispose()
    return out


async def test_0015_backfills_the_summaries_of_stored_records(database_url):
    admin = make_url(to_async_url(database_url))
    name = f"{admin.database}_backfill"
    url = admin.set(database=name).render_as_string(hide_password=False)
    admin_url = admin.render_as_string(hide_password=False)
    await _run(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')
    try:
        await migrations.upgrade(url, "0014")
        await _run(url, _ORG, _SEED)
        await migrations.upgrade(url, "0015")
        [kept, aggregated] = await _run(url, _KEPT, _AGGREGATE)
        assert kept == aggregated and len(kept) == 7
        by_trace = {row[1]: row for row in kept}
        assert by_trace["trace-3"][2:3] + by_trace["trace-3"][5:7] == (29, 1, 0)  # 29 spans, span 3 errored
        assert by_trace["trace-5"][5:7] == (0, 1)
    finally:
        await _run(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
