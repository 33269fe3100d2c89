"""Seed 004: `tenantId` filters `auditLogs`, the synchronous and asynchronous exports and `metrics`."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

from exports import export_support as exports

from support import create_api_key, gql, register


async def test_tenant_id_filters_records_exports_and_metrics(client, runtime):
    account = await register(client)
    key, _ = await create_api_key(client, account)
    events = [
        {"action": "tool_use", "verb": "stripe:create_refund", "provider": "stripe", "tenantId": "ten_abc"},
        {"action": "tool_use", "verb": "stripe:create_refund", "provider": "stripe", "tenantId": "ten_abc",
         "idempotent": True},
        {"action": "tool_use", "verb": "github:open_pr", "provider": "github", "tenantId": "ten_xyz"},
        {"action": "llm_call"},
    ]  # fmt: skip
    logged = await gql(client, "LogEvents", {"input": events}, api_key=key)
    assert "errors" not in logged, logged
    ids = [r["id"] for r in logged["data"]["logEvents"]]

    listed = await gql(client, "AuditLogs", {"filter": {"tenantId": ["ten_abc"]}}, api_key=key)
    assert sorted(e["node"]["id"] for e in listed["data"]["auditLogs"]["edges"]) == sorted(ids[:2])
    both = await gql(client, "AuditLogs", {"filter": {"tenantId": ["ten_abc", "ten_xyz"]}}, api_key=key)
    assert len(both["data"]["auditLogs"]["edges"]) == 3

    response = await client.get(
        "/api/v1/audit-logs/export", params={"format": "csv", "tenantId": "ten_xyz"}, headers={"X-API-Key": key}
    )
    assert response.status_code == 200, response.text
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["id"] for r in rows] == [ids[2]]
    response = await client.get(
        "/api/v1/audit-logs/export",
        params={"format": "json", "tenantId": "ten_abc,ten_xyz"},
        headers={"X-API-Key": key},
    )
    assert len(response.json()["records"]) == 3

    job = await exports.start_export(
        client, account, dataset="AUDIT_LOGS", format="NDJSON", auditLogFilter={"tenantId": ["ten_abc"]}
    )
    await exports.run_jobs(runtime)
    done = await exports.export_job(client, account, job["id"])
    assert done["status"] == "READY" and done["rowCount"] == 2

    start = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    by_tenant = await gql(client, "Metrics", {"from": start, "groupBy": ["TENANT"]}, api_key=key)
    figures = {b["dimensions"]["tenantId"]: b for b in by_tenant["data"]["metrics"]}
    assert {t: b["count"] for t, b in figures.items()} == {None: 1, "ten_abc": 2, "ten_xyz": 1}
    assert figures["ten_abc"]["idempotent"] == 1 and figures["ten_abc"]["idempotencyHitRate"] == 0.5
    by_verb = await gql(client, "Metrics", {"from": start, "groupBy": ["VERB", "PROVIDER"]}, api_key=key)
    pairs = {(b["dimensions"]["verb"], b["dimensions"]["provider"]): b["count"] for b in by_verb["data"]["metrics"]}
    assert pairs == {(None, None): 1, ("stripe:create_refund", "stripe"): 2, ("github:open_pr", "github"): 1}
    one = await gql(client, "Metrics", {"from": start, "filter": {"tenantId": ["ten_xyz"]}}, api_key=key)
    assert [b["count"] for b in one["data"]["metrics"]] == [1]
