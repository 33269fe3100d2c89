"""REST `GET /v1/metrics?since=…` (seed 000): pre-aggregated counts of the audit records per type (action),
per outcome (status) and per UTC hour. A thin adapter over the service function of the `metrics` field, under
its declaration; the hourly rollups answer it as they answer GraphQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from starlette.routing import Route

from app.db import iso, utcnow
from app.metrics import service
from app.rest import params
from app.rest.handler import Call, endpoint
from app.rest.openapi import Answer
from app.rest.responses import camel

DEFAULT_WINDOW = timedelta(hours=24)


class HourlyCount(Answer):
    hour: str
    type: str | None
    outcome: str | None
    count: int
    errors: int
    blocked: int
    idempotent: int
    idempotency_hit_rate: float
    governance_block_rate: float
    alerts: int
    tokens: float
    duration_p50: float | None
    duration_p95: float | None


class MetricsOut(Answer):
    since: str
    until: str
    buckets: list[HourlyCount]


@params.accepts(params.timestamp("since"), params.timestamp("until"))
@endpoint(responses={200: MetricsOut}, graphql="Query.metrics", tag="data-export")
async def hourly_metrics(call: Call) -> Any:
    """Pre-aggregated counts per type, per outcome, per hour

    `since` defaults to 24 hours ago, `until` to now (at most 400 days apart). A bucket per UTC hour, type
    (`action`) and outcome (`status`: ok, error, blocked) that has records."""
    now = utcnow()
    since = call.query["since"] or now - DEFAULT_WINDOW
    until = call.query["until"] or now
    query = service.MetricsQuery(start=since, end=until, group_by=["hour", "action", "status"])
    rows = await service.metrics(call.session, query, now=now)
    buckets = [
        {
            "hour": iso(r.start),
            "type": r.action,
            "outcome": r.status,
            **{camel(name): value for name, value in r.figures().items()},
        }
        for r in rows
    ]
    return {"since": iso(since), "until": iso(until), "buckets": buckets}


routes = [Route("/v1/metrics", hourly_metrics, methods=["GET"])]
