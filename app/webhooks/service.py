"""Operations of the webhooks domain: endpoints, emitting events into the outbox, reading and redelivering.

Management (endpoints, secrets, tests, redeliveries) is for owners and admins; API keys get FORBIDDEN. Each
of those writes an activity event in its transaction. Sessions are tenant sessions, so another organisation's
endpoint or delivery is indistinguishable from an unknown one (NOT_FOUND).

Any domain emits events with `emit_event(session, type, data)` inside its own transaction; the deliveries it
wrote are queued once that transaction commits (an after-commit effect of its unit of work), so they go out
at once; if that enqueue is lost, the worker's sweeper sends them within a minute.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
import structlog
from sqlalchemy.dialects.postgresql import array
from sqlmodel import col, select

from app import unit_of_work
from app.activity.service import record_activity
from app.db import SYSTEM, AsyncSession, TenancyError, iso, new_id, session_org, utcnow, within
from app.errors import BadUserInput, Conflict, NotFound
from app.inputs import check_json_object
from app.pagination import PageRequest
from app.principal import Principal
from app.settings import Settings
from app.usage import quota as billing_quota
from app.webhooks import secretbox, signing, ssrf
from app.webhooks.models import (
    DEAD_LETTERED,
    DELIVERED,
    FAILED,
    PENDING,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from app.webhooks.outbox import TEST_EVENT

log = structlog.get_logger(__name__)

EVENT_TYPES = (
    "alert.created",
    "alert.resolved",
    "policy.version_created",
    "report.ready",
    "export.ready",
    "audit.digest_sealed",
    TEST_EVENT,
)
ALL_EVENTS = "*"
MAX_DESCRIPTION_LENGTH = 500
MAX_TEST_PAYLOAD_BYTES = 64 * 1024
DELIVERY_JOB = "deliver_webhooks"


# --- validation --------------------------------------------------------------------------------
def check_events(events: Iterable[str]) -> list[str]:
    """Known event names, or `*`; at least one. Sorted, without repeats."""
    names = sorted({e.strip() for e in events})
    if not names:
        raise BadUserInput("events must name at least one event (or `*` for all)", field="events")
    unknown = [n for n in names if n != ALL_EVENTS and n not in EVENT_TYPES]
    if unknown:
        raise BadUserInput(
            f"unknown event(s): {', '.join(unknown[:10])}; known: {', '.join(EVENT_TYPES)}, or `*` for all",
            field="events",
            unknown=unknown[:10],
        )
    return [ALL_EVENTS] if ALL_EVENTS in names else names


def check_description(value: str | None) -> str:
    value = (value or "").strip()
    if len(value) > MAX_DESCRIPTION_LENGTH:
        raise BadUserInput(f"description must be at most {MAX_DESCRIPTION_LENGTH} characters", field="description")
    if any(unicodedata.category(ch) == "Cc" and ch not in "\n\t" for ch in value):
        raise BadUserInput("description must not contain control characters", field="description")
    return value


async def check_url(url: str, settings: Settings, *, resolver: ssrf.Resolver = ssrf.system_resolve) -> str:
    """https (http outside production), and a host whose every address is allowed (see `ssrf`)."""
    url = url.strip()
    try:
        await ssrf.check_url(
            url,
            require_https=settings.is_production,
            allow_private=settings.webhook_allow_private_targets,
            resolver=resolver,
        )
    except ssrf.UnsafeTarget as exc:
        raise BadUserInput(f"url refused: {exc}", field="url") from None
    return url


def _payload_data(value: Any) -> dict[str, Any]:
    if value is None:
        return {"message": "A test event from Agentrail."}
    return check_json_object(value, field="payload", max_bytes=MAX_TEST_PAYLOAD_BYTES)


def shown_url(url: str | None) -> str | None:
    """The URL as the activity trail shows it: receivers put tokens in query strings, so none is copied."""
    if url is None:
        return None
    base, query = url.split("?", 1) if "?" in url else (url, "")
    return f"{base}?[REDACTED]" if query else base


# --- endpoints ---------------------------------------------------------------------------------
async def count_endpoints(session: AsyncSession) -> int:
    return int((await session.exec(select(sa.func.count()).select_from(WebhookEndpoint))).one())


async def create_endpoint(
    session: AsyncSession,
    principal: Principal,
    *,
    url: str,
    events: Sequence[str],
    description: str | None = None,
    enabled: bool = True,
    settings: Settings,
    secret_key: str,
    source_ip: str | None = None,
) -> tuple[WebhookEndpoint, str]:
    """Returns the endpoint and its signing secret: shown now and never again (rotate to get a new one)."""
    checked_events = check_events(events)
    checked_description = check_description(description)
    checked_url = await check_url(url, settings)
    await billing_quota.require_capacity(
        session, principal.org_id, "webhook_endpoints", count=lambda: count_endpoints(session), settings=settings
    )
    secret = signing.generate_secret()
    endpoint_id = new_id("whk")
    endpoint = WebhookEndpoint(
        id=endpoint_id,
        org_id=principal.org_id,
        url=checked_url,
        description=checked_description,
        events=checked_events,
        enabled=enabled,
        secret_encrypted=secretbox.seal(secret, secret_key, context=endpoint_id),
        created_by=principal.actor_id,
    )
    session.add(endpoint)
    record_activity(
        session,
        principal,
        "webhook_endpoint.created",
        target_type="webhook_endpoint",
        target_id=endpoint.id,
        target_name=shown_url(endpoint.url),
        metadata={"url": shown_url(endpoint.url), "events": checked_events, "enabled": enabled},
        source_ip=source_ip,
    )
    await session.flush()
    return endpoint, secret


async def find_endpoint(session: AsyncSession, endpoint_id: str, *, lock: bool = False) -> WebhookEndpoint | None:
    query = select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)
    return (await session.exec(query.with_for_update() if lock else query)).first()


async def get_endpoint(session: AsyncSession, endpoint_id: str, *, lock: bool = False) -> WebhookEndpoint:
    endpoint = await find_endpoint(session, endpoint_id, lock=lock)
    if endpoint is None:
        raise NotFound("webhook endpoint not found", id=endpoint_id)
    return endpoint


async def list_endpoints(session: AsyncSession) -> list[WebhookEndpoint]:
    """Oldest first; a plan allows at most a few dozen."""
    query = select(WebhookEndpoint).order_by(col(WebhookEndpoint.created_at), col(WebhookEndpoint.id))
    return list((await session.exec(query)).all())


async def update_endpoint(
    session: AsyncSession,
    principal: Principal,
    endpoint_id: str,
    *,
    url: str | None = None,
    description: str | None = None,
    events: Sequence[str] | None = None,
    enabled: bool | None = None,
    settings: Settings,
    source_ip: str | None = None,
) -> WebhookEndpoint:
    """`None` leaves a field as it is. Enabling an endpoint clears its failure state."""
    new_events = check_events(events) if events is not None else None
    new_description = check_description(description) if description is not None else None
    new_url = await check_url(url, settings) if url is not None else None
    endpoint = await get_endpoint(session, endpoint_id, lock=True)
    changes: dict[str, Any] = {}
    if new_url is not None and new_url != endpoint.url:
        changes["url"] = {"from": shown_url(endpoint.url), "to": shown_url(new_url)}
        endpoint.url = new_url
    if new_description is not None and new_description != endpoint.description:
        changes["description"] = {"from": endpoint.description, "to": new_description}
        endpoint.description = new_description
    if new_events is not None and new_events != endpoint.events:
        changes["events"] = {"from": endpoint.events, "to": new_events}
        endpoint.events = new_events
    if enabled is not None and enabled != endpoint.enabled:
        changes["enabled"] = {"from": endpoint.enabled, "to": enabled}
        endpoint.enabled = enabled
        if enabled:
            endpoint.failing_since = None
            endpoint.disabled_reason = None
    if not changes:
        return endpoint
    endpoint.updated_at = utcnow()
    record_activity(
        session,
        principal,
        "webhook_endpoint.updated",
        target_type="webhook_endpoint",
        target_id=endpoint.id,
        target_name=shown_url(endpoint.url),
        metadata={"fields": list(changes), "changes": changes},
        source_ip=source_ip,
    )
    await session.flush()
    return endpoint


async def delete_endpoint(
    session: AsyncSession, principal: Principal, endpoint_id: str, *, source_ip: str | None = None
) -> WebhookEndpoint:
    """Deletes the endpoint with its deliveries and their attempts (the activity trail keeps the deletion)."""
    endpoint = await get_endpoint(session, endpoint_id, lock=True)
    record_activity(
        session,
        principal,
        "webhook_endpoint.deleted",
        target_type="webhook_endpoint",
        target_id=endpoint.id,
        target_name=shown_url(endpoint.url),
        metadata={"url": shown_url(endpoint.url), "events": endpoint.events},
        source_ip=source_ip,
    )
    await session.delete(endpoint)
    await session.flush()
    return endpoint


async def rotate_secret(
    session: AsyncSession,
    principal: Principal,
    endpoint_id: str,
    *,
    settings: Settings,
    secret_key: str,
    now: datetime | None = None,
    source_ip: str | None = None,
) -> tuple[WebhookEndpoint, str]:
    """A new secret (returned once). The one it replaces keeps signing, beside the new one, for
    `webhook_secret_grace_hours` (24 h), so receivers can switch without missing a message."""
    now = now or utcnow()
    endpoint = await get_endpoint(session, endpoint_id, lock=True)
    secret = signing.generate_secret()
    endpoint.previous_secret_encrypted = endpoint.secret_encrypted
    endpoint.previous_secret_expires_at = now + timedelta(hours=settings.webhook_secret_grace_hours)
    endpoint.secret_encrypted = secretbox.seal(secret, secret_key, context=endpoint.id)
    endpoint.secret_rotated_at = now
    endpoint.updated_at = now
    record_activity(
        session,
        principal,
        "webhook_endpoint.secret_rotated",
        target_type="webhook_endpoint",
        target_id=endpoint.id,
        target_name=shown_url(endpoint.url),
        metadata={"previousSecretExpiresAt": iso(endpoint.previous_secret_expires_at)},
        source_ip=source_ip,
    )
    await session.flush()
    return endpoint, secret


# --- emitting events (the outbox) ----------------------------------------------------------------
def event_body(event_id: str, event_type: str, data: dict[str, Any], created_at: datetime) -> str:
    """`{id, type, createdAt, data}`: serialised once, so every attempt sends (and signs) the same bytes."""
    envelope = {"id": event_id, "type": event_type, "createdAt": created_at, "data": data}
    return orjson.dumps(envelope, default=_time_text, option=_EVENT_OPTIONS).decode()


# every time in an event, wherever in `data` it is, written as the API writes times (`app.db.iso`)
_EVENT_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS


def _time_text(value: Any) -> str:
    if isinstance(value, datetime):
        return iso(value)  # type: ignore[return-value]
    raise TypeError(f"{type(value).__name__} is not JSON")


async def emit_events(
    session: AsyncSession,
    events: Sequence[tuple[str, dict[str, Any]]],
    *,
    org_id: str | None = None,
    now: datetime | None = None,
) -> list[WebhookDelivery]:
    """Writes one PENDING delivery per (event, subscribed enabled endpoint) into the caller's transaction; the
    caller's commit queues them. One query finds the endpoints (none: nothing else runs),
    one inserts the deliveries. `org_id` defaults to the session's organisation (required in a system session)."""
    if not events:
        return []
    scope = session_org(session)
    if scope not in (None, SYSTEM) and org_id not in (None, scope):
        raise TenancyError("a tenant session emits only its own organisation's events")
    org_id = org_id or (scope if scope != SYSTEM else None)
    if not org_id:
        raise ValueError("emit_events needs the organisation (pass org_id in a system session)")
    types = sorted({t for t, _ in events})
    unknown = [t for t in types if t not in EVENT_TYPES]
    if unknown:
        raise ValueError(f"unknown webhook event type(s): {unknown}")
    subscribed = (
        await session.exec(
            select(WebhookEndpoint.id, WebhookEndpoint.events).where(
                WebhookEndpoint.org_id == org_id,
                col(WebhookEndpoint.enabled).is_(True),
                WebhookEndpoint.events.has_any(array([*types, ALL_EVENTS])),  # type: ignore[attr-defined]
            )
        )
    ).all()
    if not subscribed:
        return []
    now = now or utcnow()
    rows: list[dict[str, Any]] = []
    for event_type, data in events:
        event_id = new_id("evt")
        body = event_body(event_id, event_type, data, now)
        for endpoint_id, endpoint_events in subscribed:
            if ALL_EVENTS in endpoint_events or event_type in endpoint_events:
                rows.append(_delivery_row(org_id, endpoint_id, None, event_id, event_type, body, now))
    await session.execute(sa.insert(WebhookDelivery), rows)
    _note_emitted(session, [r["id"] for r in rows])
    return [WebhookDelivery(**r) for r in rows]


async def emit_event(
    session: AsyncSession,
    event_type: str,
    data: dict[str, Any],
    *,
    org_id: str | None = None,
    now: datetime | None = None,
) -> list[WebhookDelivery]:
    """One event; see `emit_events`."""
    return await emit_events(session, [(event_type, data)], org_id=org_id, now=now)


def _delivery_row(
    org_id: str,
    endpoint_id: str | None,
    url: str | None,
    event_id: str,
    event_type: str,
    body: str,
    now: datetime,
) -> dict[str, Any]:
    return {
        "id": new_id("dlv"),
        "org_id": org_id,
        "endpoint_id": endpoint_id,
        "url": url,
        "event_id": event_id,
        "event_type": event_type,
        "body": body,
        "status": PENDING,
        "attempt_count": 0,
        "next_attempt_at": now,
        "created_at": now,
        "updated_at": now,
    }


def _note_emitted(session: AsyncSession, ids: Sequence[str]) -> None:
    """Queued, in one job per transaction, once the transaction that wrote them commits."""
    unit_of_work.collect(session, DELIVERY_JOB, _enqueue_committed).extend(ids)


async def _enqueue_committed(runtime: Any, ids: list[str]) -> None:
    await enqueue_deliveries(runtime.queue, ids)


async def enqueue_deliveries(queue: Any, ids: Sequence[str], *, defer_until: datetime | None = None) -> None:
    """Asks the worker to send these deliveries now (or at `defer_until`). Best effort: when Redis is
    unavailable the sweeper sends them within a minute, since the rows are the truth."""
    if not ids:
        return
    try:
        await queue.enqueue_job(DELIVERY_JOB, list(ids), _defer_until=defer_until)
    except Exception:
        log.warning("could not queue webhook deliveries; the sweeper will send them", exc_info=True, count=len(ids))


# --- deliveries ----------------------------------------------------------------------------------
@dataclass
class DeliveryQuery:
    statuses: list[str] | None = None
    endpoint_id: str | None = None
    event_types: list[str] | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None


def _delivery_conditions(query: DeliveryQuery) -> list[Any]:
    conditions: list[Any] = []
    if query.statuses:  # GraphQL's DeliveryStatus enum admits only known ones
        conditions.append(col(WebhookDelivery.status).in_(query.statuses))
    if query.endpoint_id:
        conditions.append(WebhookDelivery.endpoint_id == query.endpoint_id)
    if query.event_types:
        conditions.append(col(WebhookDelivery.event_type).in_(query.event_types))
    conditions += within(WebhookDelivery.created_at, query.created_from, query.created_to)
    return conditions


async def list_deliveries(session: AsyncSession, query: DeliveryQuery, *, page: PageRequest) -> list[WebhookDelivery]:
    """Newest first; keyset pagination on (created_at, id)."""
    stmt = select(WebhookDelivery).where(*_delivery_conditions(query))
    stmt = page.apply(stmt, col(WebhookDelivery.created_at), col(WebhookDelivery.id))
    return list((await session.exec(stmt)).all())


async def count_deliveries(session: AsyncSession, query: DeliveryQuery) -> int:
    stmt = select(sa.func.count()).select_from(WebhookDelivery).where(*_delivery_conditions(query))
    return int((await session.exec(stmt)).one())


async def attempts_of(session: AsyncSession, delivery_ids: Iterable[str]) -> dict[str, list[WebhookAttempt]]:
    """Every attempt of these deliveries, oldest first, in one query."""
    ids = list(set(delivery_ids))
    out: dict[str, list[WebhookAttempt]] = {i: [] for i in ids}
    if ids:
        stmt = (
            select(WebhookAttempt)
            .where(col(WebhookAttempt.delivery_id).in_(ids))
            .order_by(col(WebhookAttempt.attempted_at), col(WebhookAttempt.id))
        )
        for attempt in (await session.exec(stmt)).all():
            out[attempt.delivery_id].append(attempt)
    return out


async def find_delivery(session: AsyncSession, delivery_id: str, *, lock: bool = False) -> WebhookDelivery | None:
    query = select(WebhookDelivery).where(WebhookDelivery.id == delivery_id)
    return (await session.exec(query.with_for_update() if lock else query)).first()


async def redeliver(
    session: AsyncSession,
    principal: Principal,
    delivery_id: str,
    *,
    now: datetime | None = None,
    source_ip: str | None = None,
) -> WebhookDelivery:
    """Starts a new attempt cycle (same event id, body and `webhook-id`, so receivers can deduplicate) for a
    delivered, dead-lettered or failed (waiting to retry) delivery; CONFLICT while it is pending or sending,
    or when its endpoint is disabled. Queued once the caller's transaction commits."""
    now = now or utcnow()
    delivery = await find_delivery(session, delivery_id, lock=True)
    if delivery is None:
        raise NotFound("webhook delivery not found", id=delivery_id)
    if delivery.status not in (DELIVERED, DEAD_LETTERED, FAILED):
        raise Conflict(f"the delivery is {delivery.status}: it is already on its way", status=delivery.status)
    if delivery.endpoint_id is not None and delivery.event_type != TEST_EVENT:
        endpoint = await get_endpoint(session, delivery.endpoint_id)
        if not endpoint.enabled:
            raise Conflict("the endpoint is disabled: enable it first", endpointId=endpoint.id)
    previous = delivery.status
    delivery.status = PENDING
    delivery.attempt_count = 0
    delivery.next_attempt_at = now
    delivery.delivered_at = None
    delivery.updated_at = now
    record_activity(
        session,
        principal,
        "webhook.redelivered",
        target_type="webhook_delivery",
        target_id=delivery.id,
        metadata={"eventType": delivery.event_type, "endpointId": delivery.endpoint_id, "previousStatus": previous},
        source_ip=source_ip,
    )
    _note_emitted(session, [delivery.id])  # queued once this commits
    await session.flush()
    return delivery


async def send_test(
    session: AsyncSession,
    principal: Principal,
    *,
    endpoint_id: str | None = None,
    url: str | None = None,
    payload: Any = None,
    settings: Settings,
    source_ip: str | None = None,
) -> WebhookDelivery:
    """A `test` event to one endpoint (signed; disabled endpoints too, to check them before enabling) or to a
    bare URL (unsigned: no secret exists yet). Sent asynchronously; returns the PENDING delivery."""
    if (endpoint_id is None) == (url is None):
        raise BadUserInput("give either endpointId or url", field="endpointId")
    data = _payload_data(payload)
    checked_url = await check_url(url, settings) if url is not None else None
    if endpoint_id is not None:
        await get_endpoint(session, endpoint_id)
    now = utcnow()
    event_id = new_id("evt")
    row = _delivery_row(
        principal.org_id,
        endpoint_id,
        checked_url,
        event_id,
        TEST_EVENT,
        event_body(event_id, TEST_EVENT, data, now),
        now,
    )
    delivery = WebhookDelivery(**row)
    session.add(delivery)
    record_activity(
        session,
        principal,
        "webhook.test_sent",
        target_type="webhook_delivery",
        target_id=delivery.id,
        metadata={"endpointId": endpoint_id, "url": shown_url(checked_url)},
        source_ip=source_ip,
    )
    _note_emitted(session, [delivery.id])  # queued once this commits
    await session.flush()
    return delivery


__all__ = [
    "ALL_EVENTS",
    "EVENT_TYPES",
    "DeliveryQuery",
    "emit_event",
    "emit_events",
    "enqueue_deliveries",
]
