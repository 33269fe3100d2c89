"""arq worker configuration: job functions and cron schedule, shared by `serve` and `worker`."""

from __future__ import annotations

from typing import Any

from arq import cron, func
from arq.worker import Worker

import app.models  # noqa: F401  every table known before the first session, so foreign keys resolve
from app.runtime.resources import ARQ_QUEUE, Runtime, arq_redis_settings
from workers.audit import index_audit_search, seal_audit_trail, sweep_audit_search
from workers.exports import expire_export_jobs, run_export, sweep_export_jobs
from workers.maintenance import record_heartbeat, remove_expired_files
from workers.metrics import rollup_metrics, rollup_org_metrics
from workers.reports import build_report, sweep_reports
from workers.webhooks import deliver_webhooks, drain_webhook_deliveries
from workers.webhooks import shutdown as webhooks_shutdown
from workers.webhooks import startup as webhooks_startup

FUNCTIONS: list[Any] = [
    record_heartbeat,
    seal_audit_trail,
    # no stored result: the job id is reused per time window, and a stored result would block the next
    func(index_audit_search, keep_result=0),
    sweep_audit_search,
    rollup_metrics,
    rollup_org_metrics,
    remove_expired_files,
    func(deliver_webhooks, keep_result=0),
    drain_webhook_deliveries,
    # no stored result: the sweeper may queue the same build id again once a run ended without building
    func(build_report, keep_result=0),
    sweep_reports,
    # an export can take long; its state is in PostgreSQL, so no stored result
    func(run_export, timeout=3600, keep_result=0),
    sweep_export_jobs,
    expire_export_jobs,
]
CRON_JOBS: list[Any] = [
    cron(record_heartbeat, second=0, run_at_startup=True),
    # unique: with several workers, one seals per minute (the advisory lock would serialise them anyway)
    cron(seal_audit_trail, second=30, unique=True, timeout=600),
    cron(sweep_audit_search, second=45, unique=True, timeout=600),
    cron(rollup_metrics, second=15, unique=True, timeout=600),
    cron(remove_expired_files, second=50, unique=True, timeout=600),
    # not unique: several workers drain side by side (claims skip each other's rows)
    cron(drain_webhook_deliveries, second=5, timeout=300),
    cron(sweep_reports, second=40, unique=True, timeout=600),
    cron(sweep_export_jobs, second=20, unique=True, timeout=600),
    cron(expire_export_jobs, second=25, unique=True, timeout=600),
]


def build_worker(runtime: Runtime, *, burst: bool = False) -> Worker:
    async def on_startup(ctx: dict[str, Any]) -> None:
        ctx["runtime"] = runtime
        await webhooks_startup(ctx)

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        await webhooks_shutdown(ctx)

    return Worker(
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
        poll_delay=0.2,
        job_timeout=600,
        keep_result=3600,
    )


async def run_worker(runtime: Runtime, *, burst: bool = False) -> None:
    worker = build_worker(runtime, burst=burst)
    try:
        await worker.main()
    finally:
        await worker.close()
