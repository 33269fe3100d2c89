"""Seed 003 (an operations platform's audit export): GET /api/v1/audit/export?format&from&to&action&user&namespace
with its JSON envelope and CSV (header, file name); above 10,000 records its 202 job body and the download route,
made by the export job machinery (a real arq worker). Its curl example runs verbatim but for host and token."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

from exports.export_support import run_jobs

from support import create_api_key, register, rest_error

# the document's CSV header
CSV_HEADER = "id,timestamp,action,user,role,resource,resourceType,namespace,sourceIP,checksum"
RECORD_KEYS = CSV_HEADER.split(",")


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _trail(client, account) -> None:
    made = await client.post("/api/v1/agents", json={"name": "runbook-disk-cleanup"}, headers=_auth(account.token))
    assert made.status_code == 201, made.text
    await client.patch(f"/api/v1/agents/{made.json()['id']}", json={"description": "x"}, headers=_auth(account.token))


async def test_curl_example_envelope_and_csv(client):
    owner = await register(client, email="admin@empresa.example")
    other = await register(client)
    await _trail(client, owner)
    await _trail(client, other)

    # curl --request GET --url http://{host}:{port}/{basePath}/audit/export --header 'Authorization: <api-key>'
    # (the document's security section: `Authorization: Bearer <token>`)
    answer = await client.get("/api/v1/audit/export", headers=_auth(owner.token))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert list(body) == ["apiVersion", "kind", "metadata", "records"]
    assert body["apiVersion"] == "v1" and body["kind"] == "AuditExport"
    metadata = body["metadata"]
    assert list(metadata) == ["exportedAt", "from", "to", "totalRecords", "format"]
    assert metadata["format"] == "json" and metadata["from"] is None and metadata["to"] == metadata["exportedAt"]
    assert metadata["totalRecords"] == len(body["records"]) == 3  # organization.created, agent.created, agent.updated
    for record in body["records"]:
        assert list(record) == RECORD_KEYS
        assert record["user"] == "admin@empresa.example" and record["role"] == "owner"
        assert record["namespace"] is None and record["checksum"].startswith("sha256:")
    created = next(r for r in body["records"] if r["action"] == "agent.created")
    assert created["resource"] == "runbook-disk-cleanup" and created["resourceType"] == "agent"
    assert created["timestamp"].endswith("Z") and created["sourceIP"]

    csv_answer = await client.get("/api/v1/audit/export?format=csv", headers=_auth(owner.token))
    assert csv_answer.headers["content-type"].startswith("text/csv")
    today = datetime.now(UTC).strftime("%Y%m%d")
    assert csv_answer.headers["content-disposition"] == f'attachment; filename="audit-export-{today}.csv"'
    rows = list(csv.reader(io.StringIO(csv_answer.text)))
    assert csv_answer.text.startswith(
        "id,timestamp,action,user,role,resource,resourceType,namespace,sourceIP,checksum\r\n"
    )
    assert {row[0] for row in rows[1:]} == {r["id"] for r in body["records"]}


async def test_filters_and_rejections(client):
    owner = await register(client)
    key, _ = await create_api_key(client, owner)
    await _trail(client, owner)

    async def actions(**filters: str) -> list[str]:
        answer = await client.get("/api/v1/audit/export", params=filters, headers=_auth(owner.token))
        assert answer.status_code == 200, answer.text
        return sorted(r["action"] for r in answer.json()["records"])

    assert await actions(action="agent.created") == ["agent.created"]
    assert await actions(action="agent.*") == ["agent.created", "agent.updated"]
    everything = ["agent.created", "agent.updated", "api_key.created", "organization.created"]
    assert await actions(user=owner.email.upper()) == everything and await actions(user="nobody@x.example") == []
    assert await actions(user=owner.user_id) == everything
    assert await actions(**{"from": "2026-03-01T00:00:00Z", "to": "2026-03-19T16:00:00Z"}) == []
    window = await client.get(
        "/api/v1/audit/export", params={"from": "2026-03-01T00:00:00Z"}, headers=_auth(owner.token)
    )
    assert window.json()["metadata"]["from"] == "2026-03-01T00:00:00.000Z"

    namespace = rest_error(
        await client.get("/api/v1/audit/export?namespace=production", headers=_auth(owner.token)), 400
    )
    assert "namespaces" in namespace["error"]
    assert (
        "json, csv"
        in rest_error(await client.get("/api/v1/audit/export?format=xml", headers=_auth(owner.token)), 400)["error"]
    )
    rest_error(await client.get("/api/v1/audit/export?from=March", headers=_auth(owner.token)), 400)
    rest_error(await client.get("/api/v1/audit/export?limit=5", headers=_auth(owner.token)), 400)
    rest_error(await client.get("/api/v1/audit/export", headers={"Authorization": owner.token}), 401)  # no scheme
    rest_error(await client.get("/api/v1/audit/export"), 401)
    rest_error(await client.get("/api/v1/audit/export", headers=_auth(key)), 403)  # the trail is for people


async def test_large_export_is_a_job_with_its_download_route(client, runtime, settings, monkeypatch):
    owner = await register(client)
    other = await register(client)
    await _trail(client, owner)
    monkeypatch.setattr(settings, "export_sync_max_rows", 2)  # stands for 10,000

    accepted = await client.get("/api/v1/audit/export", headers=_auth(owner.token))
    assert accepted.status_code == 202, accepted.text
    job = accepted.json()
    assert list(job) == ["apiVersion", "kind", "metadata", "status"]
    assert job["apiVersion"] == "v1" and job["kind"] == "AuditExportJob"
    job_id = job["metadata"]["jobId"]
    assert job_id.startswith("exp_") and list(job["metadata"]) == ["jobId"]
    status = job["status"]
    assert list(status) == ["state", "estimatedRecords", "downloadUrl", "expiresAt"]
    assert status["state"] == "processing" and status["estimatedRecords"] == 3
    assert status["downloadUrl"] == f"/api/v1/audit/export/download/{job_id}" and status["expiresAt"].endswith("Z")

    waiting = await client.get(status["downloadUrl"], headers=_auth(owner.token))
    assert waiting.status_code == 202 and waiting.json()["status"]["state"] == "processing"
    rest_error(await client.get(status["downloadUrl"], headers=_auth(other.token)), 404)  # not theirs

    await run_jobs(runtime)
    done = await client.get(status["downloadUrl"], headers=_auth(owner.token))
    assert done.status_code == 200, done.text
    assert 'filename="audit-export-' in done.headers["content-disposition"]
    body = done.json()
    assert body["apiVersion"] == "v1" and body["kind"] == "AuditExport"
    assert list(body["metadata"]) == ["exportedAt", "from", "to", "totalRecords", "format"]
    # the file is a snapshot taken when the job ran: it holds the export's own start too
    assert body["metadata"]["totalRecords"] == 4 and all(list(r) == RECORD_KEYS for r in body["records"])
    assert "export.started" in {r["action"] for r in body["records"]}
    rest_error(await client.get(status["downloadUrl"], headers=_auth(other.token)), 404)
    rest_error(await client.get("/api/v1/audit/export/download/exp_nope", headers=_auth(owner.token)), 404)
    # the job is one of the organisation's exports (GraphQL exportJob / the generic status route)
    generic = await client.get(f"/api/v1/exports/{job_id}", headers=_auth(owner.token))
    assert generic.json()["dataset"] == "OPERATIONS_AUDIT" and generic.json()["status"] == "READY"
