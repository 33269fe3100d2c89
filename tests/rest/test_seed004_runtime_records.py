"""Seed 004 (an agent runtime's audit trail): its execution record, exactly as the runtime writes it (snake_case,
no `action`, `credential_masked` sent), accepted by the REST ingest routes single and batch; the server decides
credentialMasked; the record is immutable; and "pull execution records by execution_id, verb, provider, tenant,
date range, or governance_status" through GET /api/v1/audit-logs."""

from __future__ import annotations

import orjson

from support import create_api_key, register, rest_error

# the document's "audit log entry", verbatim
ENTRY = b"""{
  "execution_id": "exec_9xk2p",
  "verb": "stripe:create_refund",
  "provider": "stripe",
  "risk_level": "HIGH",
  "governance_status": "approved",
  "dry_run": false,
  "idempotent": false,
  "args": {
    "amount": 50,
    "charge_id": "ch_abc123"
  },
  "result": {
    "refund_id": "re_xyz789",
    "status": "succeeded"
  },
  "duration_ms": 187,
  "tenant_id": "ten_abc",
  "credential_masked": true,
  "timestamp": "2026-04-07T14:32:01Z"
}"""


async def test_the_runtime_record_verbatim_single_and_batch(client):
    owner = await register(client)
    key, _ = await create_api_key(client, owner)
    headers = {"X-API-Key": key, "Content-Type": "application/json"}

    made = await client.post("/api/v1/audit-logs", content=ENTRY, headers=headers)
    assert made.status_code == 201, made.text
    record = made.json()
    assert record["executionId"] == "exec_9xk2p" and record["verb"] == "stripe:create_refund"
    assert record["provider"] == "stripe" and record["riskLevel"] == "HIGH" and record["governanceStatus"] == "approved"
    assert record["dryRun"] is False and record["idempotent"] is False and record["durationMs"] == 187
    assert record["args"] == {"amount": 50, "charge_id": "ch_abc123"}
    assert record["result"] == {"refund_id": "re_xyz789", "status": "succeeded"}
    assert record["tenantId"] == "ten_abc" and record["occurredAt"] == "2026-04-07T14:32:01.000Z"
    assert record["action"] == "tool_use"  # the runtime names the call by its verb
    assert record["credentialMasked"] is False  # the server decides: nothing secret was in it

    batch = await client.post("/api/v1/audit-logs/batch", content=b"[" + ENTRY + b"," + ENTRY + b"]", headers=headers)
    assert batch.status_code == 201, batch.text
    assert len(batch.json()) == 2 and all(i.startswith("log_") for i in batch.json())

    # a secret in the args is masked, and then the record says so
    secret = orjson.loads(ENTRY)
    secret["args"]["api_key"] = "sk_live_abcdefghijklmnop1234"
    masked = (await client.post("/api/v1/audit-logs", json=secret, headers=headers)).json()
    assert masked["args"]["api_key"] == "[REDACTED]" and masked["credentialMasked"] is True

    # immutable: no route edits or deletes a record
    assert (await client.delete(f"/api/v1/audit-logs/{record['id']}", headers=headers)).status_code == 405
    assert (await client.patch(f"/api/v1/audit-logs/{record['id']}", json={}, headers=headers)).status_code == 405


async def test_pull_execution_records_by_the_documented_keys(client):
    owner = await register(client)
    other = await register(client)
    key, _ = await create_api_key(client, owner)
    other_key, _ = await create_api_key(client, other)
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    first = (await client.post("/api/v1/audit-logs", content=ENTRY, headers=headers)).json()
    blocked = orjson.loads(ENTRY) | {"execution_id": "exec_2", "governance_status": "blocked", "provider": "github"}
    await client.post("/api/v1/audit-logs", json=blocked, headers=headers)
    await client.post("/api/v1/audit-logs", content=ENTRY, headers={"X-API-Key": other_key})

    async def ids(query: str) -> list[str]:
        answer = await client.get(f"/api/v1/audit-logs?{query}", headers=headers)
        assert answer.status_code == 200, answer.text
        return [log["executionId"] for log in answer.json()["logs"]]

    assert await ids("executionId=exec_9xk2p") == ["exec_9xk2p"]  # not the other organisation's
    assert await ids("verb=stripe:create_refund") == ["exec_2", "exec_9xk2p"]
    assert await ids("provider=stripe") == ["exec_9xk2p"]
    assert await ids("tenantId=ten_abc") == ["exec_2", "exec_9xk2p"]
    assert await ids("governanceStatus=BLOCKED") == ["exec_2"]
    assert await ids("from=2026-04-07T00:00:00Z&to=2026-04-08T00:00:00Z") == ["exec_2", "exec_9xk2p"]
    assert await ids("from=2026-04-08T00:00:00Z") == []
    assert first["id"]
    rest_error(await client.get("/api/v1/audit-logs?execution_id=exec_9xk2p", headers=headers), 400)
