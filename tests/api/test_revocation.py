"""A credential that ends closes the subscriptions opened with it (4403), over a real uvicorn and WebSocket:
a revoked key (announced through Redis), an expired token (checked locally), and the periodic re-check against
PostgreSQL that catches a revocation whose announcement never came (Redis down)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import sqlalchemy as sa
import websockets

from support import GraphQLWebSocket, create_api_key, gql, register, session_token


async def _subscribed(base: str, payload: dict) -> GraphQLWebSocket:
    ws = await GraphQLWebSocket.connect(base, payload)
    assert (await ws.receive())["type"] == "connection_ack"
    await ws.subscribe("TraceSpans", {"traceId": "trace-1"})
    await asyncio.sleep(0.2)
    return ws


async def _closed_with(ws: GraphQLWebSocket, timeout: float) -> tuple[int | None, float]:
    started = time.monotonic()
    try:
        while True:
            await ws.receive(timeout)
    except websockets.ConnectionClosed as closed:
        return (closed.rcvd.code if closed.rcvd else None), time.monotonic() - started


async def test_revoking_a_key_closes_its_subscriptions(client, live_server):
    owner = await register(client)
    secret, key_id = await create_api_key(client, owner)
    other_secret, _ = await create_api_key(client, owner, name="other")
    revoked_ws = await _subscribed(live_server, {"x-api-key": secret})
    other_ws = await _subscribed(live_server, {"x-api-key": other_secret})
    result = await gql(client, "RevokeApiKey", {"id": key_id}, token=owner.token)
    assert "errors" not in result, result
    code, after = await _closed_with(revoked_ws, 5)
    assert code == 4403 and after < 3
    # the other key's subscription goes on
    record = {"input": {"action": "a", "traceId": "trace-1"}}
    assert "errors" not in await gql(client, "LogEvent", record, api_key=other_secret)
    assert (await other_ws.receive(5))["type"] == "next"
    await other_ws.close()


async def test_an_expired_token_closes_its_subscriptions(client, live_server, runtime, settings):
    owner = await register(client)
    short = await session_token(runtime, settings, owner.user_id, owner.org_id, lifetime=timedelta(seconds=2))
    ws = await _subscribed(live_server, {"authorization": f"Bearer {short.token}"})
    code, after = await _closed_with(ws, 10)
    assert code == 4403 and after < 5


async def test_the_periodic_recheck_closes_what_no_announcement_reached(client, live_server, runtime, monkeypatch):
    monkeypatch.setattr(runtime.settings, "credential_recheck_seconds", 1.0)
    owner = await register(client)
    secret, key_id = await create_api_key(client, owner)
    ws = await _subscribed(live_server, {"x-api-key": secret})
    async with runtime.db.engine.begin() as conn:  # revoked behind the API's back: nothing is announced
        await conn.execute(sa.text("UPDATE api_keys SET revoked_at = now() WHERE id = :id"), {"id": key_id})
    code, after = await _closed_with(ws, 10)
    assert code == 4403 and after < 4
