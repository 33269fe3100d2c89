"""graphql-transport-ws on a real uvicorn: authentication in connection_init."""

from __future__ import annotations

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
