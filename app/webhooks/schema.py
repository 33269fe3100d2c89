"""GraphQL types and operations of the webhooks domain. Thin: parse, authorise, call the service, map."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated

import strawberry

from app.info import Info, RequestInfo
from app.pagination import (
    TOTAL_COUNT,
    After,
    Before,
    Connection,
    First,
    Last,
    build_connection,
    page_request,
    selects_any,
)
from app.scalars import JSON, stored
from app.webhooks import models, service


@strawberry.enum(description="Where a delivery stands.")
class WebhookDeliveryStatus(Enum):
    PENDING = strawberry.enum_value("PENDING", description="Waiting for its (next) attempt.")
    SENDING = strawberry.enum_value("SENDING", description="An attempt is in flight.")
    DELIVERED = strawberry.enum_value("DELIVERED", description="The endpoint answered 2xx.")
    FAILED = strawberry.enum_value("FAILED", description="The last attempt failed; a retry is scheduled.")
    DEAD_LETTERED = strawberry.enum_value(
        "DEAD_LETTERED", description="Every retry failed; it can be redelivered by hand."
    )


@strawberry.type(
    description=(
        "A URL that receives the organisation's events, signed per Standard Webhooks. The signing secret is "
        "never readable here: it is returned once by createWebhookEndpoint and rotateWebhookSecret."
    )
)
class WebhookEndpoint:
    id: strawberry.ID = strawberry.field(description="Endpoint id (`whk_…`).")
    url: str = strawberry.field(description="Where events are POSTed (https; http allowed outside production).")
    description: str = strawberry.field(description='Free text, at most 500 characters; "" when not set.')
    events: list[str] = strawberry.field(description="Subscribed event types, or [`*`] for all.")
    enabled: bool = strawberry.field(description="False: no new events are sent to it.")
    disabled_reason: str | None = strawberry.field(
        description="Why it was disabled automatically (continuous failure); null otherwise."
    )
    failing_since: datetime | None = strawberry.field(
        description="First failed attempt since the last success; null while healthy."
    )
    secret_rotated_at: datetime | None = strawberry.field(description="When the secret was last rotated.")
    previous_secret_expires_at: datetime | None = strawberry.field(
        description="Until when the secret replaced by the last rotation still signs (beside the new one)."
    )
    created_at: datetime = strawberry.field(description="When it was created.")
    updated_at: datetime = strawberry.field(description="When it was last changed.")

    @classmethod
    def from_model(cls, endpoint: models.WebhookEndpoint) -> WebhookEndpoint:
        return cls(
            id=strawberry.ID(endpoint.id),
            url=endpoint.url,
            description=endpoint.description,
            events=list(endpoint.events),
            enabled=endpoint.enabled,
            disabled_reason=endpoint.disabled_reason,
            failing_since=endpoint.failing_since,
            secret_rotated_at=endpoint.secret_rotated_at,
            previous_secret_expires_at=endpoint.previous_secret_expires_at,
            created_at=endpoint.created_at,
            updated_at=endpoint.updated_at,
        )


@strawberry.type(description="An endpoint and its signing secret, shown this once.")
class WebhookEndpointWithSecret:
    endpoint: WebhookEndpoint = strawberry.field(description="The endpoint.")
    secret: str = strawberry.field(
        description="`whsec_…`: verify signatures with it. Shown only now; rotate the secret to get a new one."
    )


@strawberry.type(description="One HTTP attempt of a delivery.")
class WebhookAttempt:
    attempted_at: datetime = strawberry.field(description="When it was made.")
    succeeded: bool = strawberry.field(description="True for a 2xx answer.")
    status_code: int | None = strawberry.field(description="The receiver's HTTP status; null when none came.")
    latency_ms: int | None = strawberry.field(description="Milliseconds until the answer (or the failure).")
    error: str | None = strawberry.field(description="What went wrong: timeout, refused address, HTTP status, …")
    response_body: str | None = strawberry.field(description="The first 2 KB of the receiver's answer.")

    @classmethod
    def from_model(cls, attempt: models.WebhookAttempt) -> WebhookAttempt:
        return cls(
            attempted_at=attempt.attempted_at,
            succeeded=attempt.succeeded,
            status_code=attempt.status_code,
            latency_ms=attempt.latency_ms,
            error=attempt.error,
            response_body=attempt.response_body,
        )


@strawberry.type(description="One event on its way to one endpoint, with every attempt made.")
class WebhookDelivery:
    id: strawberry.ID = strawberry.field(description="Delivery id (`dlv_…`).")
    endpoint_id: strawberry.ID | None = strawberry.field(
        description="The endpoint; null for a test sent to a bare URL."
    )
    url: str | None = strawberry.field(description="The bare URL of a test sent without an endpoint.")
    event_id: str = strawberry.field(description="The event (`evt_…`): the payload's `id` and the `webhook-id`.")
    event_type: str = strawberry.field(description="The event type, e.g. alert.created.")
    payload: JSON = strawberry.field(description="The JSON body sent: {id, type, createdAt, data}.")
    status: WebhookDeliveryStatus = strawberry.field(description="Where it stands.")
    attempt_count: int = strawberry.field(description="Attempts in the current cycle (a redelivery starts one).")
    next_attempt_at: datetime | None = strawberry.field(description="When the next attempt is due, if any.")
    delivered_at: datetime | None = strawberry.field(description="When a 2xx answer came.")
    last_error: str | None = strawberry.field(description="The last attempt's error.")
    created_at: datetime = strawberry.field(description="When the event was emitted.")
    attempts: list[WebhookAttempt] = strawberry.field(description="Every attempt, oldest first.")

    @classmethod
    def from_model(
        cls, delivery: models.WebhookDelivery, attempts: list[models.WebhookAttempt] | None = None
    ) -> WebhookDelivery:
        import orjson

        return cls(
            id=strawberry.ID(delivery.id),
            endpoint_id=strawberry.ID(delivery.endpoint_id) if delivery.endpoint_id else None,
            url=delivery.url,
            event_id=delivery.event_id,
            event_type=delivery.event_type,
            payload=orjson.loads(delivery.body),
            status=WebhookDeliveryStatus(delivery.status),
            attempt_count=delivery.attempt_count,
            next_attempt_at=delivery.due_at,
            delivered_at=delivery.delivered_at,
            last_error=delivery.last_error,
            created_at=delivery.created_at,
            attempts=[WebhookAttempt.from_model(a) for a in attempts or []],
        )


WebhookDeliveryConnection = Connection[WebhookDelivery]


@strawberry.input(description="Which deliveries. All conditions must hold.")
class WebhookDeliveryFilter:
    status: list[WebhookDeliveryStatus] | None = strawberry.field(default=None, description="Any of these.")
    endpoint_id: strawberry.ID | None = strawberry.field(default=None, description="Only this endpoint's.")
    event_type: list[str] | None = strawberry.field(default=None, description="Any of these event types.")
    from_: datetime | None = strawberry.field(default=None, name="from", description="Emitted at or after.")
    to: datetime | None = strawberry.field(default=None, description="Emitted before.")

    def to_query(self) -> service.DeliveryQuery:
        return service.DeliveryQuery(
            statuses=[stored(s) for s in self.status] if self.status else None,
            endpoint_id=str(self.endpoint_id) if self.endpoint_id else None,
            event_types=self.event_type,
            created_from=self.from_,
            created_to=self.to,
        )


@strawberry.input(description="A new webhook endpoint.")
class CreateWebhookEndpointInput:
    url: str = strawberry.field(
        description="https URL (http outside production); its host must not resolve to an internal address."
    )
    events: list[str] = strawberry.field(
        description="Event types: alert.created, alert.resolved, policy.version_created, report.ready, "
        "export.ready, audit.digest_sealed, test; or `*` for all."
    )
    description: str | None = strawberry.field(default=None, description="At most 500 characters.")
    enabled: bool = strawberry.field(default=True, description="Start enabled (default) or not.")


@strawberry.input(description="Endpoint fields to change; omitted (or null) fields stay as they are.")
class UpdateWebhookEndpointInput:
    url: str | None = strawberry.field(default=None, description="New URL (checked like at creation).")
    events: list[str] | None = strawberry.field(default=None, description="New subscriptions.")
    description: str | None = strawberry.field(default=None, description='New description; "" clears it.')
    enabled: bool | None = strawberry.field(
        default=None, description="Enable or disable; enabling clears the failure state."
    )


_ATTEMPTS = frozenset({"attempts"})


async def _page(
    info: Info,
    filter: WebhookDeliveryFilter | None,
    first: int | None,
    after: str | None,
    last: int | None = None,
    before: str | None = None,
) -> WebhookDeliveryConnection:
    query = (filter or WebhookDeliveryFilter()).to_query()
    page = page_request(first, after, last, before, types=(datetime, str))
    session = await info.context.db()
    rows = await service.list_deliveries(session, query, page=page)
    # attempts (each with its stored response body) and the count only when the page asks for them
    wanted = info.selected_fields
    page_ids = [r.id for r in rows[: page.size]]
    attempts = await service.attempts_of(session, page_ids) if selects_any(wanted, _ATTEMPTS) else {}
    total = await service.count_deliveries(session, query) if selects_any(wanted, TOTAL_COUNT) else None
    return build_connection(
        rows,
        page=page,
        to_node=lambda d: WebhookDelivery.from_model(d, attempts.get(d.id)),
        sort_key=lambda d: (d.created_at, d.id),
        total_count=total,
    )


@strawberry.type
class WebhooksQuery:
    @strawberry.field(description="The organisation's webhook endpoints, oldest first. Users only.")
    async def webhook_endpoints(self, info: Info) -> list[WebhookEndpoint]:
        return [WebhookEndpoint.from_model(e) for e in await service.list_endpoints(await info.context.db())]

    @strawberry.field(description="One endpoint; null for an unknown id or another organisation's. Users only.")
    async def webhook_endpoint(
        self, info: Info, id: Annotated[strawberry.ID, strawberry.argument(description="Endpoint id.")]
    ) -> WebhookEndpoint | None:
        endpoint = await service.find_endpoint(await info.context.db(), str(id))
        return WebhookEndpoint.from_model(endpoint) if endpoint else None

    @strawberry.field(
        description="Webhook deliveries, newest first, each with its attempts. Owners, admins and full-scope API keys."
    )
    async def webhook_deliveries(
        self,
        info: Info,
        filter: Annotated[WebhookDeliveryFilter | None, strawberry.argument(description="What to list.")] = None,
        first: First = None,
        after: After = None,
        last: Last = None,
        before: Before = None,
    ) -> WebhookDeliveryConnection:
        return await _page(info, filter, first, after, last, before)

    @strawberry.field(description="One delivery with its attempts; null for an unknown id or another organisation's.")
    async def webhook_delivery(
        self, info: Info, id: Annotated[strawberry.ID, strawberry.argument(description="Delivery id.")]
    ) -> WebhookDelivery | None:
        session = await info.context.db()
        delivery = await service.find_delivery(session, str(id))
        if delivery is None:
            return None
        return WebhookDelivery.from_model(delivery, (await service.attempts_of(session, [delivery.id]))[delivery.id])


@strawberry.type
class WebhooksMutation:
    @strawberry.mutation(
        description=(
            "Register an endpoint. Owners and admins (API keys: FORBIDDEN). Returns its signing secret once. "
            "BAD_USER_INPUT for a bad URL, an internal address or an unknown event; QUOTA_EXCEEDED over the plan."
        )
    )
    async def create_webhook_endpoint(
        self,
        info: RequestInfo,
        input: Annotated[CreateWebhookEndpointInput, strawberry.argument(description="The new endpoint.")],
    ) -> WebhookEndpointWithSecret:
        principal = await info.context.principal()
        runtime = info.context.runtime
        endpoint, secret = await service.create_endpoint(
            await info.context.db(),
            principal,
            url=input.url,
            events=input.events,
            description=input.description,
            enabled=input.enabled,
            settings=runtime.settings,
            secret_key=runtime.secret_key,
            source_ip=info.context.source_ip,
        )
        return WebhookEndpointWithSecret(endpoint=WebhookEndpoint.from_model(endpoint), secret=secret)

    @strawberry.mutation(description="Change an endpoint. Owners and admins; NOT_FOUND for unknown ids.")
    async def update_webhook_endpoint(
        self,
        info: RequestInfo,
        id: Annotated[strawberry.ID, strawberry.argument(description="Endpoint id.")],
        input: Annotated[UpdateWebhookEndpointInput, strawberry.argument(description="Fields to change.")],
    ) -> WebhookEndpoint:
        principal = await info.context.principal()
        endpoint = await service.update_endpoint(
            await info.context.db(),
            principal,
            str(id),
            url=input.url,
            events=input.events,
            description=input.description,
            enabled=input.enabled,
            settings=info.context.runtime.settings,
            source_ip=info.context.source_ip,
        )
        return WebhookEndpoint.from_model(endpoint)

    @strawberry.mutation(description="Delete an endpoint with its deliveries. Owners and admins.")
    async def delete_webhook_endpoint(
        self, info: RequestInfo, id: Annotated[strawberry.ID, strawberry.argument(description="Endpoint id.")]
    ) -> WebhookEndpoint:
        principal = await info.context.principal()
        endpoint = await service.delete_endpoint(
            await info.context.db(), principal, str(id), source_ip=info.context.source_ip
        )
        return WebhookEndpoint.from_model(endpoint)

    @strawberry.mutation(
        description=(
            "Replace the signing secret; the new one is returned once. The old one keeps signing (both "
            "signatures are sent) for 24 hours. Owners and admins."
        )
    )
    async def rotate_webhook_secret(
        self, info: RequestInfo, id: Annotated[strawberry.ID, strawberry.argument(description="Endpoint id.")]
    ) -> WebhookEndpointWithSecret:
        principal = await info.context.principal()
        runtime = info.context.runtime
        endpoint, secret = await service.rotate_secret(
            await info.context.db(),
            principal,
            str(id),
            settings=runtime.settings,
            secret_key=runtime.secret_key,
            source_ip=info.context.source_ip,
        )
        return WebhookEndpointWithSecret(endpoint=WebhookEndpoint.from_model(endpoint), secret=secret)

    @strawberry.mutation(
        description=(
            "Send a `test` event to an endpoint (signed) or to a bare URL (unsigned), asynchronously; returns "
            "the delivery. Owners, admins and full-scope API keys."
        )
    )
    async def send_test_webhook(
        self,
        info: RequestInfo,
        endpoint_id: Annotated[
            strawberry.ID | None, strawberry.argument(description="The endpoint (or give `url`).")
        ] = None,
        url: Annotated[str | None, strawberry.argument(description="A URL to try (or give `endpointId`).")] = None,
        payload: Annotated[
            JSON | None, strawberry.argument(description="The event's `data`: a JSON object of at most 64 KB.")
        ] = None,
    ) -> WebhookDelivery:
        principal = await info.context.principal()
        session = await info.context.db()
        delivery = await service.send_test(
            session,
            principal,
            endpoint_id=str(endpoint_id) if endpoint_id is not None else None,
            url=url,
            payload=payload,
            settings=info.context.runtime.settings,
            source_ip=info.context.source_ip,
        )
        return WebhookDelivery.from_model(delivery)

    @strawberry.mutation(
        description=(
            "Start a new attempt cycle for a delivered, dead-lettered or failed delivery (same event id). "
            "CONFLICT while it is pending or sending, or when its endpoint is disabled. Owners and admins."
        )
    )
    async def redeliver_webhook(
        self, info: RequestInfo, delivery_id: Annotated[strawberry.ID, strawberry.argument(description="Delivery id.")]
    ) -> WebhookDelivery:
        principal = await info.context.principal()
        session = await info.context.db()
        delivery = await service.redeliver(session, principal, str(delivery_id), source_ip=info.context.source_ip)
        attempts = await service.attempts_of(session, [delivery.id])
        return WebhookDelivery.from_model(delivery, attempts[delivery.id])
