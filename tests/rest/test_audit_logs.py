"""REST /api/v1/audit-logs as seed 002 documents it: its examples verbatim (host, keys and ids aside), the batch
answer (ids in input order), agentId as a stable name, the reads, and snake_case records (seed 004)."""

from __future__ import annotations

import sqlalchemy as sa

from support import create_api_key, gql, register

QUICKSTART = {
    "action": "llm_call",
    "prompt": "Summarise the latest sales report",
    "response": "Q1 revenue was $2.4M...",
    "metadata": {"model": "gpt-4o", "tokens": 340},
}
GUARDRAIL_CHECK = {
    "action": "guardrail_check",
    "agentId": "writer-agent-1",
    "traceId": "run-1749300000000",
    "parentSpanId": "log_abc123",
    "prompt": "Draft email containing SSN: 123-45-6789",
    "response": "BLOCKED: PII detected",
    "metadata": {"rule": "pii_detection", "model": "gpt-4o", "latency_ms": 42},
}
BATCH = [
    {
        "action": "llm_start",
        "traceId": "run-1749300000000",
        "prompt": "Analyse Q1 data",
        "metadata": {"model": "gpt-4o"},
    },
    {
        "action": "tool_use",
        "traceId": "run-1749300000000",
        "parentSpanId": "log_abc123",  # the document's placeholder "<id of llm_start log>"
        "metadata": {"tool": "code_interpreter"},
    },
    {
        "action": "llm_end",
        "traceId": "run-1749300000000",
        "response": "Q1 revenue grew 18% YoY",
        "metadata": {"tokens": 820},
    },
]


async def _key(client):
    account = await register(client)
    secret, _ = await create_api_key(client, account)
    return account, {"X-API-Key": secret, "Content-Type": "application/json"}


async def test_quickstart_and_guardrail_examples_verbatim(client, runtime):
    account, headers = await _key(client)
    first = await client.post("/api/v1/audit-logs", json=QUICKSTART, headers=headers)
    assert first.status_code == 201, first.text
    assert first.json()["action"] == "llm_call" and first.json()["id"].startswith("log_")

    named = await client.post("/api/v1/audit-logs", json=GUARDRAIL_CHECK, headers=headers)
    assert named.status_code == 201, named.text
    agent_id = named.json()["agentId"]
    assert agent_id.startswith("agent_")
    again = await client.post("/api/v1/audit-logs", json=GUARDRAIL_CHECK, headers=headers)
    assert again.json()["agentId"] == agent_id  # found by its name, not registered twice
    agents = await gql(client, "{ agents { edges { node { id name } } } }", token=account.token)
    assert [e["node"] for e in agents["data"]["agents"]["edges"]] == [{"id": agent_id, "name": "writer-agent-1"}]
    # the GraphQL path resolves names the same way (one ingest entry)
    logged = await gql(
        client,
        "mutation($i: AuditLogInput!) { logEvent(input: $i) { agent { id } } }",
        {"i": {"action": "x", "agentId": "writer-agent-1"}},
        api_key=headers["X-API-Key"],
    )
    assert logged["data"]["logEvent"]["agent"]["id"] == agent_id, logged


async def test_batch_answers_ids_in_input_order_and_links_parents(client):
    _, headers = await _key(client)
    made = await client.post("/api/v1/audit-logs/batch", json=BATCH, headers=headers)
    assert made.status_code == 201, made.text
    ids = made.json()
    assert isinstance(ids, list) and len(ids) == 3 and all(i.startswith("log_") for i in ids)
    got = [(await client.get(f"/api/v1/audit-logs/{i}", headers=headers)).json()["action"] for i in ids]
    assert got == ["llm_start", "tool_use", "llm_end"]
    # the documented use: the ids as parentSpanId of later records, then the chain walks up
    child = await client.post(
        "/api/v1/audit-logs/batch",
        json=[{"action": "step", "traceId": "run-1749300000000", "parentSpanId": ids[0]}],
        headers=headers,
        params={"full": "true"},
    )
    assert child.status_code == 201 and child.json()["count"] == 1
    child_id = child.json()["records"][0]["id"]
    chain = await client.get(f"/api/v1/audit-logs/{child_id}/chain", headers=headers)
    assert [r["id"] for r in chain.json()] == [ids[0]]
    trace = await client.get("/api/v1/audit-logs/trace/run-1749300000000", headers=headers)
    assert trace.status_code == 200 and len(trace.json()) == 4
    assert (await client.get("/api/v1/audit-logs/trace/nope", headers=headers)).json()["status"] == 404


async def test_list_with_limit_offset_and_filters(client):
    _, headers = await _key(client)
    await client.post("/api/v1/audit-logs/batch", json=BATCH, headers=headers)
    await client.post("/api/v1/audit-logs", json=GUARDRAIL_CHECK, headers=headers)
    page = (await client.get("/api/v1/audit-logs", params={"limit": 2, "offset": 1}, headers=headers)).json()
    assert page["total"] == 4 and page["limit"] == 2 and page["offset"] == 1 and len(page["logs"]) == 2
    by_action = (await client.get("/api/v1/audit-logs?action=tool_use", headers=headers)).json()
    assert [r["action"] for r in by_action["logs"]] == ["tool_use"]
    by_trace = (await client.get("/api/v1/audit-logs?traceId=run-1749300000000", headers=headers)).json()
    assert by_trace["total"] == 4
    agent_id = by_trace["logs"][0]["agentId"]
    by_agent = (await client.get(f"/api/v1/audit-logs?agentId={agent_id}", headers=headers)).json()
    assert [r["action"] for r in by_agent["logs"]] == ["guardrail_check"]
    bad = await client.get("/api/v1/audit-logs?limit=0&colour=red", headers=headers)
    assert bad.status_code == 400 and "colour" in bad.json()["error"] and "limit" in bad.json()["accepted"]
    assert (await client.get("/api/v1/audit-logs?limit=5000", headers=headers)).status_code == 400
    assert (await client.get("/api/v1/audit-logs?status=ERROR", headers=headers)).json()["total"] == 0
    assert (await client.get("/api/v1/audit-logs")).json()["status"] == 401


async def test_snake_case_records_as_the_runtime_writes_them(client, runtime):
    _, headers = await _key(client)
    record = {
        "action": "tool_call",
        "execution_id": "exec-1",
        "risk_level": "high",
        "governance_status": "approved",
        "dry_run": False,
        "idempotent": True,
        "duration_ms": 12.5,
        "tenant_id": "t-1",
        "timestamp": "2026-01-15T10:00:00Z",
        "credential_masked": False,
    }
    made = await client.post("/api/v1/audit-logs", json=record, headers=headers)
    assert made.status_code == 201, made.text
    body = made.json()
    assert (body["executionId"], body["riskLevel"], body["governanceStatus"]) == ("exec-1", "HIGH", "approved")
    assert (body["dryRun"], body["idempotent"], body["durationMs"], body["tenantId"]) == (False, True, 12.5, "t-1")
    assert body["occurredAt"].startswith("2026-01-15T10:00:00")
    batch = await client.post("/api/v1/audit-logs/batch", json=[record, record], headers=headers)
    assert batch.status_code == 201 and len(batch.json()) == 2
    both = await client.post("/api/v1/audit-logs", json={**record, "riskLevel": "LOW"}, headers=headers)
    assert both.status_code == 400
    async with runtime.db.engine.connect() as conn:
        count = (await conn.execute(sa.text("SELECT count(*) FROM audit_logs"))).scalar_one()
    assert count == 3
