"""Hostile input that used to be a 500 or INTERNAL: each is a clear 4xx / BAD_USER_INPUT / close 4400, logged once
at most and never with the payload, and nothing is written."""

from __future__ import annotations

import json
import logging

import pytest
import sqlalchemy as sa
import websockets

from support import create_api_key, error_code, register

NUL_RECORDS = [
    {"action": "a\x00b"},
    {"action": "a", "verb": "v\x00"},
    {"action": "a", "idempotencyKey": "k\x00"},
    {"action": "a", "executionId": "e\x00"},
    {"action": "a", "metadata": {"k\x00": 1}},
    {"action": "a", "metadata": {"k": ["x\x00"]}},
]
LOG_EVENT = "mutation($i: AuditLogInput!) { logEvent(input: $i) { id } }"
SEARCH = "query($s: String) { auditLogs(filter: {search: $s}, first: 5) { edges { node { id } } } }"


async def _count(runtime) -> int:
    async with runtime.db.engine.connect() as conn:
        return int((await conn.execute(sa.text("SELECT count(*) FROM audit_logs"))).scalar_one())


@pytest.fixture
async def key(client):
    account = await register(client)
    secret, _ = await create_api_key(client, account)
    return secret


def _no_payload_logged(caplog, marker: str) -> None:
    assert all(marker not in r.getMessage() and marker not in str(r.__dict__) for r in caplog.records)


async def test_nul_characters_are_bad_input_on_rest_and_graphql(client, runtime, key):
    headers = {"X-API-Key": key}
    for record in NUL_RECORDS:
        rest = await client.post("/api/v1/audit-logs", json=record, headers=headers)
        assert rest.status_code == 400, (record, rest.text)
        assert rest.json()["code"] == "BAD_USER_INPUT"
        batch = await client.post("/api/v1/audit-logs/batch", json={"records": [record]}, headers=headers)
        assert batch.status_code == 400, (record, batch.text)
        graphql = await client.post("/graphql", json={"query": LOG_EVENT, "variables": {"i": record}}, headers=headers)
        assert graphql.status_code in (200, 400), graphql.text
        assert error_code(graphql.json()) == "BAD_USER_INPUT", (record, graphql.text)
    # a NUL spelled as a GraphQL escape inside the document
    literal = await client.post(
        "/graphql", json={"query": 'mutation { logEvent(input: {action: "a\\u0000"}) { id } }'}, headers=headers
    )
    assert error_code(literal.json()) == "BAD_USER_INPUT", literal.text
    # and in a search
    search = await client.post("/graphql", json={"query": SEARCH, "variables": {"s": "a\x00"}}, headers=headers)
    assert error_code(search.json()) == "BAD_USER_INPUT", search.text
    assert await _count(runtime) == 0


async def test_bodies_that_are_not_utf8_or_nest_too_deep_are_bad_input(client, runtime, key):
    headers = {"X-API-Key": key, "content-type": "application/json"}
    not_utf8 = await client.post("/graphql", content=b'{"query": "{ me { __typename } }\xff\xfe"}', headers=headers)
    assert not_utf8.status_code == 400, not_utf8.text
    assert error_code(not_utf8.json()) == "BAD_USER_INPUT"
    rest = await client.post("/api/v1/audit-logs", content=b'{"action": "\xff"}', headers=headers)
    assert rest.status_code == 400 and rest.json()["code"] == "BAD_USER_INPUT"
    deep = b"[" * 100_000 + b"]" * 100_000
    graphql = await client.post(
        "/graphql", content=b'{"query": "{ me { __typename } }", "variables": {"x": ' + deep + b"}}", headers=headers
    )
    assert graphql.status_code == 400 and error_code(graphql.json()) == "BAD_USER_INPUT", graphql.text[:300]
    rest = await client.post(
        "/api/v1/audit-logs", content=b'{"action": "a", "metadata": {"x": ' + deep + b"}}", headers=headers
    )
    assert rest.status_code == 400 and rest.json()["code"] == "BAD_USER_INPUT", rest.text[:300]
    assert await _count(runtime) == 0


async def test_a_huge_search_is_refused_quickly_and_not_logged(client, key, caplog):
    marker = "needle" + "x" * 32
    huge = (marker + " ") * (9_000_000 // (len(marker) + 1))
    with caplog.at_level(logging.INFO):
        result = await client.post(
            "/graphql", json={"query": SEARCH, "variables": {"s": huge}}, headers={"X-API-Key": key}
        )
    assert error_code(result.json()) == "BAD_USER_INPUT", result.text[:300]
    assert marker not in result.text
    _no_payload_logged(caplog, marker)


# with a streaming Accept they are served (tests/api/test_http_subscriptions.py)
@pytest.mark.parametrize("accept", [None, "application/json"])
@pytest.mark.parametrize("authenticated", [False, True])
async def test_subscriptions_over_plain_http_are_a_clear_4xx(client, key, caplog, accept, authenticated):
    headers = {"X-API-Key": key} if authenticated else {}
    if accept:
        headers["accept"] = accept
    document = "subscription { alerts { id } }"
    with caplog.at_level(logging.ERROR):
        for response in (
            await client.post("/graphql", json={"query": document}, headers=headers),
            await client.get("/graphql", params={"query": document}, headers=headers),
        ):
            assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
            assert error_code(response.json()) == "BAD_USER_INPUT", response.text[:300]
            message = response.json()["errors"][0]["message"]
            assert "WebSocket" in message and "text/event-stream" in message
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_query_that_is_not_a_string_is_bad_input_without_internals(client, key):
    for body in ({"query": 123}, {"query": ["x"]}, {"query": "{ me { __typename } }", "variables": [1]}, [1, 2], "s"):
        response = await client.post("/graphql", json=body, headers={"X-API-Key": key})
        assert response.status_code == 400, (body, response.text)
        payload = response.json()
        assert error_code(payload) == "BAD_USER_INPUT", payload
        message = payload["errors"][0]["message"]
        for internal in ("Traceback", "<class", "NoneType", "'int' object", "strawberry", "graphql."):
            assert internal not in message, message


@pytest.mark.parametrize("message", ["[1,2]", '"s"', "42", "null", "true"])
async def test_websocket_messages_that_are_not_objects_close_4400(client, live_server, key, caplog, message):
    with caplog.at_level(logging.INFO):
        async with websockets.connect(f"ws://{live_server}/graphql", subprotocols=["graphql-transport-ws"]) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": {"x-api-key": key}}))
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            await ws.send(message)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_websocket_message_with_nul_closes_4400(client, live_server, key):
    async with websockets.connect(f"ws://{live_server}/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {"x-api-key": key}}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": "subscription { alerts { id } }", "variables": {"x": "\x00"}},
                }
            )
        )
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400
