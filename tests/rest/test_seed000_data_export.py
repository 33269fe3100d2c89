"""Seed 000 (the gateway's data export page): POST /v1/audit/export (JSON, CSV), GET /v1/traces (cursor, at most
200), GET /v1/metrics, POST /v1/webhooks/test and GET /v1/webhooks (dead-lettered deliveries included). Its curl
examples run verbatim but for host and keys; each route's rejections answer the error shape and write nothing;
another organisation's data never shows."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from webhooks.receiver import Receiver

from app.db import utcnow
from app.webhooks import delivery
from app.webhooks.sender import build_client
from support import create_api_key, register, rest_error

COLUMNS = ["id", "orgId", "actor", "action", "target", "metadata", "occurredAt"]


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}", "content-type": "application/json"}


async def _trail(client, account) -> None:
    """A few dashboard mutations: an agent created and renamed, an API key."""
    made = await client.post("/api/v1/agents", json={"name": "writer"}, headers=_bearer(account.token))
    assert made.status_code == 201, made.text
    renamed = await client.patch(
        f"/api/v1/agents/{made.json()['id']}", json={"name": "editor"}, headers=_bearer(account.token)
    )
    assert renamed.status_code == 200, renamed.text


async def test_audit_export_json_and_csv_as_documented(client):
    owner = await register(client, org="Gateway Co")
    other = await register(client, org="Elsewhere")
    await _trail(client, owner)
    await _trail(client, other)

    # curl -X POST …/v1/audit/export -H 'authorization: Bearer agtx_sk_...' -H 'content-type: application/json' -d '{}'
    answer = await client.post("/v1/audit/export", headers=_bearer(owner.token), content=b"{}")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    rows = answer.json()
    assert isinstance(rows, list) and rows
    assert all(list(row) == COLUMNS for row in rows)
    assert {row["orgId"] for row in rows} == {owner.org_id}  # scoped to the calling org
    actions = [row["action"] for row in rows]
    assert "agent.created" in actions and "agent.updated" in actions and "organization.created" in actions
    updated = next(row for row in rows if row["action"] == "agent.updated")
    assert updated["target"]["type"] == "agent" and updated["target"]["name"] == "editor"
    assert updated["actor"]["email"] == owner.email
    assert updated["metadata"]["changes"]["name"] == {"from": "writer", "to": "editor"}
    assert updated["occurredAt"].endswith("Z")

    # -d '{ "format": "csv" }' > audit.csv  (browser will download attachment)
    attachment = await client.post("/v1/audit/export", headers=_bearer(owner.token), content=b'{ "format": "csv" }')
    assert attachment.status_code == 200, attachment.text
    assert attachment.headers["content-type"].startswith("text/csv")
    assert attachment.headers["content-disposition"].startswith("attachment; filename=")
    table = list(csv.reader(io.StringIO(attachment.text)))
    assert table[0] == COLUMNS
    assert len(table) - 1 == len(rows)
    by_id = {line[0]: line for line in table[1:]}
    line = by_id[updated["id"]]
    assert line[1] == owner.org_id and line[2] == owner.email and line[3] == "agent.updated"
    assert line[4] == f"agent:{updated['target']['id']}" and '"changes"' in line[5] and line[6] == updated["occurredAt"]

    # the other organisation's trail is its own
    theirs = (await client.post("/v1/audit/export", headers=_bearer(other.token), content=b"{}")).json()
    assert {row["orgId"] for row in theirs} == {other.org_id}
    assert not {row["id"] for row in theirs} & {row["id"] for row in rows}


async def test_audit_export_rejections(client):
    owner = await register(client)
    key, _ = await create_api_key(client, owner)
    rest_error(await client.post("/v1/audit/export", content=b"{}"), 401)
    # the activity trail is for people (Query.activity's declaration): an API key is refused, saying so
    refused = rest_error(await client.post("/v1/audit/export", headers=_bearer(key), content=b"{}"), 403)
    assert "sign in as a user" in refused["error"]
    bad = rest_error(await client.post("/v1/audit/export", headers=_bearer(owner.token), json={"format": "xml"}), 400)
    assert "json, csv" in bad["error"]
    unknown = rest_error(await client.post("/v1/audit/export", headers=_bearer(owner.token), json={"admin": True}), 400)
    assert unknown["accepted"] == ["format"]
    plain = {"authorization": f"Bearer {owner.token}", "content-type": "text/plain"}
    rest_error(await client.post("/v1/audit/export", headers=plain, content=b"{}"), 400)
    rest_error(await client.post("/v1/audit/export", headers=_bearer(owner.token), content=b"{"), 400)
    # any case of the format, as everywhere
    assert (
        (await client.post("/v1/audit/export", headers=_bearer(owner.token), json={"format": "CSV"}))
        .headers["content-type"]
        .startswith("text/csv")
    )


async def _ingest(client, key: str, actions: list[str]) -> list[str]:
    answer = await client.post(
        "/api/v1/audit-logs/batch",
        json=[
            {"action": a, "agentId": "support-bot", "status": "error" if i % 3 == 2 else "ok"}
            for i, a in enumerate(actions)
        ],
        headers={"X-API-Key": key},
    )
    assert answer.status_code == 201, answer.text
    return answer.json()


async def test_traces_by_cursor_as_documented(client):
    owner = await register(client)
    key, _ = await create_api_key(client, owner)
    other = await register(client)
    other_key, _ = await create_api_key(client, other)
    ids = await _ingest(client, key, ["tool.executed", "llm.call", "tool.executed", "tool.executed", "llm.call"])
    await _ingest(client, other_key, ["tool.executed"])

    # curl 'https://gateway…/v1/traces?limit=200&type=tool.executed&since=2026-05-01T00:00:00Z' \
    #   -H 'authorization: Bearer agtx_sk_...'
    answer = await client.get(
        "/v1/traces?limit=200&type=tool.executed&since=2026-05-01T00:00:00Z", headers={"authorization": f"Bearer {key}"}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"events", "nextCursor"} and body["nextCursor"] is None
    tools = [ids[0], ids[2], ids[3]]
    assert sorted(e["id"] for e in body["events"]) == sorted(tools)
    assert all(e["type"] == e["action"] == "tool.executed" for e in body["events"])

    # pass nextCursor back as ?cursor= to page
    seen: list[str] = []
    cursor = None
    while True:
        query = "/v1/traces?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = (await client.get(query, headers={"authorization": f"Bearer {owner.token}"})).json()
        seen += [e["id"] for e in page["events"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == len(set(seen))  # the other org's record never shows

    future = (await client.get("/v1/traces?since=2999-01-01T00:00:00Z", headers={"X-API-Key": key})).json()
    assert future == {"events": [], "nextCursor": None}
    assert "200" in rest_error(await client.get("/v1/traces?limit=201", headers={"X-API-Key": key}), 400)["error"]
    rest_error(await client.get("/v1/traces?cursor=nope", headers={"X-API-Key": key}), 400)
    rest_error(await client.get("/v1/traces?since=yesterday", headers={"X-API-Key": key}), 400)
    assert "class" in rest_error(await client.get("/v1/traces?class=x", headers={"X-API-Key": key}), 400)["error"]
    rest_error(await client.get("/v1/traces"), 401)


async def test_metrics_per_type_outcome_and_hour(client):
    owner = await register(client)
    key, _ = await create_api_key(client, owner)
    other = await register(client)
    other_key, _ = await create_api_key(client, other)
    await _ingest(client, key, ["tool.executed", "tool.executed", "tool.executed", "llm.call"])
    await _ingest(client, other_key, ["tool.executed"] * 5)
    since = (utcnow() - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")

    answer = await client.get(f"/v1/metrics?since={since}", headers={"authorization": f"Bearer {key}"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    counts = {(b["type"], b["outcome"]): b["count"] for b in body["buckets"]}
    assert counts == {("tool.executed", "ok"): 2, ("tool.executed", "error"): 1, ("llm.call", "ok"): 1}
    hours = {b["hour"] for b in body["buckets"]}
    assert all(h.endswith(":00:00.000Z") or h.endswith(":00:00Z") for h in hours), hours
    assert body["since"].startswith(since[:16])
    # default window: the last 24 hours
    assert (await client.get("/v1/metrics", headers={"X-API-Key": key})).json()["buckets"]
    rest_error(await client.get("/v1/metrics?since=2999-01-01T00:00:00Z", headers={"X-API-Key": key}), 400)
    rest_error(
        await client.get("/v1/metrics?since=2000-01-01T00:00:00Z", headers={"X-API-Key": key}), 400
    )  # > 400 days
    rest_error(await client.get("/v1/metrics?groupBy=agent", headers={"X-API-Key": key}), 400)


@pytest.fixture
async def receiver(settings, monkeypatch):
    monkeypatch.setattr(settings, "webhook_allow_private_targets", True)  # the receiver is on 127.0.0.1
    server = await Receiver().start()
    yield server
    await server.stop()


async def _deliver(runtime, now=None) -> None:
    client = build_client(runtime.settings)
    try:
        await delivery.deliver_due(
            runtime.db, client, settings=runtime.settings, secret_key=runtime.secret_key, now=now
        )
    finally:
        await client.aclose()


async def test_webhook_test_and_deliveries_as_documented(client, runtime, receiver):
    owner = await register(client)
    key, _ = await create_api_key(client, owner)
    other = await register(client)

    # curl -X POST …/v1/webhooks/test -H 'authorization: Bearer agtx_sk_...' -H 'content-type: application/json'
    #   -d '{ "url": "https://your-host.example.com/agentronics", "payload": { "ping": true } }'
    body = '{ "url": "https://your-host.example.com/agentronics", "payload": { "ping": true } }'.replace(
        "https://your-host.example.com", receiver.url("")
    )
    sent = await client.post("/v1/webhooks/test", headers=_bearer(key), content=body.encode())
    assert sent.status_code == 202, sent.text
    test = sent.json()
    assert test["id"].startswith("dlv_") and test["status"] == "PENDING" and test["eventType"] == "test"
    assert test["payload"]["data"] == {"ping": True} and test["url"] == receiver.url("/agentronics")
    await _deliver(runtime)
    [received] = receiver.completed_on("/agentronics")
    assert b'"ping":true' in received.body

    # failed deliveries retry up to 3 times with backoff before being dead-lettered
    receiver.plan("/down", [500, 500, 500, 500])
    down = (await client.post("/v1/webhooks/test", headers=_bearer(key), json={"url": receiver.url("/down")})).json()
    now = utcnow()
    for _ in range(4):
        await _deliver(runtime, now=now)
        now += timedelta(hours=2)
    # dead-lettered deliveries stay queryable via GET /v1/webhooks
    listed = await client.get("/v1/webhooks", headers={"authorization": f"Bearer {key}"})
    assert listed.status_code == 200, listed.text
    deliveries = {d["id"]: d for d in listed.json()["deliveries"]}
    assert deliveries[down["id"]]["status"] == "DEAD_LETTERED" and len(deliveries[down["id"]]["attempts"]) == 4
    assert deliveries[test["id"]]["status"] == "DELIVERED" and listed.json()["nextCursor"] is None
    dead = (await client.get("/v1/webhooks?status=dead_lettered", headers=_bearer(owner.token))).json()
    assert [d["id"] for d in dead["deliveries"]] == [down["id"]]
    first = (await client.get("/v1/webhooks?limit=1", headers=_bearer(owner.token))).json()
    rest = (await client.get(f"/v1/webhooks?limit=1&cursor={first['nextCursor']}", headers=_bearer(key))).json()
    assert [d["id"] for d in first["deliveries"] + rest["deliveries"]] == [down["id"], test["id"]]

    # another organisation sees none of them; rejections in the error shape, nothing scheduled
    assert (await client.get("/v1/webhooks", headers=_bearer(other.token))).json()["deliveries"] == []
    rest_error(await client.post("/v1/webhooks/test", headers=_bearer(key), json={"payload": {}}), 400)  # no url
    rest_error(await client.post("/v1/webhooks/test", headers=_bearer(key), json={"url": "ftp://x"}), 400)
    rest_error(await client.post("/v1/webhooks/test", headers=_bearer(key), json={"url": receiver.url(), "x": 1}), 400)
    rest_error(
        await client.post("/v1/webhooks/test", headers=_bearer(key), json={"url": receiver.url(), "payload": 3}), 400
    )
    rest_error(await client.get("/v1/webhooks?status=lost", headers=_bearer(key)), 400)
    read_key = await client.post(
        "/api/v1/auth/api-keys", json={"name": "reader", "scopes": ["READ"]}, headers=_bearer(owner.token)
    )
    assert read_key.status_code == 201, read_key.text  # a key without the full scope may not
    rest_error(await client.get("/v1/webhooks", headers={"X-API-Key": read_key.json()["key"]}), 403)
    assert len((await client.get("/v1/webhooks", headers=_bearer(key))).json()["deliveries"]) == 2
