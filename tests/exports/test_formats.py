"""The bulk CSV writers (Arrow columns; PostgreSQL-formatted cells) against the reference one (csv_cell and the
csv module, cell by cell), on hostile input."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from export_support import export_job, fetch_link, run_jobs, start_export

from app.audit import service as audit
from app.db import iso
from app.exports.datasets import AUDIT_HEADER
from app.exports.formats import csv_batch, csv_stream, from_iterable
from support import register

ALPHABET = "ab,\"\r\n=+-@\t 'x1ü€😀\\\b\f\v\x01"


def _value(rng: random.Random):
    kind = rng.random()
    if kind < 0.1:
        return None
    if kind < 0.15:
        return rng.choice([True, False])
    if kind < 0.25:
        return rng.choice([1.5, -3.0, 100.0, 1e16, 1e-5, 0.1 + 0.2, -0.0, 7, -12])
    if kind < 0.3:
        return rng.choice([{"k": [1, 'a,"b'], "n": None}, [], {}, ["=1"]])
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 8)))


async def _reference(rows) -> bytes:
    return b"".join([chunk async for chunk in csv_stream([], from_iterable(rows))])[2:]  # without the empty header


def test_csv_batch_writes_exactly_what_the_csv_module_writes():
    rng = random.Random(20261130)
    for _ in range(400):
        width = rng.randint(2, 7)
        rows = [tuple(_value(rng) for _ in range(width)) for _ in range(rng.randint(1, 25))]
        assert csv_batch(rows) == asyncio.run(_reference(rows)), rows
    assert csv_batch([]) == b""
    assert csv_batch([("=1+1", "-2", "@x", "\tt", "\rr", "+3", "a,b", 'q"q', "l\nl")]) == (
        b'\'=1+1,\'-2,\'@x,\'\tt,"\'\rr",\'+3,"a,b","q""q","l\nl"\r\n'
    )


def _reference_audit_row(r, as_text: dict) -> list:
    """The CSV row of one record, cell by cell: durationMs and metadata as PostgreSQL writes them as text
    (`300`, `{"k": [1, 2]}`), every cell through csv_cell and the csv module."""
    duration_text, metadata_text = as_text[r.id]
    return [
        r.id,
        iso(r.occurred_at),
        r.trace_id,
        r.parent_span_id,
        r.agent_id,
        r.action,
        r.status,
        r.verb,
        r.provider,
        r.risk_level,
        r.governance_status,
        duration_text,
        r.prompt,
        r.response,
        metadata_text,
        r.checksum,
    ]


async def test_audit_csv_formatted_by_postgresql_matches_the_reference_on_hostile_text(client, runtime):
    """Text cells are guarded and quoted in SQL: compare byte for byte with csv_cell + the csv module."""
    account = await register(client)
    rng = random.Random(7)

    def text(low: int, high: int) -> str | None:
        if rng.random() < 0.15:
            return None
        return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(low, high)))

    rows = []
    for n in range(300):
        rows.append(
            {
                "id": f"log_hostile_{n:04d}",
                "org": account.org_id,
                "trace": text(1, 10) or f"t{n}",
                "span": f"s{n}",
                "parent": text(0, 6),
                "action": text(1, 10) or "a",
                "status": (text(0, 8) or "ok")[:16],
                "verb": text(0, 8),
                "provider": text(0, 8),
                "risk": text(0, 8),
                "governance": text(0, 8),
                "duration": rng.choice([None, 1.5, -3.0, 100.0, 1e16, 1e-5, 0.30000000000000004, -0.0, 7.0]),
                "prompt": text(0, 40),
                "response": text(0, 40),
                "metadata": json.dumps(
                    rng.choice([{}, {"k": [1, 'a,"b'], "n": None, "ü": "=x\r\n"}, {"t": "\t-"}, {"big": 2**70}])
                ),
                "at": datetime(2026, 1, 1, tzinfo=UTC) + timedelta(microseconds=rng.randint(0, 10**12)),
                "checksum": text(0, 12) or "sha256:x",
            }
        )
    async with runtime.db.engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO audit_logs (id, org_id, trace_id, span_id, parent_span_id, action, status, verb, provider,"
                " risk_level, governance_status, duration_ms, prompt, response, metadata, occurred_at, received_at,"
                " credential_masked, checksum) VALUES (:id, :org, :trace, :span, :parent, :action, :status, :verb,"
                " :provider, :risk, :governance, :duration, :prompt, :response, CAST(:metadata AS jsonb), :at, :at,"
                " false, :checksum)"
            ),
            rows,
        )
    async with runtime.db.tenant_session(account.org_id) as session:
        records = await audit.list_records(session, audit.AuditLogQuery(), limit=1000, after=None)
        as_text = {
            row.id: (row.duration, row.metadata)
            for row in await session.execute(
                sa.text(
                    "SELECT id, duration_ms::text AS duration, metadata::text AS metadata FROM audit_logs"
                    " WHERE org_id = :org"
                ),
                {"org": account.org_id},
            )
        }
    reference_rows = (_reference_audit_row(r, as_text) for r in records)
    expected = b"".join([chunk async for chunk in csv_stream(AUDIT_HEADER, from_iterable(reference_rows))])
    headers = {"Authorization": f"Bearer {account.token}"}
    synchronous = await client.get("/api/v1/audit-logs/export", headers=headers)
    assert synchronous.content == expected
    job = await start_export(client, account, dataset="AUDIT_LOGS", format="CSV")
    await run_jobs(runtime)
    done = await export_job(client, account, job["id"])
    assert done["rowCount"] == 300
    assert (await fetch_link(client, done["downloadUrl"])).content == expected
    # JSON records keep every number exactly, integers beyond 64 bits included
    job = await start_export(client, account, dataset="AUDIT_LOGS", format="NDJSON")
    await run_jobs(runtime)
    lines = (await fetch_link(client, (await export_job(client, account, job["id"]))["downloadUrl"])).text.splitlines()
    by_id = {r["id"]: r for r in map(json.loads, lines)}
    for row in rows:
        assert by_id[row["id"]]["metadata"] == json.loads(row["metadata"])
        assert by_id[row["id"]]["durationMs"] == row["duration"]
    assert any(r["metadata"].get("big") == 2**70 for r in by_id.values())
