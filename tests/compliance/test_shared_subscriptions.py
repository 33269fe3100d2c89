"""Identical live subscriptions share one execution per process; each subscriber still gets its own stream."""

from __future__ import annotations

import asyncio

import pytest

from support import GraphQLWebSocket, gql, register


async def _rule(client, account) -> None:
    result = await gql(client, "CreateComplianceRule", {"input": {"name": "Email", "kind": "PII",
                       "config": {"types": ["email"]}}}, token=account.token)  # fmt: skip
    assert "errors" not in result, result


async def _alert(client, account, n: int) -> str:
    result = await gql(client, "LogEvent", {"input": {"action": "llm_call", "prompt": f"mail user{n}@example.com"}},
                       token=account.token)  # fmt: skip
    return result["data"]["logEvent"]["id"]


async def _connect(base: str, account) -> GraphQLWebSocket:
    ws = await GraphQLWebSocket.connect(base, {"authorization": f"Bearer {account.token}"})
    assert (await ws.receive())["type"] == "connection_ack"
    return ws


def _handler_class(app):
    return app.state.graphql.graphql_transport_ws_handler_class


async def _wait_for(condition, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_identical_subscriptions_share_one_execution(client, app, live_server):
    shared = _handler_class(app).shared
    alice = await register(client, org="Alice")
    mallory = await register(client, org="Mallory")
    await _rule(client, alice)
    sockets = [await _connect(live_server, alice) for _ in range(10)]
    for ws in sockets:
        await ws.subscribe("LiveAlerts", {})
    second_id = await sockets[0].subscribe("LiveAlerts", {})  # same connection, another operation id
    other_org = await _connect(live_server, mallory)
    await other_org.subscribe("LiveAlerts", {})
    await _wait_for(lambda: len(shared) == 2)  # one per organisation
    await asyncio.sleep(0.2)
    try:
        log_id = await _alert(client, alice, 1)
        for ws in sockets:
            message = await ws.receive()
            assert message["type"] == "next" and message["id"] == "1", message
            assert message["payload"]["data"]["alerts"]["auditLogId"] == log_id
        extra = await sockets[0].receive()
        assert extra["id"] == second_id and extra["payload"]["data"]["alerts"]["auditLogId"] == log_id
        with pytest.raises(asyncio.TimeoutError):
            await other_org.receive(0.5)

        # members leave one by one; the rest keep receiving; the last one out stops the execution
        for ws in sockets[5:]:
            await ws.close()
        log_id = await _alert(client, alice, 2)
        for ws in sockets[1:5]:
            assert (await ws.receive())["payload"]["data"]["alerts"]["auditLogId"] == log_id
    finally:
        for ws in [*sockets[:5], other_org]:
            await ws.close()
    await _wait_for(lambda: len(shared) == 0)


async def test_messages_are_text_frames(client, live_server):
    """graphql-transport-ws clients (browsers) expect JSON in text frames, shared or not."""
    alice = await register(client, org="Alice")
    await _rule(client, alice)
    ws = await _connect(live_server, alice)
    try:
        await ws.subscribe("LiveAlerts", {})  # shared
        await ws.subscribe("LiveAlerts", {"after": "bm90LWEtY3Vyc29y"})  # its own (a bad cursor: an error)
        await asyncio.sleep(0.3)
        await _alert(client, alice, 1)
        frames = [await asyncio.wait_for(ws.connection.recv(), 5) for _ in range(2)]
        assert all(isinstance(frame, str) for frame in frames), frames
    finally:
        await ws.close()


async def test_different_filters_and_replays_are_not_shared(client, app, live_server):
    shared = _handler_class(app).shared
    alice = await register(client, org="Alice")
    await _rule(client, alice)
    first = await _alert(client, alice, 1)
    page = await gql(client, "Alerts", {"first": 1}, token=alice.token)
    assert page["data"]["alerts"]["edges"][0]["node"]["auditLogId"] == first
    cursor = page["data"]["alerts"]["edges"][0]["cursor"]
    ws = await _connect(live_server, alice)
    try:
        await ws.subscribe("LiveAlerts", {"filter": {"severity": ["HIGH"]}})
        await ws.subscribe("LiveAlerts", {"filter": {"severity": ["LOW"]}})
        await _wait_for(lambda: len(shared) == 2)
        await ws.subscribe("LiveAlerts", {"after": None})  # no cursor: live only, shareable
        await _wait_for(lambda: len(shared) == 3)
        replay_id = await ws.subscribe("LiveAlerts", {"after": cursor})  # a replay is the subscriber's own
        await asyncio.sleep(0.3)
        assert len(shared) == 3
        second = await _alert(client, alice, 2)
        seen = {}
        for _ in range(2):
            message = await ws.receive()
            seen[message["id"]] = message["payload"]["data"]["alerts"]["auditLogId"]
        assert seen[replay_id] == second and len(seen) == 2
    finally:
        await ws.close()


async def test_a_subscriber_that_falls_behind_is_dropped_alone(client, app, live_server):
    handler = _handler_class(app)
    alice = await register(client, org="Alice")
    await _rule(client, alice)
    normal = handler.max_buffered_bytes
    slow, fast = await _connect(live_server, alice), await _connect(live_server, alice)
    try:
        handler.max_buffered_bytes = -1  # this member counts as behind from its first delivery on
        await slow.subscribe("LiveAlerts", {})
        await _wait_for(lambda: len(handler.shared) == 1)
        handler.max_buffered_bytes = normal
        await fast.subscribe("LiveAlerts", {})
        await asyncio.sleep(0.2)
        log_id = await _alert(client, alice, 1)
        dropped = await slow.receive()
        assert dropped["type"] == "next" and dropped["payload"]["errors"][0]["extensions"]["code"] == (
            "SUBSCRIBER_TOO_SLOW"
        )
        assert (await slow.receive())["type"] == "complete"
        assert (await fast.receive())["payload"]["data"]["alerts"]["auditLogId"] == log_id
        assert (await _alert(client, alice, 2)) and (await fast.receive())["type"] == "next"
    finally:
        handler.max_buffered_bytes = normal
        await slow.close()
        await fast.close()
