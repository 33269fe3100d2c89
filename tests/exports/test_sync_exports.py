"""Synchronous CSV/JSON exports of the audit record and the activity trail."""

from __future__ import annotations

import csv
import io
import json

from support import create_api_key, gql, register

NASTY = 'comma, "quote"\nnew line ünïcødé'


async def _log(client, account, **fields):
    result = await gql(client, "LogEvent", {"input": {"action": "llm_call", **fields}}, token=account.token)
    assert "errors" not in result, result
    return result["data"]["logEvent"]


async def test_csv_export_quotes_and_guards(client):
    account = await register(client)
    secret, _ = await create_api_key(client, account)
    await _log(client, account, prompt=NASTY, metadata={"k": [1, 2]})
    await _log(client, account, prompt='=HYPERLINK("http://evil")', action="tool_use")
    response = await client.get("/api/v1/audit-logs/export", params={"format": "csv"}, headers={"X-API-Key": secret})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"].startswith(f'attachment; filename="audit-log-{account.org_id}-')
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == [
        "id",
        "timestamp",
        "traceId",
        "parentSpanId",
        "agentId",
        "action",
        "status",
        "verb",
        "provider",
        "riskLevel",
        "governanceStatus",
        "durationMs",
        "prompt",
        "response",
        "metadata",
        "checksum",
        "erasedAt",
        "erasureId",
    ]
    by_action = {r[5]: r for r in rows[1:]}
    assert by_action["llm_call"][12] == NASTY and json.loads(by_action["llm_call"][14]) == {"k": [1, 2]}
    assert by_action["tool_use"][12].startswith("'=HYPERLINK")  # formula-injection guard
    filtered = await client.get(
        "/api/v1/audit-logs/export", params={"action": "tool_use"}, headers={"X-API-Key": secret}
    )
    assert len(list(csv.reader(io.StringIO(filtered.text)))) == 2


async def test_json_envelope_and_limits(client, settings, monkeypatch):
    account = await register(client)
    for n in range(3):
        await _log(client, account, prompt=f"p{n}")
    response = await client.get(
        "/api/v1/audit-logs/export", params={"format": "json"}, headers={"Authorization": f"Bearer {account.token}"}
    )
    body = response.json()
    assert body["apiVersion"] == "agentrail/v1" and body["kind"] == "AuditExport"
    assert body["metadata"]["totalRecords"] == 3 and len(body["records"]) == 3
    assert {r["prompt"] for r in body["records"]} == {"p0", "p1", "p2"}
    monkeypatch.setattr(settings, "export_sync_max_rows", 2)
    too_many = await client.get(
        "/api/v1/audit-logs/export", params={"format": "json"}, headers={"Authorization": f"Bearer {account.token}"}
    )
    assert too_many.status_code == 202, too_many.text
    job = too_many.json()
    assert job["id"].startswith("exp_") and job["status"] == "PENDING" and job["format"] == "JSON"
    assert job["dataset"] == "AUDIT_LOGS" and job["downloadUrl"] is None
    assert too_many.headers["location"] == job["links"]["self"] == f"/api/v1/exports/{job['id']}"
    assert job["links"]["download"] == f"/api/v1/exports/{job['id']}/download"
    monkeypatch.setattr(settings, "export_sync_max_rows", 3)
    exact = await client.get("/api/v1/audit-logs/export", headers={"Authorization": f"Bearer {account.token}"})
    assert exact.status_code == 200
    bad = await client.get(
        "/api/v1/audit-logs/export", params={"format": "xml"}, headers={"Authorization": f"Bearer {account.token}"}
    )
    assert bad.status_code == 400
    assert (await client.get("/api/v1/audit-logs/export")).status_code == 401


async def test_exports_are_tenant_scoped_and_activity_is_for_users(client):
    alice = await register(client, org="Alice")
    mallory = await register(client, org="Mallory")
    await _log(client, alice, prompt="alice's secret plan")
    theirs = await client.get(
        "/api/v1/audit-logs/export", params={"format": "json"}, headers={"Authorization": f"Bearer {mallory.token}"}
    )
    assert theirs.json()["records"] == []
    activity = await client.get(
        "/api/v1/activity/export", params={"format": "csv"}, headers={"Authorization": f"Bearer {alice.token}"}
    )
    rows = list(csv.reader(io.StringIO(activity.text)))
    assert rows[0][:4] == ["id", "orgId", "actor", "action"] and rows[1][3] == "organization.created"
    secret, _ = await create_api_key(client, alice)
    assert (await client.get("/api/v1/activity/export", headers={"X-API-Key": secret})).status_code == 403


async def test_above_the_limit_the_export_runs_as_a_job(client, runtime):
    """10,000 rows stream at once; 10,001 answer 202 with a job that a real worker completes."""
    from export_support import fetch_link, run_jobs, seed_audit

    assert runtime.settings.export_sync_max_rows == 10_000
    account = await register(client)
    headers = {"Authorization": f"Bearer {account.token}"}
    await seed_audit(runtime, account.org_id, 10_000)
    streamed = await client.get("/api/v1/audit-logs/export", headers=headers)
    assert streamed.status_code == 200
    assert len(list(csv.reader(io.StringIO(streamed.text)))) == 10_001  # header + 10,000 rows
    await seed_audit(runtime, account.org_id, 1, start="2026-02-01T00:00:00Z")
    accepted = await client.get("/api/v1/audit-logs/export", headers=headers)
    assert accepted.status_code == 202
    job = accepted.json()
    assert job["format"] == "CSV" and "10001 rows match" in job["message"]
    pending = await client.get(job["links"]["self"], headers=headers)
    assert pending.status_code == 200 and pending.json()["status"] == "PENDING"
    await run_jobs(runtime)
    ready = (await client.get(job["links"]["self"], headers=headers)).json()
    assert ready["status"] == "READY" and ready["rowCount"] == 10_001
    by_owner = await client.get(job["links"]["download"], headers=headers)
    by_link = await fetch_link(client, ready["downloadUrl"])
    assert by_owner.content == by_link.content
    rows = list(csv.reader(io.StringIO(by_link.text)))
    assert len(rows) == 10_002 and rows[0] == next(csv.reader(io.StringIO(streamed.text)))
    assert len({r[0] for r in rows[1:]}) == 10_001
    # the activity trail too (a small limit), and the job is on the trail
    runtime.settings.export_sync_max_rows = 1
    try:
        activity = await client.get("/api/v1/activity/export", params={"format": "json"}, headers=headers)
    finally:
        runtime.settings.export_sync_max_rows = 10_000
    assert activity.status_code == 202 and activity.json()["dataset"] == "ACTIVITY"
    trail = (await client.get("/api/v1/activity/export", headers=headers)).text
    assert trail.count("export.started") == 2


async def test_every_filter_reaches_the_streamed_export(client, runtime):
    """Lists, times, full-text search and the alert condition all pass through the COPY path's SQL."""
    from app.audit import search

    account = await register(client)
    bot = (await gql(client, "CreateAgent", {"input": {"name": "bot"}}, token=account.token))["data"]["createAgent"]
    await _log(client, account, prompt="quarterly revenue forecast", agentId=bot["id"], status="ERROR")
    await _log(client, account, prompt="quarterly revenue forecast", status="OK", action="tool_use")
    await _log(client, account, prompt="lunch menu", agentId=bot["id"], status="ERROR")
    await search.drain_pending(runtime.db, runtime.redis, account.org_id)
    headers = {"Authorization": f"Bearer {account.token}"}
    params = {
        "format": "json",
        "search": "revenue",
        "agentId": f"{bot['id']},agt_unknown",
        "status": "error,blocked",
        "action": "llm_call",
        "from": "2020-01-01T00:00:00Z",
        "to": "2999-01-01T00:00:00Z",
        "hasAlerts": "false",
    }
    body = (await client.get("/api/v1/audit-logs/export", params=params, headers=headers)).json()
    assert [r["prompt"] for r in body["records"]] == ["quarterly revenue forecast"]
    assert body["records"][0]["agentId"] == bot["id"] and body["metadata"]["totalRecords"] == 1
    csv_rows = (await client.get("/api/v1/audit-logs/export", params={**params, "format": "csv"}, headers=headers)).text
    assert len(list(csv.reader(io.StringIO(csv_rows)))) == 2
    none = await client.get("/api/v1/audit-logs/export", params={**params, "hasAlerts": "true"}, headers=headers)
    assert none.json()["records"] == []
