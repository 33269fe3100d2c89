"""graphql-transport-ws on a real uvicorn: authentication in connection_init."""

from __future__ import annotations

import json

import pytest
import websockets

from support import GraphQLWebSocket, create_api_key, register


async def test_operations_over_websocket_with_a_token_and_a_key(client, live_server):
    account = await register(client)
    secret, _ = await create_api_key(client, account)
    for payload, kind in (
        ({"authorization": f"Bearer {account.token}"}, "USER"),
        ({"x-api-key": secret}, "API_KEY"),
    ):
        ws = await GraphQLWebSocket.connect(live_server, payload)
        assert (await ws.receive())["type"] == "connection_ack"
        op = await ws.subscribe("query { me { kind organization { id } } }")
        message = await ws.receive()
        assert message == {
            "id": op,
            "type": "next",
            "payload": {"data": {"me": {"kind": kind, "organization": {"id": account.org_id}}}},
        }
        assert (await ws.receive())["type"] == "complete"
        await ws.close()


async def test_bad_credentials_close_the_connection(client, live_server):
    for payload in ({"authorization": "Bearer not-a-token"}, {"x-api-key": "aa_live_unknown"}):
        ws = await GraphQLWebSocket.connect(live_server, payload)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.receive()
        assert closed.value.rcvd.code == 4403


async def test_the_server_pings_acknowledged_connections(client, live_server, app, monkeypatch):
    handler_class = app.state.graphql.graphql_transport_ws_handler_class
    monkeypatch.setattr(handler_class, "ping_interval", 0.2)
    account = await register(client)
    ws = await GraphQLWebSocket.connect(live_server, {"authorization": f"Bearer {account.token}"})
    assert (await ws.receive())["type"] == "connection_ack"
    assert await ws.receive(timeout=2, pings=True) == {"type": "ping"}
    await ws.connection.send(json.dumps({"type": "pong"}))
    assert await ws.receive(timeout=2, pings=True) == {"type": "ping"}
    # the connection still serves operations between pings
    op = await ws.subscribe("query { me { kind } }")
    messages = [await ws.receive() for _ in range(2)]
    messages = [m for m in messages if m["type"] != "ping"]
    assert messages[0] == {"id": op, "type": "next", "payload": {"data": {"me": {"kind": "USER"}}}}
    await ws.close()


async def test_a_refused_connection_init_keeps_its_message_and_code(client, live_server):
    for payload in ({"authorization": "Bearer not-a-token"}, {"x-api-key": "aa_live_unknown"}, {}):
        ws = await GraphQLWebSocket.connect(live_server, payload)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.receive()
        assert closed.value.rcvd.code == 4403
        reason = json.loads(closed.value.rcvd.reason)
        assert reason["code"] == "UNAUTHENTICATED" and reason["message"] and reason["message"] != "Forbidden"


async def test_validation_errors_over_websocket_carry_their_code(client, live_server):
    account = await register(client)
    ws = await GraphQLWebSocket.connect(live_server, {"authorization": f"Bearer {account.token}"})
    assert (await ws.receive())["type"] == "connection_ack"
    for document in (
        "subscription { alerts { noSuchField } }",
        "query { noSuchField }",
        "subscription { alerts(filter: 3) { id } }",
    ):
        op = await ws.subscribe(document)
        message = await ws.receive()
        assert message["id"] == op and message["type"] == "error", message
        assert [e["extensions"]["code"] for e in message["payload"]] == ["BAD_USER_INPUT"], message
    await ws.close()


def test_close_reasons_fit_a_close_frame():
    from app.api.websocket_protocol import MAX_CLOSE_REASON_BYTES, rejection_reason

    for message in ("short", "é" * 300, '"quoted" ' * 40):
        reason = rejection_reason({"message": message, "code": "UNAUTHENTICATED"})
        assert len(reason.encode()) <= MAX_CLOSE_REASON_BYTES
        assert json.loads(reason)["code"] == "UNAUTHENTICATED"
