"""Per-organisation loops of jobs: one organisation's failure does not stop the others.

A job that works through organisations (sealing, metrics rollups, search sweeps) runs each one through
`each_organization`. An organisation that fails is logged (its id and the error's type; no statement
parameters, see `Database`), counted in `agentrail_job_organization_failures_total{job, reason}` and left
as it was: its work is still pending, so the job's next run retries it. The others proceed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

import structlog
from prometheus_client import Counter

from app.runtime.telemetry import REGISTRY

log = structlog.get_logger(__name__)

T = TypeVar("T")

ORGANIZATION_FAILURES = Counter(
    "agentrail_job_organization_failures_total",
    "Organisations a job could not process (retried on its next run), by job and error type",
    ["job", "reason"],  # the error's class name: bounded, unlike organisation ids
    registry=REGISTRY,
)


async def each_organization(job: str, org_ids: Iterable[str], work: Callable[[str], Awaitable[T]]) -> list[T]:
    """`work(org_id)` for every organisation in turn; the results of those that succeeded."""
    results: list[T] = []
    for org_id in org_ids:
        try:
            results.append(await work(org_id))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = type(exc).__name__
            ORGANIZATION_FAILURES.labels(job=job, reason=reason).inc()
            log.error(
                "job failed for one organisation; retried on its next run",
                job=job,
                org_id=org_id,
                reason=reason,
                exc_info=exc,
            )
    return results
