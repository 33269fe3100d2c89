"""Redis killed (SIGKILL) and restarted under load: ingest, live alerts, webhook deliveries, the worker.

Asserts the counts the fault suite promises: every record sent is stored once, each of two live subscribers
ends with every alert exactly once, every webhook delivery is delivered (once), the worker resumes by itself
(deliveries, an export and sealing complete after the outage), /readyz names what is down and recovers.
"""

from __future__ import annotations

import asyncio
import collections
import time

import sqlalchemy as sa
from webhooks.receiver import Receiver

from app.runtime.redis import Broadcaster, Gap, create_redis
from faults.conftest import Stack, scalar, until, what_waits
from support import GraphQLWebSocket, create_api_key, gql, register

RECORDS = 150
OUTAGE_SECONDS = 3.0


async def _log(http, key: str, n: int) -> str:
    """One record, retried (same idempotency key) until the server takes it, as an agent's SDK does."""
    variables = {"input": {"action": "llm_call", "prompt": f"mail user{n}@example.com", "idempotencyKey": f"k{n}"}}
    deadline = time.monotonic() + 30
    while True:
        try:
            result = await gql(http, "LogEvent", variables, api_key=key)
            if "errors" not in result:
                return result["data"]["logEvent"]["id"]
        except Exception:
            pass
        assert time.monotonic() < deadline, f"record {n} never accepted"
        await asyncio.sleep(0.2)


class Subscriber:
    def __init__(self, ws: GraphQLWebSocket) -> None:
        self.ws = ws
        self.alerts: list[str] = []
        self.ended: dict | None = None
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            message = await self.ws.receive(timeout=120)
            if message["type"] != "next" or "errors" in message["payload"]:
                self.ended = message
                return
            self.alerts.append(message["payload"]["data"]["alerts"]["id"])

    async def close(self) -> None:
        self.task.cancel()
        await self.ws.close()


async def _subscriber(stack: Stack, token: str) -> Subscriber:
    ws = await GraphQLWebSocket.connect(stack.base, {"authorization": f"Bearer {token}"})
    assert (await ws.receive())["type"] == "connection_ack"
    await ws.subscribe("LiveAlerts", {})
    await asyncio.sleep(0.3)
    return Subscriber(ws)


async def test_broadcaster_reports_a_gap_after_redis_comes_back(stack):
    broadcaster = Broadcaster(create_redis(stack.settings.redis_url))
    try:
        async with broadcaster.subscribe("gap-test", gaps=True) as messages:
            await broadcaster.publish("gap-test", b"before")
            assert await asyncio.wait_for(anext(messages), 5) == b"before"
            stack.kill_redis()
            await asyncio.sleep(1.5)
            stack.start_redis()
            gap = await asyncio.wait_for(anext(messages), 15)
            assert isinstance(gap, Gap)
            await broadcaster.publish("gap-test", b"after")
            assert await asyncio.wait_for(anext(messages), 5) == b"after"
    finally:
        await broadcaster.close()


async def test_redis_killed_under_load_loses_nothing(stack):
    receiver = await Receiver().start()
    stack.start_worker()
    http = stack.http
    try:
        account = await register(http)
        key, _ = await create_api_key(http, account)
        rule = {"input": {"name": "Email", "kind": "PII", "config": {"types": ["email"]}}}
        assert "errors" not in await gql(http, "CreateComplianceRule", rule, token=account.token)
        endpoint = {"input": {"url": receiver.url(), "events": ["alert.created"]}}
        assert "errors" not in await gql(http, "CreateWebhookEndpoint", endpoint, token=account.token)
        subscribers = [await _subscriber(stack, account.token) for _ in range(2)]
        await until(lambda: _ready(http, worker=True), 20, "the worker's first heartbeat")

        sent: list[str] = []
        for n in range(RECORDS):
            if n == RECORDS // 3:
                stack.kill_redis()
                killed_at = time.monotonic()
                down = await http.get("/readyz")
                assert down.status_code == 503 and down.json()["code"] == "UNAVAILABLE"
                assert "redis" in down.json()["error"] and down.headers["retry-after"]
            if n == RECORDS // 3 + 10:  # ten records while Redis is down
                await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - killed_at)))
                stack.start_redis()
            sent.append(await _log(http, key, n))

        runtime = stack.runtime
        org = account.org_id
        stored = await scalar(runtime, "SELECT count(*) FROM audit_logs WHERE org_id = :o", o=org)
        distinct = await scalar(runtime, "SELECT count(DISTINCT idempotency_key) FROM audit_logs WHERE org_id = :o",
                                 o=org)  # fmt: skip
        alerts = await scalar(runtime, "SELECT count(*) FROM alerts WHERE org_id = :o", o=org)

        async def subscribers_complete() -> bool:
            return all(len(set(s.alerts)) >= RECORDS or s.ended for s in subscribers)

        await until(subscribers_complete, 60, "every subscriber to have every alert")

        async def delivered() -> bool:
            left = await scalar(runtime, "SELECT count(*) FROM webhook_deliveries WHERE status <> 'DELIVERED'")
            return left == 0

        try:
            await until(delivered, 60, "every webhook delivery to be delivered")
        except AssertionError:
            async with runtime.db.engine.connect() as conn:
                left = (await conn.execute(sa.text(
                    "SELECT id, status, attempt_count, next_attempt_at, lease_expires_at, last_error, now() AS now "
                    "FROM webhook_deliveries WHERE status <> 'DELIVERED' ORDER BY created_at LIMIT 5"
                ))).all()  # fmt: skip
            raise AssertionError(f"deliveries left: {[tuple(r) for r in left]}") from None
        deliveries = await scalar(runtime, "SELECT count(*) FROM webhook_deliveries")
        ids = collections.Counter(r.headers["webhook-id"] for r in receiver.received)

        # the worker resumed by itself: an export and a seal run after the outage
        export = await gql(http, "StartExport", {"input": {"dataset": "AUDIT_LOGS", "format": "CSV"}},
                           token=account.token)  # fmt: skip
        export_id = export["data"]["startExport"]["id"]

        async def exported() -> bool:
            job = await gql(http, "ExportJob", {"id": export_id}, token=account.token)
            assert job["data"]["exportJob"]["status"] not in ("FAILED", "CANCELLED"), job
            return job["data"]["exportJob"]["status"] == "READY"

        await until(exported, 60, "the export to complete")
        await stack.runtime.queue.enqueue_job("seal_audit_trail")

        async def sealed() -> bool:
            # the audit stream's digests only: the organisation's activity trail (its sign-up, key, rule,
            # endpoint) is sealed into digests of its own by the same job
            count = await scalar(runtime, "SELECT coalesce(sum(record_count), 0) FROM audit_digests "
                                  "WHERE org_id = :o AND stream = 'audit'", o=org)  # fmt: skip
            return count == RECORDS

        try:
            await until(sealed, 60, "the records to be sealed")
        except AssertionError:
            raise AssertionError(f"not sealed in time;\n{await what_waits(runtime)}") from None
        await until(lambda: _ready(http, worker=True), 20, "/readyz to report the worker again")

        figures = {
            "sent": len(sent),
            "stored": stored,
            "duplicated": stored - distinct,
            "lost": len(sent) - distinct,
            "alerts": alerts,
            "subscribers": [(len(s.alerts), len(s.alerts) - len(set(s.alerts))) for s in subscribers],
            "deliveries": deliveries,
            "webhook_ids_received": len(ids),
            "webhook_duplicates": sum(c - 1 for c in ids.values()),
        }
        print("fault redis-kill:", figures)
        assert len(set(sent)) == RECORDS == stored == distinct == alerts
        for s in subscribers:
            assert s.ended is None, s.ended
            assert sorted(s.alerts) == sorted(set(s.alerts)) and len(s.alerts) == RECORDS
        assert deliveries == RECORDS == len(ids)
        assert figures["webhook_duplicates"] == 0, ids.most_common(3)
        for s in subscribers:
            await s.close()
    finally:
        await receiver.stop()


async def _ready(http, *, worker: bool) -> bool:
    response = await http.get("/readyz")
    return response.status_code == 200 and (not worker or response.json()["checks"].get("worker") == "ok")


async def test_trace_spans_written_while_redis_is_down_arrive_after_it_returns(stack):
    http = stack.http
    account = await register(http)
    key, _ = await create_api_key(http, account)
    ws = await GraphQLWebSocket.connect(stack.base, {"x-api-key": key})
    assert (await ws.receive())["type"] == "connection_ack"
    await ws.subscribe("TraceSpans", {"traceId": "t-gap"})
    await asyncio.sleep(0.3)
    first = await _log_span(http, key, "before")
    assert (await ws.receive(5))["payload"]["data"]["traceSpans"]["id"] == first
    stack.kill_redis()
    during = await _log_span(http, key, "during")
    stack.start_redis()
    message = await ws.receive(20)
    assert message["payload"]["data"]["traceSpans"]["id"] == during
    after = await _log_span(http, key, "after")
    assert (await ws.receive(5))["payload"]["data"]["traceSpans"]["id"] == after
    await ws.close()


async def _log_span(http, key: str, action: str) -> str:
    result = await gql(http, "LogEvent", {"input": {"action": action, "traceId": "t-gap"}}, api_key=key)
    assert "errors" not in result, result
    return result["data"]["logEvent"]["id"]
