"""The worker killed (SIGKILL, a separate `agentrail worker` process) under load, and a new one started.

Every webhook delivery ends DELIVERED and the export completes. Outcomes are recorded as they come in, so only
a request in flight at the kill is sent again after its lease (the residual window the README documents). The lease is
shortened (4 s timeout → 46 s).
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import time

from webhooks.receiver import Receiver

from faults.conftest import scalar, until
from support import agentrail_command, create_api_key, gql, register

RECORDS = 60
TIMEOUT = 4  # seconds per request phase: the lease is 4 × 4 + 30 = 46 s


def _worker(stack) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTRAIL_")}
    env.update(
        {
            "DATABASE_URL": str(stack.settings.database_url),
            "REDIS_URL": str(stack.settings.redis_url),
            "AGENTRAIL_ENV": "test",
            "AGENTRAIL_SECRET_KEY": stack.settings.secret_key.get_secret_value(),
            "AGENTRAIL_WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",
            "AGENTRAIL_WEBHOOK_TIMEOUT_SECONDS": str(TIMEOUT),
            "AGENTRAIL_EXPORT_HEARTBEAT_TIMEOUT_SECONDS": "3",
            "AGENTRAIL_LOG_LEVEL": "WARNING",
        }
    )
    return subprocess.Popen([*agentrail_command(), "worker"], env=env, start_new_session=True)


async def test_worker_killed_under_load_every_delivery_and_export_completes(stack):
    receiver = await Receiver().start()
    http, runtime = stack.http, stack.runtime
    first = _worker(stack)
    second = None
    try:
        account = await register(http)
        key, _ = await create_api_key(http, account)
        rule = {"input": {"name": "Email", "kind": "PII", "config": {"types": ["email"]}}}
        assert "errors" not in await gql(http, "CreateComplianceRule", rule, token=account.token)
        endpoint = {"input": {"url": receiver.url("/hook"), "events": ["alert.created"]}}
        assert "errors" not in await gql(http, "CreateWebhookEndpoint", endpoint, token=account.token)
        receiver.hold("/hook")  # the first request is held: its batch is in flight when the worker dies
        records = [{"action": "llm_call", "prompt": f"mail user{n}@example.com"} for n in range(RECORDS)]
        result = await gql(http, "LogEvents", {"input": records}, api_key=key)
        assert "errors" not in result, result
        export = await gql(http, "StartExport", {"input": {"dataset": "AUDIT_LOGS", "format": "CSV"}},
                           token=account.token)  # fmt: skip
        export_id = export["data"]["startExport"]["id"]
        await asyncio.wait_for(receiver.holding.wait(), 60)
        held_at = time.monotonic()

        # the batch stays in flight (one request held) while the others' outcomes are recorded as they come in
        async def recorded_delivered() -> int:
            return await scalar(runtime, "SELECT count(*) FROM webhook_deliveries WHERE status = 'DELIVERED'")

        while await recorded_delivered() < RECORDS - 1 and time.monotonic() - held_at < TIMEOUT - 1:
            await asyncio.sleep(0.1)
        delivered_before_kill = await recorded_delivered()
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        killed_at = time.monotonic()
        receiver.release.set()
        second = _worker(stack)

        async def exported() -> bool:
            job = await gql(http, "ExportJob", {"id": export_id}, token=account.token)
            return job["data"]["exportJob"]["status"] == "READY"

        # the sweepers run every minute; here they are asked as soon as the lease / heartbeat has expired
        await asyncio.sleep(max(0.0, 4 * TIMEOUT + 31 - (time.monotonic() - killed_at)))
        for sweeper in ("drain_webhook_deliveries", "sweep_export_jobs"):
            await runtime.queue.enqueue_job(sweeper, _queue_name="agentrail:queue")

        async def delivered() -> bool:
            return await scalar(runtime, "SELECT count(*) FROM webhook_deliveries WHERE status <> 'DELIVERED'") == 0

        await until(delivered, 60, "every webhook delivery to be delivered")
        await until(exported, 60, "the export to complete")
        stored = await scalar(runtime, "SELECT count(*) FROM audit_logs")
        deliveries = await scalar(runtime, "SELECT count(*) FROM webhook_deliveries")
        ids = collections.Counter(r.headers["webhook-id"] for r in receiver.completed)
        figures = {
            "sent": RECORDS,
            "stored": stored,
            "deliveries": deliveries,
            "webhook_ids_received": len(ids),
            "webhook_duplicates": sum(c - 1 for c in ids.values()),
            "delivered_before_kill": delivered_before_kill,
        }
        print("fault worker-kill:", figures)
        assert stored == RECORDS == deliveries == len(ids)
        # outcomes were recorded while the batch was still in flight; only what had answered but was not recorded
        # yet at the kill is sent twice
        assert delivered_before_kill > 0
        assert figures["webhook_duplicates"] <= RECORDS - 1 - delivered_before_kill, figures
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=20)
        await receiver.stop()
