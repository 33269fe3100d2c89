"""Ingest over GraphQL and REST: round trips, limits, idempotency, masking, tenancy."""

from __future__ import annotations

import sqlalchemy as sa

from support import create_api_key, error_code, gql, register


async def _count(runtime, table: str = "audit_logs") -> int:
    async with runtime.db.engine.connect() as conn:
        return int((await conn.execute(sa.text(f"SELECT count(*) FROM {table}"))).scalar_one())


async def _agent(client, account, name="support-bot") -> str:
    result = await gql(client, "CreateAgent", {"input": {"name": name}}, token=account.token)
    assert "errors" not in result, result
    return result["data"]["createAgent"]["id"]


FULL = {
    "action": "tool_use",
    "prompt": "Refund order 1234 — ünïcødé ✓",
    "response": "Refund issued",
    "traceId": "trace-1",
    "spanId": "span-1",
    "parentSpanId": "span-0",
    "metadata": {"tokens": 812, "nested": {"list": [1, 2, {"deep": True}]}},
    "occurredAt": "2026-11-20T10:00:00.123Z",
    "durationMs": 42.5,
    "status": "BLOCKED",
    "idempotencyKey": "idem-1",
    "executionId": "exec-9",
    "verb": "stripe:create_refund",
    "provider": "stripe",
    "riskLevel": "HIGH",
    "governanceStatus": "pending",
    "dryRun": True,
    "idempotent": False,
    "args": {"amount": 1200, "currency": "eur"},
    "result": ["ok", 1],
    "tenantId": "customer-7",
}


async def test_every_field_round_trips(client, runtime):
    account = await register(client)
    secret, _ = await create_api_key(client, account)
    agent_id = await _agent(client, account)
    created = await gql(client, "LogEvent", {"input": {**FULL, "agentId": agent_id}}, api_key=secret)
    assert "errors" not in created, created
    record = created["data"]["logEvent"]
    for key, value in FULL.items():
        expected = value.lower() if key == "status" else value
        if key == "status":
            assert record[key] == "BLOCKED"
            continue
        assert record[key] == expected, key
    assert record["agentId"] == agent_id
    assert record["credentialMasked"] is False
    assert record["checksum"].startswith("sha256:") and len(record["checksum"]) == 71
    assert record["id"].startswith("log_")

    read = await gql(client, "AuditLog", {"id": record["id"]}, token=account.token)
    log = read["data"]["auditLog"]
    assert {k: log[k] for k in record} == record
    assert log["agent"]["id"] == agent_id and log["agent"]["isDeleted"] is False
    assert log["parent"] is None  # span-0 has not arrived
    assert log["trace"] == {"traceId": "trace-1", "spanCount": 1}


async def test_defaults_and_own_trace(client):
    account = await register(client)
    created = await gql(client, "LogEvent", {"input": {"action": "llm_call"}}, token=account.token)
    record = created["data"]["logEvent"]
    assert record["traceId"] == record["id"] == record["spanId"]
    assert record["status"] == "OK" and record["metadata"] == {}
    trace = await gql(client, "TraceFlat", {"traceId": record["traceId"]}, token=account.token)
    assert trace["data"]["trace"]["spanCount"] == 1


async def test_batch_keeps_input_order_and_uses_one_transaction(client, runtime):
    account = await register(client)
    secret, _ = await create_api_key(client, account)
    inputs = [{"action": f"step_{i}", "traceId": "t-batch", "idempotencyKey": f"k{i}"} for i in range(50)]
    result = await gql(client, "LogEvents", {"input": inputs}, api_key=secret)
    ids = [r["id"] for r in result["data"]["logEvents"]]
    assert [r["idempotencyKey"] for r in result["data"]["logEvents"]] == [f"k{i}" for i in range(50)]
    assert len(set(ids)) == 50
    assert await _count(runtime) == 50


async def test_one_bad_record_rejects_the_batch_with_every_problem(client, runtime):
    account = await register(client)
    inputs = [
        {"action": "ok"},
        {"action": ""},
        {"action": "x" * 129},
        {"action": "ok", "metadata": {"k": "v" * (256 * 1024)}},
        {"action": "ok", "traceId": "has spaces"},
        {"action": "ok", "governanceStatus": "Not A Word!"},
        {"action": "ok", "durationMs": -1},
    ]
    result = await gql(client, "LogEvents", {"input": inputs}, token=account.token)
    assert error_code(result) == "BAD_USER_INPUT"
    problems = result["errors"][0]["extensions"]["problems"]
    assert {(p["index"], p["field"]) for p in problems} == {
        (1, "action"),
        (2, "action"),
        (3, "metadata"),
        (4, "traceId"),
        (5, "governanceStatus"),
        (6, "durationMs"),
    }
    assert await _count(runtime) == 0


async def test_limits(client, runtime, settings):
    account = await register(client)
    secret, _ = await create_api_key(client, account)
    too_many = [{"action": "a"}] * (settings.max_batch_records + 1)
    result = await gql(client, "LogEvents", {"input": too_many}, api_key=secret)
    assert error_code(result) == "BAD_USER_INPUT"
    assert "at most 1000" in result["errors"][0]["message"]

    huge_prompt = {"action": "a", "prompt": "x" * (1024 * 1024 + 1)}
    result = await gql(client, "LogEvent", {"input": huge_prompt}, api_key=secret)
    assert result["errors"][0]["extensions"]["problems"][0]["field"] == "prompt"

    deep: dict = {}
    cursor = deep
    for _ in range(40):
        cursor["d"] = {}
        cursor = cursor["d"]
    result = await gql(client, "LogEvent", {"input": {"action": "a", "args": deep}}, api_key=secret)
    assert result["errors"][0]["extensions"]["problems"][0]["field"] == "args"

    not_object = await gql(client, "LogEvent", {"input": {"action": "a", "metadata": [1, 2]}}, api_key=secret)
    assert not_object["errors"][0]["extensions"]["problems"][0]["field"] == "metadata"

    future = await gql(
        client, "LogEvent", {"input": {"action": "a", "occurredAt": "2999-01-01T00:00:00Z"}}, api_key=secret
    )
    assert error_code(future) == "BAD_USER_INPUT"
    assert await _count(runtime) == 0


async def test_unknown_deleted_and_foreign_agents_are_rejected(client, runtime):
    alice = await register(client, org="Alice")
    mallory = await register(client, org="Mallory")
    alice_agent = await _agent(client, alice)
    deleted = await _agent(client, mallory, "gone")
    await gql(client, "DeleteAgent", {"id": deleted}, token=mallory.token)
    for agent_id in ("agent_unknown", alice_agent, deleted):
        result = await gql(client, "LogEvent", {"input": {"action": "a", "agentId": agent_id}}, token=mallory.token)
        assert error_code(result) == "BAD_USER_INPUT", agent_id
    assert await _count(runtime) == 0


async def test_idempotency_key_returns_the_first_record(client, runtime):
    account = await register(client)
    first = await gql(client, "LogEvent", {"input": {"action": "a", "idempotencyKey": "once"}}, token=account.token)
    again = await gql(client, "LogEvent", {"input": {"action": "b", "idempotencyKey": "once"}}, token=account.token)
    assert again["data"]["logEvent"]["id"] == first["data"]["logEvent"]["id"]
    assert again["data"]["logEvent"]["action"] == "a"
    batch = await gql(
        client,
        "LogEvents",
        {
            "input": [
                {"action": "c", "idempotencyKey": "once"},
                {"action": "d", "idempotencyKey": "new"},
                {"action": "e", "idempotencyKey": "new"},
            ]
        },
        token=account.token,
    )
    ids = [r["id"] for r in batch["data"]["logEvents"]]
    assert ids[0] == first["data"]["logEvent"]["id"] and ids[1] == ids[2]
    assert await _count(runtime) == 2
    # the same key in another organisation is another record
    other = await register(client, org="Other")
    theirs = await gql(client, "LogEvent", {"input": {"action": "a", "idempotencyKey": "once"}}, token=other.token)
    assert theirs["data"]["logEvent"]["id"] != first["data"]["logEvent"]["id"]


async def test_secrets_are_masked_before_writing(client, runtime):
    account = await register(client)
    openai_key = "sk-proj-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7cDe0f"
    stripe_key = "sk_live_" + "51HxYzAbCdEfGhIjKlMnOpQr"
    aws_key = "AKIA" + "IOSFODNN7EXAMPLE"
    our_key = "aa_live_" + "x" * 43
    bearer = "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJlLXZhbHVl"
    payload = {
        "action": "llm_call",
        "prompt": f"use {openai_key} and {stripe_key} please",
        "response": f"Authorization: {bearer}",
        "metadata": {"password": "hunter2hunter2", "nested": {"api_key": our_key, "note": f"aws {aws_key}"}},
        "args": {"headers": {"Authorization": bearer}, "tokens": 12},
    }
    result = await gql(client, "LogEvent", {"input": payload}, token=account.token)
    record = result["data"]["logEvent"]
    assert record["credentialMasked"] is True
    assert "[REDACTED]" in record["prompt"] and record["prompt"].startswith("use ")
    assert record["metadata"]["password"] == "[REDACTED]"
    assert record["args"]["tokens"] == 12
    async with runtime.db.engine.connect() as conn:
        row = (await conn.execute(sa.text("SELECT prompt, response, metadata::text, args::text FROM audit_logs"))).one()
    stored = " ".join(str(v) for v in row)
    for secret in (openai_key, stripe_key, aws_key, our_key, "hunter2hunter2", "c2lnbmF0dXJlLXZhbHVl"):
        assert secret not in stored, secret


async def test_rest_ingest(client, runtime):
    account = await register(client)
    secret, _ = await create_api_key(client, account)
    single = await client.post("/api/v1/audit-logs", json=FULL, headers={"X-API-Key": secret})
    assert single.status_code == 201, single.text
    body = single.json()
    assert body["action"] == "tool_use" and body["occurredAt"] == "2026-11-20T10:00:00.123Z"
    assert body["checksum"].startswith("sha256:")

    batch = await client.post(
        "/api/v1/audit-logs/batch",
        json=[{"action": f"a{i}"} for i in range(3)],
        headers={"X-API-Key": secret},
        params={"full": "true"},  # the records (by default, their ids in input order)
    )
    assert batch.status_code == 201
    assert [r["action"] for r in batch.json()["records"]] == ["a0", "a1", "a2"]
    wrapped = await client.post(
        "/api/v1/audit-logs/batch", json={"records": [{"action": "w"}]}, headers={"X-API-Key": secret}
    )
    assert wrapped.status_code == 201
    assert await _count(runtime) == 5


async def test_rest_rejections(client, runtime, settings):
    account = await register(client)
    secret, key_id = await create_api_key(client, account)
    cases = [
        ({}, {"action": "a"}, 401),
        ({"X-API-Key": "aa_live_nope"}, {"action": "a"}, 401),
        ({"X-API-Key": secret}, {"nope": 1}, 400),
        ({"X-API-Key": secret}, [1, 2], 400),
    ]
    for headers, body, status in cases:
        response = await client.post("/api/v1/audit-logs", json=body, headers=headers)
        assert response.status_code == status, (body, response.text)
        assert response.json()["status"] == status
        assert response.json()["error"]
    bad_json = await client.post(
        "/api/v1/audit-logs",
        content=b"{not json",
        headers={"X-API-Key": secret, "content-type": "application/json"},
    )
    assert bad_json.status_code == 400
    too_many = await client.post(
        "/api/v1/audit-logs/batch",
        json=[{"action": "a"}] * (settings.max_batch_records + 1),
        headers={"X-API-Key": secret},
    )
    assert too_many.status_code == 413
    bad_batch = await client.post(
        "/api/v1/audit-logs/batch", json=[{"action": "a"}, {"action": 5}], headers={"X-API-Key": secret}
    )
    assert bad_batch.status_code == 400
    assert bad_batch.json()["problems"] == [
        {"index": 1, "field": "action", "message": "is required (1–128 characters)"}
    ]
    await gql(client, "RevokeApiKey", {"id": key_id}, token=account.token)
    revoked = await client.post("/api/v1/audit-logs", json={"action": "a"}, headers={"X-API-Key": secret})
    assert revoked.status_code == 401
    assert await _count(runtime) == 0


async def test_another_organisations_records_are_invisible(client):
    alice = await register(client, org="Alice")
    mallory = await register(client, org="Mallory")
    parent = await gql(
        client, "LogEvent", {"input": {"action": "root", "traceId": "shared-trace", "spanId": "p"}}, token=alice.token
    )
    log_id = parent["data"]["logEvent"]["id"]
    assert (await gql(client, "AuditLog", {"id": log_id}, token=mallory.token))["data"]["auditLog"] is None
    assert (await gql(client, "TraceTree", {"traceId": "shared-trace"}, token=mallory.token))["data"]["trace"] is None
    listed = await gql(client, "AuditLogs", {}, token=mallory.token)
    assert listed["data"]["auditLogs"]["edges"] == []
    assert (await gql(client, "Traces", {}, token=mallory.token))["data"]["traces"]["edges"] == []
    # Mallory's span naming Alice's span as parent stays a root in Mallory's own trace
    child = await gql(
        client,
        "LogEvent",
        {"input": {"action": "child", "traceId": "shared-trace", "parentSpanId": "p"}},
        token=mallory.token,
    )
    child_id = child["data"]["logEvent"]["id"]
    read = await gql(client, "AuditLog", {"id": child_id}, token=mallory.token)
    assert read["data"]["auditLog"]["parent"] is None and read["data"]["auditLog"]["chain"] == []
    tree = await gql(client, "TraceTree", {"traceId": "shared-trace"}, token=mallory.token)
    assert [s["id"] for s in tree["data"]["trace"]["rootSpans"]] == [child_id]
    alice_tree = await gql(client, "TraceTree", {"traceId": "shared-trace"}, token=alice.token)
    assert alice_tree["data"]["trace"]["spanCount"] == 1
    assert alice_tree["data"]["trace"]["rootSpans"][0]["children"] == []
