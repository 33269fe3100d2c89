"""Asynchronous exports: startExport → a real arq worker writes the file → download; every format read back."""

from __future__ import annotations

import csv
import io
import json

import pyarrow.parquet as pq
from export_support import export_job, fetch_link, run_jobs, seed_audit, start_export

from app.audit import service as audit
from app.audit.routes import record_to_json
from app.exports.datasets import AUDIT_HEADER
from support import create_api_key, gql, register

NASTY = 'comma, "quote"\nnew line ünïcødé'
FORMULAS = ['=HYPERLINK("http://evil")', "+1+2", "-3", "@SUM(A1)", "\tTAB"]


async def _log(client, account, **fields):
    result = await gql(client, "LogEvent", {"input": {"action": "llm_call", **fields}}, token=account.token)
    assert "errors" not in result, result
    return result["data"]["logEvent"]


async def _export(client, runtime, account, fmt, **input):
    job = await start_export(client, account, dataset=input.pop("dataset", "AUDIT_LOGS"), format=fmt, **input)
    assert job["status"] == "PENDING" and job["id"].startswith("exp_") and job["downloadUrl"] is None
    await run_jobs(runtime)
    done = await export_job(client, account, job["id"])
    assert done["status"] == "READY", done
    response = await fetch_link(client, done["downloadUrl"])
    assert response.status_code == 200, response.text
    assert response.headers["content-length"] == str(len(response.content)) == str(done["sizeBytes"])
    return done, response


async def test_csv_matches_the_synchronous_export_with_quoting_and_formula_guard(client, runtime):
    account = await register(client)
    await _log(client, account, prompt=NASTY, metadata={"k": [1, 2]})
    for formula in FORMULAS:
        await _log(client, account, prompt=formula, action="tool_use")
    done, response = await _export(client, runtime, account, "CSV")
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    disposition = response.headers["content-disposition"]
    assert disposition.startswith(f'attachment; filename="audit-log-{account.org_id}-') and disposition.endswith(
        '.csv"'
    )
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0] == list(AUDIT_HEADER) and len(rows) == 7 and done["rowCount"] == 6
    by_prompt = {r[12]: r for r in rows[1:]}
    assert json.loads(by_prompt[NASTY][14]) == {"k": [1, 2]}
    for formula in FORMULAS:
        assert "'" + formula in by_prompt  # formula-injection guard
    sync = await client.get("/api/v1/audit-logs/export", headers={"Authorization": f"Bearer {account.token}"})
    assert sync.content == response.content  # same columns, quoting and order as the synchronous export
    assert done["progress"] == 1.0 and done["completedAt"] and done["startedAt"] and done["expiresAt"]
    assert done["requestedBy"] == {"type": "user", "id": account.user_id, "name": "Test User", "email": account.email}


async def test_json_envelope_and_ndjson_lines(client, runtime):
    account = await register(client)
    for n in range(3):
        await _log(
            client, account, prompt=f'p{n}\n"{n}"', metadata={"n": n}, durationMs=12.25, args={"q": "ü", "n": [1, 2.5]}
        )
    done, response = await _export(client, runtime, account, "JSON", auditLogFilter={"from": "2020-01-01T00:00:00Z"})
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-disposition"].endswith('.json"')
    body = response.json()
    assert body["apiVersion"] == "agentrail/v1" and body["kind"] == "AuditExport"
    assert (
        body["metadata"]["totalRecords"] == 3 == done["rowCount"]
        and body["metadata"]["from"] == "2020-01-01T00:00:00.000Z"
    )
    assert body["metadata"]["format"] == "json" and body["metadata"]["filters"] == {"from": "2020-01-01T00:00:00.000Z"}
    assert {r["prompt"] for r in body["records"]} == {'p0\n"0"', 'p1\n"1"', 'p2\n"2"'}
    sync = (await client.get("/api/v1/audit-logs/export?format=json", headers={"X-API-Key": "x"})).status_code
    assert sync == 401
    sync_body = (
        await client.get("/api/v1/audit-logs/export?format=json", headers={"Authorization": f"Bearer {account.token}"})
    ).json()
    assert body["records"] == sync_body["records"]  # the same records, field for field

    _, response = await _export(client, runtime, account, "NDJSON")
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.headers["content-disposition"].endswith('.ndjson"')
    lines = response.content.decode().splitlines()
    assert len(lines) == 3 and [json.loads(line) for line in lines] == sync_body["records"]
    # the records PostgreSQL builds for exports are the REST API's records (ISO times with ms and `Z`, numbers)
    async with runtime.db.tenant_session(account.org_id) as session:
        for line in lines:
            record = json.loads(line)
            assert record == record_to_json(await audit.get_record(session, record["id"]))
            assert record["durationMs"] == 12.25 and record["args"] == {"q": "ü", "n": [1, 2.5]}


async def test_parquet_has_typed_columns(client, runtime):
    account = await register(client)
    await _log(client, account, prompt=NASTY, metadata={"k": [1, 2]}, durationMs=12.5)
    await seed_audit(runtime, account.org_id, 2500)
    runtime.settings.export_batch_rows, batch = 400, runtime.settings.export_batch_rows
    runtime.settings.export_parquet_row_group_rows, group = 1000, runtime.settings.export_parquet_row_group_rows
    try:
        done, response = await _export(client, runtime, account, "PARQUET")
    finally:
        runtime.settings.export_batch_rows, runtime.settings.export_parquet_row_group_rows = batch, group
    assert response.headers["content-type"] == "application/vnd.apache.parquet"
    assert response.headers["content-disposition"].endswith('.parquet"')
    parquet = pq.ParquetFile(io.BytesIO(response.content))
    assert parquet.metadata.num_rows == 2501 == done["rowCount"]
    assert parquet.metadata.num_row_groups >= 3  # written in row groups, not as one block
    schema = parquet.schema_arrow
    assert str(schema.field("occurredAt").type) == "timestamp[us, tz=UTC]"
    assert str(schema.field("durationMs").type) == "double"
    assert str(schema.field("credentialMasked").type) == "bool"
    table = parquet.read().to_pylist()
    logged = next(r for r in table if r["prompt"] == NASTY)
    assert json.loads(logged["metadata"]) == {"k": [1, 2]} and logged["durationMs"] == 12.5
    assert len({r["id"] for r in table}) == 2501


async def test_activity_export_for_users_with_its_filter(client, runtime):
    account = await register(client)
    await gql(client, "CreateAgent", {"input": {"name": "bot"}}, token=account.token)
    done, response = await _export(
        client, runtime, account, "CSV", dataset="ACTIVITY", activityFilter={"action": ["agent.*"]}
    )
    assert response.headers["content-disposition"].startswith(f'attachment; filename="activity-{account.org_id}-')
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0][:4] == ["id", "orgId", "actor", "action"]
    assert [r[3] for r in rows[1:]] == ["agent.created"]
    done, response = await _export(client, runtime, account, "NDJSON", dataset="ACTIVITY")
    actions = [json.loads(line)["action"] for line in response.content.decode().splitlines()]
    # newest first; the export's own `export.started` events are part of the trail
    assert "organization.created" in actions and "agent.created" in actions and "export.started" in actions
    done, response = await _export(client, runtime, account, "PARQUET", dataset="ACTIVITY")
    table = pq.read_table(io.BytesIO(response.content)).to_pylist()
    assert {r["action"] for r in table} == set(actions) | {"export.started"}
    # an API key may export the audit record, but not the activity trail
    secret, _ = await create_api_key(client, account)
    forbidden = await gql(client, "StartExport", {"input": {"dataset": "ACTIVITY", "format": "CSV"}}, api_key=secret)
    assert forbidden["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    job = await start_export(client, account, api_key=secret, dataset="AUDIT_LOGS", format="CSV")
    assert job["requestedBy"]["type"] == "api_key"
    # the key sees its audit-log export, never the user's activity exports (by id, in the list or by download)
    listed = await gql(client, "ExportJobs", {}, api_key=secret)
    assert [e["node"]["dataset"] for e in listed["data"]["exportJobs"]["edges"]] == ["AUDIT_LOGS"]
    hidden = await gql(client, "ExportJob", {"id": done["id"]}, api_key=secret)
    assert hidden["data"]["exportJob"] is None
    download = await client.get(f"/api/v1/exports/{done['id']}/download", headers={"X-API-Key": secret})
    assert download.status_code == 404
    mine = await client.get(
        f"/api/v1/exports/{done['id']}/download", headers={"Authorization": f"Bearer {account.token}"}
    )
    assert mine.status_code == 200 and mine.headers["content-type"] == "application/vnd.apache.parquet"


async def test_audit_filters_are_applied(client, runtime):
    account = await register(client)
    await seed_audit(runtime, account.org_id, 300, start="2026-01-01T00:00:00Z")
    done, response = await _export(
        client,
        runtime,
        account,
        "NDJSON",
        auditLogFilter={
            "action": ["llm_call"],
            "riskLevel": ["HIGH"],
            "from": "2026-01-01T00:00:00.050Z",
            "to": "2026-01-01T00:00:00.200Z",
        },
    )
    records = [json.loads(line) for line in response.content.decode().splitlines()]
    # g in [50, 200): even (llm_call) and divisible by 3 (HIGH) → multiples of 6: 54 … 198
    expected = [g for g in range(50, 200) if g % 6 == 0]
    assert len(records) == len(expected) == done["rowCount"]
    assert all(r["action"] == "llm_call" and r["riskLevel"] == "HIGH" for r in records)
    assert [r["occurredAt"] for r in records] == sorted((r["occurredAt"] for r in records), reverse=True)
