"""CSV and JSON lines built by PostgreSQL against a reference written cell by cell with the csv module, on
hostile input; the activity trail's lines too."""

from __future__ import annotations

import csv
import io
import json
import random
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from export_support import export_job, fetch_link, run_jobs, start_export

from app.audit import service as audit
from app.db import iso, scoped_text
from app.exports.datasets import AUDIT_HEADER
from app.pagination import PageRequest
from support import register

ALPHABET = "ab,\"\r\n=+-@\t 'x1ü€😀\\\b\f\v\x01"


def _csv_cell(value) -> str:
    """The reference for one cell: text a spreadsheet would run as a formula gets a leading apostrophe."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    return "'" + text if text.startswith(("=", "+", "-", "@", "\t", "\r")) else text


def _reference_csv(header, rows) -> bytes:
    """The csv module's minimal quoting and CRLF, cell by cell: what PostgreSQL's CSV lines must equal."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([_csv_cell(v) for v in row])
    return buffer.getvalue().encode()


async def _insert(runtime, statement: str, rows: list[dict]) -> None:
    """Rows written as they are (hostile text included), past the API's own checks."""
    async with runtime.db.engine.begin() as conn:
        await conn.execute(sa.text(statement), rows)


def _reference_audit_row(r, as_text: dict) -> list:
    """The CSV row of one record, cell by cell: durationMs and metadata as PostgreSQL writes them as text
    (`300`, `{"k": [1, 2]}`), every cell through the reference writer."""
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
        iso(r.erased_at) if r.erased_at else None,
        r.erasure_id,
    ]


async def test_audit_csv_formatted_by_postgresql_matches_the_reference_on_hostile_text(client, runtime):
    """Text cells are guarded and quoted in SQL: compare byte for byte with the reference writer."""
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
                "chain": len(rows) + 1,
            }
        )
    await _insert(
        runtime,
        "INSERT INTO audit_logs (id, org_id, trace_id, span_id, parent_span_id, action, status, verb, provider,"
        " risk_level, governance_status, duration_ms, prompt, response, metadata, occurred_at, received_at,"
        " credential_masked, checksum, chain_index, content_hash, entry_hash) VALUES (:id, :org, :trace, :span,"
        " :parent, :action, :status, :verb, :provider, :risk, :governance, :duration, :prompt, :response,"
        " CAST(:metadata AS jsonb), :at, :at, false, :checksum, :chain, '\\x00', '\\x00')",
        rows,
    )
    async with runtime.db.tenant_session(account.org_id) as session:
        records = await audit.list_records(session, audit.AuditLogQuery(), page=PageRequest(1000))
        as_text = {
            row.id: (row.duration, row.metadata)
            for row in await session.execute(
                scoped_text(
                    "SELECT id, duration_ms::text AS duration, metadata::text AS metadata FROM audit_logs"
                    " WHERE org_id = :org"
                ),
                {"org": account.org_id},
            )
        }
    expected = _reference_csv(AUDIT_HEADER, [_reference_audit_row(r, as_text) for r in records])
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


async def test_activity_lines_built_by_postgresql_match_the_reference(client, runtime):
    account = await register(client)
    rng = random.Random(11)

    def text(low: int, high: int) -> str | None:
        return None if rng.random() < 0.2 else "".join(rng.choice(ALPHABET) for _ in range(rng.randint(low, high)))

    rows = [
        {
            "id": f"act_hostile_{n:04d}",
            "org": account.org_id,
            "actor_type": "user",
            "actor_id": text(1, 8),
            "actor_name": text(0, 10),
            "actor_email": text(0, 10),
            "action": (text(1, 10) or "x.y")[:80],
            "target_type": text(0, 8),
            "target_id": text(0, 8),
            "target_name": text(0, 10),
            "metadata": json.dumps(rng.choice([{}, {"k": [1, 'a,"b'], "n": None, "ü": "=x\r\n"}, {"big": 2**70}])),
            "at": datetime(2026, 1, 1, tzinfo=UTC) + timedelta(microseconds=rng.randint(0, 10**12)),
            "ip": text(0, 8),
            "agent": text(0, 8),
            "checksum": text(0, 12),
            "chain": 1000 + n,  # past the registration's own events
        }
        for n in range(200)
    ]
    await _insert(
        runtime,
        "INSERT INTO activity_events (id, org_id, actor_type, actor_id, actor_name, actor_email, action,"
        " target_type, target_id, target_name, metadata, occurred_at, source_ip, user_agent, checksum, chain_index,"
        " content_hash, entry_hash) VALUES (:id, :org, :actor_type, :actor_id, :actor_name, :actor_email, :action,"
        " :target_type, :target_id, :target_name, CAST(:metadata AS jsonb), :at, :ip, :agent, :checksum, :chain,"
        " '\\x00', '\\x00')",
        rows,
    )
    async with runtime.db.engine.begin() as conn:
        stored = {
            r.id: r
            for r in await conn.execute(
                sa.text("SELECT *, metadata::text AS metadata_text FROM activity_events WHERE org_id = :o"),
                {"o": account.org_id},
            )
        }
    newest_first = sorted(stored.values(), key=lambda r: (r.occurred_at, r.id), reverse=True)
    header = ["id", "orgId", "actor", "action", "targetType", "targetId", "metadata", "occurredAt", "sourceIp"]
    expected = _reference_csv(
        [*header, "checksum"],
        [
            [
                r.id,
                r.org_id,
                r.actor_email or r.actor_name or r.actor_id,
                r.action,
                r.target_type,
                r.target_id,
                r.metadata_text,
                iso(r.occurred_at),
                r.source_ip,
                r.checksum,
            ]
            for r in newest_first
        ],
    )
    headers = {"Authorization": f"Bearer {account.token}"}
    assert (await client.get("/api/v1/activity/export", headers=headers)).content == expected
    records = (await client.get("/api/v1/activity/export", params={"format": "json"}, headers=headers)).json()
    assert [r["id"] for r in records["records"]] == [r.id for r in newest_first]
    for record in records["records"]:
        row = stored[record["id"]]
        assert record == {
            "id": row.id,
            "orgId": row.org_id,
            "actor": {"type": row.actor_type, "id": row.actor_id, "name": row.actor_name, "email": row.actor_email},
            "action": row.action,
            "targetType": row.target_type,
            "targetId": row.target_id,
            "targetName": row.target_name,
            "metadata": row.metadata,
            "occurredAt": iso(row.occurred_at),
            "sourceIp": row.source_ip,
            "userAgent": row.user_agent,
            "checksum": row.checksum,
        }
