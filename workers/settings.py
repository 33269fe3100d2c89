"""arq worker configuration: job functions and cron schedule, shared by `serve` and `worker`."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog
from arq import cron, func
from arq.worker import Worker
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

import app.models  # noqa: F401  every table known before the first session, so foreign keys resolve
from app.db import JOB_STATEMENT_TIMEOUT
from app.runtime import heartbeat
from app.runtime.resources import ARQ_QUEUE, Runtime, arq_redis_settings
from workers.alerts import notify_alerts, sweep_alert_notifications
from workers.audit import (
    create_audit_partitions,
    expire_audit_records,
    index_audit_search,
    run_erasure,
    seal_audit_trail,
    sweep_audit_search,
    sweep_erasures,
)
from workers.exports import expire_export_jobs, run_export, sweep_export_jobs
from workers.mail import send_emails
from workers.maintenance import remove_expired_files, remove_expired_sign_ins
from workers.metrics import rollup_metrics, rollup_org_metrics
from workers.reports import build_report, sweep_reports
from workers.webhooks import deliver_webhooks, drain_webhook_deliveries
from workers.webhooks import shutdown as webhooks_shutdown
from workers.webhooks import startup as webhooks_startup

log = structlog.get_logger(__name__)

# what a lost Redis looks like to the worker (BusyLoadingError, Redis reading its file after a restart, is one)
REDIS_OUTAGE = (RedisConnectionError, RedisTimeoutError, OSError)

FUNCTIONS: list[Any] = [
    seal_audit_trail,
    create_audit_partitions,
    func(expire_audit_records, timeout=3 * 3600),
    # no stored result: the job id is reused per time window, and a stored result would block the next
    func(index_audit_search, keep_result=0),
    sweep_audit_search,
    # the job id is the erasure's: no stored result, so that the sweeper can queue it again once it ended
    func(run_erasure, keep_result=0, timeout=3600),
    sweep_erasures,
    rollup_metrics,
    rollup_org_metrics,
    remove_expired_files,
    remove_expired_sign_ins,
    func(deliver_webhooks, keep_result=0),
    drain_webhook_deliveries,
    # no stored result: the sweeper may queue the same build id again once a run ended without building
    func(build_report, keep_result=0),
    sweep_reports,
    # an export can take long; its state is in PostgreSQL, so no stored result
    func(run_export, timeout=3600, keep_result=0),
    sweep_export_jobs,
    expire_export_jobs,
    func(send_emails, keep_result=0, timeout=300),
    func(notify_alerts, keep_result=0, timeout=300),
    sweep_alert_notifications,
]
AFTER_OUTAGE = [
    send_emails,
    drain_webhook_deliveries,
    sweep_export_jobs,
    sweep_reports,
    sweep_audit_search,
    sweep_erasures,
]
CRON_JOBS: list[Any] = [
    # unique: with several workers, one seals per minute (the advisory lock would serialise them anyway)
    cron(seal_audit_trail, second=30, unique=True, timeout=600),
    cron(create_audit_partitions, hour=2, minute=7, second=0, unique=True, timeout=600),  # daily
    cron(expire_audit_records, hour=3, minute=17, second=0, unique=True, timeout=3 * 3600),  # daily
    cron(sweep_audit_search, second=45, unique=True, timeout=600),
    cron(sweep_erasures, second=55, unique=True, timeout=300),
    cron(rollup_metrics, second=15, unique=True, timeout=600),
    cron(remove_expired_files, second=50, unique=True, timeout=600),
    cron(remove_expired_sign_ins, minute=17, second=55, unique=True, timeout=600),  # hourly
    # not unique: several workers drain side by side (claims skip each other's rows)
    cron(drain_webhook_deliveries, second=5, timeout=300),
    cron(sweep_reports, second=40, unique=True, timeout=600),
    cron(sweep_export_jobs, second=20, unique=True, timeout=600),
    cron(expire_export_jobs, second=25, unique=True, timeout=600),
    cron(send_emails, second=10, timeout=300),  # not unique: claims skip each other's rows
    cron(sweep_alert_notifications, second=35, unique=True, timeout=300),
]


class ResilientWorker(Worker):
    """arq's worker, made to ride out a Redis outage of any length: a poll that fails on the connection is
    retried (backing off to a few seconds) instead of ending the worker, so running jobs are not cancelled and
    the queue is read again as soon as Redis answers. Each successful poll also beats the heartbeat that
    /readyz reads."""

    def __init__(self, *args: Any, heartbeat_seconds: float, stale_seconds: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._heartbeat_seconds = heartbeat_seconds
        self._stale_seconds = stale_seconds
        self._last_beat = 0.0
        self._outage_since: float | None = None

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
            now = time.monotonic()
            if now - self._last_beat >= self._heartbeat_seconds:
                await heartbeat.beat(self.pool, stale_seconds=self._stale_seconds)
                self._last_beat = now
        except REDIS_OUTAGE as exc:
            now = time.monotonic()
            if self._outage_since is None:
                self._outage_since = now
                log.warning("worker lost Redis; retrying until it is back", error=type(exc).__name__)
            await asyncio.sleep(min(2.0, 0.25 + (now - self._outage_since) / 8))
            return
        if self._outage_since is not None:
            log.info("worker reconnected to Redis", outage_seconds=round(time.monotonic() - self._outage_since, 1))
            self._outage_since = None
            # what was queued meanwhile never reached the queue (and a restarted Redis may have lost more):
            # the sweepers find it in PostgreSQL now rather than at their next minute
            with contextlib.suppress(*REDIS_OUTAGE):
                for sweeper in AFTER_OUTAGE:
                    await self.pool.enqueue_job(sweeper.__name__, _queue_name=self.queue_name)


# how often the worker looks for due jobs (a deferred job starts at most this late, on a quiet machine)
POLL_DELAY_SECONDS = 0.2


def build_worker(runtime: Runtime, *, burst: bool = False) -> Worker:
    async def on_startup(ctx: dict[str, Any]) -> None:
        ctx["runtime"] = runtime
        await webhooks_startup(ctx)

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        await webhooks_shutdown(ctx)

    return ResilientWorker(
        heartbeat_seconds=runtime.settings.worker_heartbeat_seconds,
        stale_seconds=runtime.settings.worker_stale_seconds,
        functions=FUNCTIONS,
        cron_jobs=CRON_JOBS,
        # its own connection: arq closes the worker's pool on shutdown
        redis_settings=arq_redis_settings(runtime.redis_url),
        queue_name=ARQ_QUEUE,
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        handle_signals=False,
        allow_abort_jobs=True,  # cancelExport aborts a running export
        burst=burst,
        max_jobs=20,
        poll_delay=POLL_DELAY_SECONDS,
        job_timeout=600,
        keep_result=3600,
    )


async def run_worker(runtime: Runtime, *, burst: bool = False) -> None:
    """Runs the worker until cancelled (or, with `burst`, until the queue is empty). Redis unreachable at start
    (arq gives up connecting after a few tries) or lost mid-way is waited out, never a reason to stop."""
    # every job task is created from this one and inherits the jobs' statement timeout (not the requests')
    JOB_STATEMENT_TIMEOUT.set(runtime.settings.job_statement_timeout_ms)
    if burst:
        worker = build_worker(runtime, burst=True)
        try:
            await worker.main()
        finally:
            await worker.close()
        return
    pause = 0.5
    while True:
        worker = build_worker(runtime)
        try:
            await worker.main()
        except REDIS_OUTAGE as exc:
            log.warning("worker cannot reach Redis; starting again shortly", error=type(exc).__name__)
        except Exception:
            log.exception("worker stopped unexpectedly; starting again shortly")
        else:
            pause = 0.5
        finally:
            with contextlib.suppress(Exception):
                await worker.close()
        await asyncio.sleep(pause)
        pause = min(pause * 2, 5.0)
