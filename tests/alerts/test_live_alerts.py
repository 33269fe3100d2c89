"""Live alerts over real WebSockets: replay then live, two API processes, tenancy, slow subscribers, Redis down."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import uvicorn

from app.main import create_app
from app.runtime.resources import Runtime
from support import GraphQLWebSocket, free_port, gql, register


async def _email_rule(client, account) -> None:
    result = await gql(client, "CreateComplianceRule", {"input": {"name": "Email", "kind": "PII",
                       "config": {"types": ["email"]}}}, token=account.token)  # fmt: skip
    assert "errors" not in result, result


async def _alerting_record(client, account, n: int) -> str:
    result = await gql(client, "LogEvent", {"input": {"action": "llm_call", "prompt": f"mail user{n}@example.com"}},
                       token=account.token)  # fmt: skip
    return result["data"]["logEvent"]["id"]


async def _subscribe(base: str, account, variables: dict | None = None, **options) -> GraphQLWebSocket:
    ws = await GraphQLWebSocket.connect(base, {"authorization": f"Bearer {account.token}"}, **options)
    assert (await ws.receive())["type"] == "connection_ack"
    await ws.subscribe("LiveAlerts", variables or {})
    await asyncio.sleep(0.2)  # the subscription is registered with Redis
    return ws


async def _next_alerts(ws: GraphQLWebSocket, count: int, timeout: float = 5.0) -> list[dict]:
    out = []
    while len(out) < count:
        message = await ws.receive(timeout)
        assert message["type"] == "next", message
        out.append(message["payload"]["data"]["alerts"])
    return out


async def _no_more(ws: GraphQLWebSocket, wait: float = 0.5) -> None:
    with pytest.raises(asyncio.TimeoutError):
        await ws.receive(wait)


async def test_live_alerts_reach_only_their_organisation(client, live_server):
    alice = await register(client, org="Alice")
    mallory = await register(client, org="Mallory")
    await _email_rule(client, alice)
    await _email_rule(client, mallory)
    alice_ws = await _subscribe(live_server, alice)
    mallory_ws = await _subscribe(live_server, mallory)
    record_id = await _alerting_record(client, alice, 1)
    [alert] = await _next_alerts(alice_ws, 1)
    assert alert["auditLogId"] == record_id and alert["excerpt"] == "*****@******e.com"
    await _no_more(mallory_ws)
    await alice_ws.close()
    await mallory_ws.close()


async def test_replay_then_live_without_gap_or_duplicate(client, live_server):
    account = await register(client)
    await _email_rule(client, account)
    for n in range(3):
        await _alerting_record(client, account, n)
    first_page = await gql(client, "Alerts", {"first": 3}, token=account.token)
    oldest_cursor = first_page["data"]["alerts"]["edges"][-1]["cursor"]  # newest first: the last is the oldest

    ws = await GraphQLWebSocket.connect(live_server, {"authorization": f"Bearer {account.token}"})
    await ws.receive()
    await ws.subscribe("LiveAlerts", {"after": oldest_cursor})
    # alerts keep arriving while the subscription replays
    writers = asyncio.gather(*(_alerting_record(client, account, n) for n in range(3, 13)))
    received = await _next_alerts(ws, 2 + 10, timeout=10)
    await writers
    ids = [a["id"] for a in received]
    assert len(ids) == len(set(ids)) == 12  # the 2 after the cursor, then the 10 new ones, each once
    await _no_more(ws)
    await ws.close()


async def test_an_alert_ingested_on_one_process_reaches_a_subscriber_on_another(client, settings, database_url,
                                                                                 redis_url):  # fmt: skip
    """Two API processes' worth of state (two apps, two runtimes, two Redis connections, two uvicorns)."""
    account = await register(client)
    await _email_rule(client, account)
    servers = []
    for _ in range(2):
        runtime = await Runtime.connect(settings, database_url=database_url, redis_url=redis_url,
                                        secret_key=settings.secret_key.get_secret_value())  # fmt: skip
        app = create_app(settings, runtime=runtime)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        servers.append((server, task, runtime, f"127.0.0.1:{port}"))
    try:
        ws = await _subscribe(servers[1][3], account)
        import httpx

        async with httpx.AsyncClient(base_url=f"http://{servers[0][3]}") as process_a:
            await _alerting_record(process_a, account, 1)
        [alert] = await _next_alerts(ws, 1)
        assert alert["ruleName"] == "Email"
        await ws.close()
    finally:
        for server, task, runtime, _ in servers:
            server.should_exit = True
            await task
            await runtime.close()


async def test_broadcaster_drops_a_slow_subscriber_and_keeps_the_others(runtime):
    from app.errors import SubscriberTooSlowError
    from app.runtime.redis import Broadcaster

    broadcaster = Broadcaster(runtime.redis, queue_size=3)
    try:
        async with broadcaster.subscribe("test:slow") as slow, broadcaster.subscribe("test:slow") as fast:
            received = []

            async def consume():
                async for message in fast:
                    received.append(message)
                    if len(received) == 20:
                        return

            consumer = asyncio.create_task(consume())
            for n in range(20):
                await broadcaster.publish("test:slow", str(n).encode())
                await asyncio.sleep(0.01)
            await asyncio.wait_for(consumer, 5)
            assert received == [str(n).encode() for n in range(20)]
            with pytest.raises(SubscriberTooSlowError):
                async for _ in slow:
                    pass
    finally:
        await broadcaster.close()


async def test_ingest_succeeds_when_redis_is_down(client, settings, database_url):
    """A real outage: an API process whose Redis does not answer still ingests, and the alert is a row."""
    import httpx

    account = await register(client)
    await _email_rule(client, account)
    dead = "redis://127.0.0.1:1/0"
    down = await Runtime.connect(settings.model_copy(update={"redis_url": dead}), database_url=database_url,
                                 redis_url=dead, secret_key=settings.secret_key.get_secret_value())  # fmt: skip
    app = create_app(settings, runtime=down)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://down") as process,
        ):
            record_id = await _alerting_record(process, account, 1)
            assert record_id
            alerts = await gql(process, "Alerts", {}, token=account.token)
            assert [e["node"]["auditLogId"] for e in alerts["data"]["alerts"]["edges"]] == [record_id]
    finally:
        await down.close()
