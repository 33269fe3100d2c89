"""REST for seed 000's webhook calls: `POST /v1/webhooks/test` (a test event to a URL or an endpoint, sent by
the delivery worker) and `GET /v1/webhooks` (the deliveries, dead-lettered ones included, newest first, paged by
cursor). Thin adapters over the service functions of `sendTestWebhook` and `webhookDeliveries`, under their
declarations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from pydantic import Field
from starlette.routing import Route

from app.pagination import cursor_page, next_page
from app.rest import params
from app.rest.handler import Call, endpoint
from app.rest.openapi import Answer, Body
from app.rest.responses import row_json
from app.webhooks import models, service

MAX_LIMIT = 200
STATUSES = (models.PENDING, models.SENDING, models.DELIVERED, models.FAILED, models.DEAD_LETTERED)


class TestWebhookIn(Body):
    url: str | None = Field(default=None, max_length=2048, description="Where to send it (or give endpointId)")
    endpoint_id: str | None = Field(default=None, max_length=64, description="A registered endpoint (signed)")
    payload: Any = Field(default=None, description="The event's `data`: a JSON object of at most 64 KB")


class AttemptOut(Answer):
    id: str
    attempted_at: str
    succeeded: bool
    status_code: int | None
    latency_ms: int | None
    error: str | None
    response_body: str | None


class DeliveryOut(Answer):
    id: str
    endpoint_id: str | None
    url: str | None
    event_id: str
    event_type: str
    payload: Any
    status: str
    attempt_count: int
    next_attempt_at: str | None
    last_attempt_at: str | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: str | None
    created_at: str
    updated_at: str
    attempts: list[AttemptOut]


class DeliveryPage(Answer):
    deliveries: list[DeliveryOut]
    next_cursor: str | None


_HIDDEN = ("org_id", "body", "claim_token", "lease_expires_at")


def delivery_json(delivery: models.WebhookDelivery, attempts: list[models.WebhookAttempt]) -> dict[str, Any]:
    out = row_json(delivery, hide=_HIDDEN)
    out["payload"] = orjson.loads(delivery.body)
    if delivery.due_at is None:
        out["nextAttemptAt"] = None
    out["attempts"] = [row_json(a, hide=("org_id", "delivery_id")) for a in attempts]
    return out


@endpoint(body=TestWebhookIn, responses={202: DeliveryOut}, graphql="Mutation.sendTestWebhook", tag="data-export")
async def send_test(call: Call) -> Any:
    """Send a test event to a URL (unsigned) or an endpoint (signed); the worker delivers it

    `{url, payload}`: a `test` event with `payload` as its `data`, PENDING until the worker sends it (retried
    3 times with backoff, then dead-lettered: see it in `GET /v1/webhooks`)."""
    delivery = await service.send_test(
        call.session,
        call.principal,
        endpoint_id=call.body.endpoint_id,
        url=call.body.url,
        payload=call.body.payload,
        settings=call.runtime.settings,
        source_ip=call.source_ip,
    )
    return delivery_json(delivery, [])


@params.accepts(
    params.integer("limit", minimum=1, maximum=MAX_LIMIT, default=50),
    params.choice("status", {s: s for s in STATUSES}, many=True),
    params.text("eventType", many=True, max_length=64),
    params.text("cursor", max_length=200),
)
@endpoint(responses={200: DeliveryPage}, graphql="Query.webhookDeliveries", tag="data-export")
async def list_deliveries(call: Call) -> Any:
    """Webhook deliveries, newest first, dead-lettered ones included; paged by cursor"""
    q = call.query
    page = cursor_page(q["limit"], q["cursor"], (datetime, str))
    query = service.DeliveryQuery(statuses=q["status"], event_types=q["eventType"])
    rows = await service.list_deliveries(call.session, query, page=page)
    kept, cursor = next_page(rows, page, lambda d: (d.created_at, d.id))
    attempts = await service.attempts_of(call.session, [d.id for d in kept])
    return {"deliveries": [delivery_json(d, attempts[d.id]) for d in kept], "nextCursor": cursor}


routes = [
    Route("/v1/webhooks/test", send_test, methods=["POST"]),
    Route("/v1/webhooks", list_deliveries, methods=["GET"]),
]
