"""POST /api/v1/billing/webhook: signatures, replays, out-of-order events, the plan they set."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import sqlalchemy as sa

from billing.stripe_stub import (
    PRICE_BUSINESS,
    PRICE_PRO,
    event,
    invoice,
    now,
    send_event,
    sign,
    subscription,
)
from support import gql, register


async def _rows(runtime, sql: str, **params):
    async with runtime.db.engine.connect() as conn:
        return (await conn.execute(sa.text(sql), params)).all()


async def _customer(client, runtime, owner) -> str:
    """Checkout once, so the organisation has its Stripe customer."""
    result = await gql(client, "CreateCheckoutSession", {"priceId": PRICE_PRO}, token=owner.token)
    assert "errors" not in result, result
    (row,) = await _rows(runtime, "SELECT stripe_customer_id FROM billing_accounts WHERE org_id = :o", o=owner.org_id)
    return row.stripe_customer_id


async def _billing(client, owner) -> dict:
    result = await gql(client, "Billing", token=owner.token)
    assert "errors" not in result, result
    return result["data"]["billing"]


async def test_subscription_lifecycle(make_client, runtime):
    client = await make_client()
    owner = await register(client)
    customer = await _customer(client, runtime, owner)
    t = now()

    completed = {
        "id": "cs_test_1",
        "object": "checkout.session",
        "mode": "subscription",
        "customer": customer,
        "subscription": "sub_1",
        "client_reference_id": owner.org_id,
        "metadata": {"org_id": owner.org_id, "plan": "pro"},
    }
    response = await send_event(client, event("checkout.session.completed", completed, created=t))
    assert response.status_code == 200, response.text
    assert (await _billing(client, owner))["plan"] == "FREE"  # the subscription event sets the plan

    period_end = t + 30 * 86400
    created = subscription("sub_1", customer, org_id=owner.org_id, period_end=period_end)
    response = await send_event(client, event("customer.subscription.created", created, created=t))
    assert response.json() == {"received": True, "duplicate": False, "outcome": "applied"}
    billing = await _billing(client, owner)
    assert billing["plan"] == "PRO" and billing["status"] == "ACTIVE"
    assert billing["usage"]["limit"] == 1_000_000 and billing["limits"]["apiKeys"] == 25
    assert billing["currentPeriodEnd"] == datetime.fromtimestamp(period_end, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")

    cancelling = subscription("sub_1", customer, cancel_at_period_end=True, period_end=period_end)
    await send_event(client, event("customer.subscription.updated", cancelling, created=t + 10))
    billing = await _billing(client, owner)
    assert billing["plan"] == "PRO" and billing["cancelAtPeriodEnd"] is True

    past_due = subscription("sub_1", customer, status="past_due", period_end=period_end)
    await send_event(client, event("customer.subscription.updated", past_due, created=t + 20))
    await send_event(
        client, event("invoice.payment_failed", invoice("in_1", customer, "sub_1", paid=False), created=t + 20)
    )
    billing = await _billing(client, owner)
    assert billing["plan"] == "PRO" and billing["status"] == "PAST_DUE" and billing["paymentFailed"] is True

    await send_event(client, event("invoice.paid", invoice("in_1", customer, "sub_1", paid=True), created=t + 30))
    await send_event(client, event("customer.subscription.updated", subscription("sub_1", customer), created=t + 30))
    billing = await _billing(client, owner)
    assert billing["status"] == "ACTIVE" and billing["paymentFailed"] is False

    deleted = subscription("sub_1", customer, status="canceled", period_end=period_end)
    await send_event(client, event("customer.subscription.deleted", deleted, created=t + 40))
    billing = await _billing(client, owner)
    assert billing["plan"] == "FREE" and billing["status"] == "CANCELED"
    assert billing["usage"]["limit"] == 10_000

    actions = [
        r.action
        for r in await _rows(
            runtime, "SELECT action FROM activity_events WHERE actor_type = 'system' ORDER BY occurred_at, id"
        )
    ]
    assert actions == [
        "billing.checkout_completed",
        "billing.subscription.created",
        "billing.subscription.updated",
        "billing.subscription.updated",
        "billing.invoice_payment_failed",
        "billing.invoice_paid",
        "billing.subscription.updated",
        "billing.subscription.deleted",
    ]
    outcomes = {r.outcome for r in await _rows(runtime, "SELECT outcome FROM stripe_events")}
    assert outcomes == {"applied"}


async def test_a_replayed_event_is_processed_once(make_client, runtime):
    client = await make_client()
    owner = await register(client)
    customer = await _customer(client, runtime, owner)
    created = event("customer.subscription.created", subscription("sub_1", customer), created=now())
    first = await send_event(client, created)
    again = await send_event(client, created)
    assert first.json()["duplicate"] is False and again.status_code == 200 and again.json()["duplicate"] is True
    assert len(await _rows(runtime, "SELECT id FROM stripe_events")) == 1
    subscription_activity = await _rows(
        runtime, "SELECT id FROM activity_events WHERE action LIKE 'billing.subscription%'"
    )
    assert len(subscription_activity) == 1


async def test_a_late_older_event_does_not_undo_a_newer_one(make_client, runtime):
    client = await make_client()
    owner = await register(client)
    customer = await _customer(client, runtime, owner)
    t = now()
    newer = event("customer.subscription.updated", subscription("sub_1", customer, price=PRICE_BUSINESS), created=t)
    older = event("customer.subscription.updated", subscription("sub_1", customer, price=PRICE_PRO), created=t - 60)
    oldest = event(
        "customer.subscription.created", subscription("sub_1", customer, status="incomplete"), created=t - 90
    )
    assert (await send_event(client, newer)).json()["outcome"] == "applied"
    assert (await send_event(client, older)).json()["outcome"] == "stale"
    assert (await send_event(client, oldest)).json()["outcome"] == "stale"
    billing = await _billing(client, owner)
    assert billing["plan"] == "BUSINESS" and billing["status"] == "ACTIVE"

    # deleted, then a late update: a canceled subscription stays canceled
    deleted = event("customer.subscription.deleted", subscription("sub_1", customer, status="canceled"), created=t + 10)
    late = event("customer.subscription.updated", subscription("sub_1", customer), created=t + 5)
    assert (await send_event(client, deleted)).json()["outcome"] == "applied"
    assert (await send_event(client, late)).json()["outcome"] == "stale"
    same_second = event("customer.subscription.updated", subscription("sub_1", customer), created=t + 10)
    assert (await send_event(client, same_second)).json()["outcome"] == "stale"
    billing = await _billing(client, owner)
    assert billing["plan"] == "FREE" and billing["status"] == "CANCELED"

    # a new subscription after the canceled one applies
    fresh = event("customer.subscription.created", subscription("sub_2", customer), created=t + 20)
    assert (await send_event(client, fresh)).json()["outcome"] == "applied"
    # ... and a late deletion of an old, other subscription does not cancel it
    other = event("customer.subscription.deleted", subscription("sub_0", customer, status="canceled"), created=t + 30)
    assert (await send_event(client, other)).json()["outcome"] == "stale"
    billing = await _billing(client, owner)
    assert billing["plan"] == "PRO" and billing["status"] == "ACTIVE"


async def test_same_second_events_keep_the_later_life_cycle_state(make_client, runtime):
    client = await make_client()
    owner = await register(client)
    customer = await _customer(client, runtime, owner)
    t = now()
    active = event("customer.subscription.updated", subscription("sub_1", customer), created=t)
    incomplete = event("customer.subscription.created", subscription("sub_1", customer, status="incomplete"), created=t)
    await send_event(client, active)
    assert (await send_event(client, incomplete)).json()["outcome"] == "stale"
    assert (await _billing(client, owner))["plan"] == "PRO"


async def test_invoices_out_of_order(make_client, runtime):
    client = await make_client()
    owner = await register(client)
    customer = await _customer(client, runtime, owner)
    t = now()
    await send_event(client, event("customer.subscription.created", subscription("sub_1", customer), created=t))
    failed = event("invoice.payment_failed", invoice("in_2", customer, "sub_1", paid=False), created=t + 20)
    paid_earlier = event("invoice.paid", invoice("in_1", customer, "sub_1", paid=True), created=t + 10)
    await send_event(client, failed)
    assert (await send_event(client, paid_earlier)).json()["outcome"] == "stale"
    assert (await _billing(client, owner))["paymentFailed"] is True


async def test_legacy_api_shape_and_metadata_only_organisation(make_client):
    """Events of API versions before 2025-03-31 (period end on the subscription); an organisation known only
    from the metadata we put on the subscription (its customer not stored yet)."""
    client = await make_client()
    owner = await register(client)
    sub = subscription("sub_9", "cus_elsewhere", price=PRICE_BUSINESS, org_id=owner.org_id, legacy=True)
    response = await send_event(client, event("customer.subscription.created", sub, created=now()))
    assert response.json()["outcome"] == "applied"
    billing = await _billing(client, owner)
    assert billing["plan"] == "BUSINESS" and billing["currentPeriodEnd"] is not None


async def test_events_for_no_organisation_and_other_types_are_acknowledged(make_client, runtime):
    client = await make_client()
    unknown = event("customer.subscription.created", subscription("sub_x", "cus_nobody"), created=now())
    response = await send_event(client, unknown)
    assert response.status_code == 200 and response.json()["outcome"] == "unknown_org"
    forged_org = subscription("sub_y", "cus_nobody", org_id="org_does_not_exist")
    response = await send_event(client, event("customer.subscription.updated", forged_org, created=now()))
    assert response.json()["outcome"] == "unknown_org"
    other = await send_event(client, event("charge.refunded", {"id": "ch_1", "object": "charge"}, created=now()))
    assert other.status_code == 200 and other.json()["outcome"] == "ignored"
    assert len(await _rows(runtime, "SELECT id FROM stripe_events")) == 3
    assert await _rows(runtime, "SELECT org_id FROM billing_accounts") == []


async def test_bad_signatures_are_rejected_and_nothing_is_written(make_client, runtime):
    client = await make_client()
    owner = await register(client)
    body = event("customer.subscription.created", subscription("sub_1", "cus_x", org_id=owner.org_id), created=now())
    payload = json.dumps(body).encode()

    async def post(headers):
        return await client.post("/api/v1/billing/webhook", content=payload, headers=headers)

    cases = {
        "missing": {},
        "garbage": {"Stripe-Signature": "nonsense"},
        "wrong secret": {"Stripe-Signature": sign(payload, secret="whsec_other")},
        "too old": {"Stripe-Signature": sign(payload, timestamp=now() - 301)},
        # the tolerance applies both ways: a signature dated ahead would otherwise stay replayable
        "ten minutes ahead": {"Stripe-Signature": sign(payload, timestamp=now() + 600)},
        "tampered": {"Stripe-Signature": sign(payload.replace(b"sub_1", b"sub_2"))},
        "no v1": {"Stripe-Signature": sign(payload).replace("v1=", "v0=")},
    }
    for name, headers in cases.items():
        response = await post(headers)
        assert response.status_code == 400, name
        assert response.json()["code"] == "BAD_USER_INPUT", name
    not_json = b"not json"
    response = await client.post(
        "/api/v1/billing/webhook", content=not_json, headers={"Stripe-Signature": sign(not_json)}
    )
    assert response.status_code == 400
    assert await _rows(runtime, "SELECT id FROM stripe_events") == []
    assert await _rows(runtime, "SELECT org_id FROM billing_accounts") == []
    assert await _rows(runtime, "SELECT id FROM activity_events WHERE action LIKE 'billing.%'") == []

    # within the tolerance, an older signature is fine
    ok = await post({"Stripe-Signature": sign(payload, timestamp=now() - 250)})
    assert ok.status_code == 200


async def test_upgrading_raises_the_limits_at_once(make_client, runtime):
    """The plan the webhook sets is what the limits use next: the API key limit here."""
    client = await make_client()
    owner = await register(client)
    customer = await _customer(client, runtime, owner)
    for i in range(2):
        assert "errors" not in await gql(client, "CreateApiKey", {"name": f"k{i}"}, token=owner.token)
    refused = await gql(client, "CreateApiKey", {"name": "k2"}, token=owner.token)
    assert refused["errors"][0]["extensions"]["code"] == "QUOTA_EXCEEDED"
    await send_event(client, event("customer.subscription.created", subscription("sub_1", customer), created=now()))
    assert "errors" not in await gql(client, "CreateApiKey", {"name": "k2"}, token=owner.token)
