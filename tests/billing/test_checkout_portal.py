"""Billing overview, Checkout and Portal sessions through the real `stripe` library against a local Stripe."""

from __future__ import annotations

import sqlalchemy as sa

from billing.stripe_stub import PRICE_BUSINESS, PRICE_PRO
from support import add_user, create_api_key, error_code, gql, register


async def _rows(runtime, sql: str, **params):
    async with runtime.db.engine.connect() as conn:
        return (await conn.execute(sa.text(sql), params)).all()


async def test_billing_overview_of_a_new_organisation(make_client, runtime):
    client = await make_client()
    owner = await register(client)
    result = await gql(client, "Billing", token=owner.token)
    assert "errors" not in result, result
    billing = result["data"]["billing"]
    assert billing["configured"] is True and billing["limitsEnforced"] is True
    assert billing["plan"] == "FREE" and billing["status"] is None
    assert billing["currentPeriodEnd"] is None and billing["cancelAtPeriodEnd"] is False
    assert billing["prices"] == {"pro": PRICE_PRO, "business": PRICE_BUSINESS}
    assert billing["usage"]["recordsThisPeriod"] == 0
    assert billing["usage"]["limit"] == billing["limits"]["recordsPerMonth"] == 10_000
    assert billing["usage"]["periodStart"].endswith("-01T00:00:00.000Z")
    assert [p["plan"] for p in billing["plans"]] == ["FREE", "PRO", "BUSINESS"]
    assert [p["priceId"] for p in billing["plans"]] == [None, PRICE_PRO, PRICE_BUSINESS]
    assert billing["limits"]["apiKeys"] == 2 and billing["limits"]["burst"] == 20


async def test_prices_are_public(make_client):
    client = await make_client()
    response = await client.get("/api/v1/billing/prices?detail=true")
    assert response.status_code == 200
    body = response.json()
    assert body["configured"] is True
    assert body["prices"] == {"pro": PRICE_PRO, "business": PRICE_BUSINESS}
    pro = next(p for p in body["plans"] if p["plan"] == "pro")
    assert pro["priceId"] == PRICE_PRO and pro["limits"]["recordsPerMonth"] == 1_000_000


async def test_checkout_creates_the_customer_once(make_client, runtime, stripe_stub):
    client = await make_client()
    owner = await register(client, org="Checkout Org")
    first = await gql(client, "CreateCheckoutSession", {"priceId": PRICE_PRO}, token=owner.token)
    assert "errors" not in first, first
    session = first["data"]["createCheckoutSession"]
    assert session["sessionId"].startswith("cs_test_")
    assert session["url"] == f"https://checkout.stripe.test/c/pay/{session['sessionId']}"
    second = await gql(client, "CreateCheckoutSession", {"priceId": PRICE_BUSINESS}, token=owner.token)
    assert "errors" not in second, second

    customers = stripe_stub.to("/v1/customers")
    assert len(customers) == 1
    customer = customers[0]
    assert customer.form["metadata[org_id]"] == owner.org_id
    assert customer.form["email"] == owner.email and customer.form["name"] == "Checkout Org"
    assert customer.headers["idempotency-key"]
    (account,) = await _rows(runtime, "SELECT stripe_customer_id, plan FROM billing_accounts")
    assert account.stripe_customer_id == "cus_test1" and account.plan == "free"

    sessions = stripe_stub.to("/v1/checkout/sessions")
    assert len(sessions) == 2
    for recorded, price in zip(sessions, (PRICE_PRO, PRICE_BUSINESS), strict=True):
        form = recorded.form
        assert form["mode"] == "subscription"
        assert form["customer"] == "cus_test1"
        assert form["client_reference_id"] == owner.org_id
        assert form["metadata[org_id]"] == owner.org_id
        assert form["subscription_data[metadata][org_id]"] == owner.org_id
        assert form["line_items[0][price]"] == price and form["line_items[0][quantity]"] == "1"
        assert form["success_url"].startswith("https://app.agentrail.test/billing?checkout=success")
        assert "{CHECKOUT_SESSION_ID}" in form["success_url"]
        assert form["cancel_url"] == "https://app.agentrail.test/billing?checkout=cancelled"
        assert recorded.headers["authorization"].startswith("Bearer sk_test_")
    keys = [r.headers["idempotency-key"] for r in sessions]
    assert all(keys) and len(set(keys)) == 2  # one per request

    actions = [r.action for r in await _rows(runtime, "SELECT action FROM activity_events ORDER BY occurred_at")]
    assert actions.count("billing.customer_created") == 1
    assert actions.count("billing.checkout_started") == 2


async def test_network_failures_are_retried_with_the_same_idempotency_key(make_client, stripe_stub):
    client = await make_client()
    owner = await register(client)
    stripe_stub.fail_next["/v1/checkout/sessions"] = [500]
    result = await gql(client, "CreateCheckoutSession", {"priceId": PRICE_PRO}, token=owner.token)
    assert "errors" not in result, result
    attempts = stripe_stub.to("/v1/checkout/sessions")
    assert len(attempts) == 2
    assert attempts[0].headers["idempotency-key"] == attempts[1].headers["idempotency-key"]


async def test_stripe_refusing_is_a_clear_error_and_writes_no_activity(make_client, runtime, stripe_stub):
    client = await make_client()
    owner = await register(client)
    stripe_stub.fail_next["/v1/customers"] = [500, 500, 500]
    result = await gql(client, "CreateCheckoutSession", {"priceId": PRICE_PRO}, token=owner.token)
    assert error_code(result) == "INTERNAL"
    assert "payment provider" in result["errors"][0]["message"]
    assert stripe_stub.to("/v1/checkout/sessions") == []
    rows = await _rows(runtime, "SELECT action FROM activity_events WHERE action LIKE 'billing.%'")
    assert rows == []
    assert (
        await _rows(runtime, "SELECT stripe_customer_id FROM billing_accounts WHERE stripe_customer_id IS NOT NULL")
        == []
    )


async def test_checkout_rejects_unknown_prices(make_client, runtime, stripe_stub):
    client = await make_client()
    owner = await register(client)
    for price in ("price_someone_else", "", PRICE_PRO + "x"):
        result = await gql(client, "CreateCheckoutSession", {"priceId": price}, token=owner.token)
        assert error_code(result) == "BAD_USER_INPUT"
        assert result["errors"][0]["extensions"]["field"] == "priceId"
    assert stripe_stub.requests == []
    assert await _rows(runtime, "SELECT org_id FROM billing_accounts") == []


async def test_portal_session(make_client, runtime, stripe_stub):
    client = await make_client()
    owner = await register(client)
    result = await gql(client, "CreatePortalSession", token=owner.token)
    assert "errors" not in result, result
    assert result["data"]["createPortalSession"]["url"].startswith("https://billing.stripe.test/p/session/")
    (portal,) = stripe_stub.to("/v1/billing_portal/sessions")
    assert portal.form["customer"] == "cus_test1"
    assert portal.form["return_url"] == "https://app.agentrail.test/billing"
    assert portal.headers["idempotency-key"]
    # the customer created for the portal is the one Checkout uses next
    await gql(client, "CreateCheckoutSession", {"priceId": PRICE_PRO}, token=owner.token)
    assert len(stripe_stub.to("/v1/customers")) == 1
    assert stripe_stub.to("/v1/checkout/sessions")[0].form["customer"] == "cus_test1"
    actions = {r.action for r in await _rows(runtime, "SELECT action FROM activity_events")}
    assert "billing.portal_opened" in actions


async def test_only_owners_and_admins(make_client, runtime, stripe_stub, settings):
    client = await make_client()
    owner = await register(client)
    secret, _ = await create_api_key(client, owner)
    for op, variables in (
        ("Billing", {}),
        ("CreateCheckoutSession", {"priceId": PRICE_PRO}),
        ("CreatePortalSession", {}),
    ):
        assert error_code(await gql(client, op, variables, api_key=secret)) == "FORBIDDEN"

    # a member of the same organisation
    member_id, member = await add_user(runtime, settings, owner, "member")
    for op, variables in (
        ("Billing", {}),
        ("CreateCheckoutSession", {"priceId": PRICE_PRO}),
        ("CreatePortalSession", {}),
    ):
        result = await gql(client, op, variables, token=member)
        assert error_code(result) == "FORBIDDEN", result
        assert "owner or admin" in result["errors"][0]["message"]

    # an admin may
    async with runtime.db.engine.begin() as conn:
        await conn.execute(sa.text("UPDATE memberships SET role = 'admin' WHERE user_id = :id"), {"id": member_id})
    assert "errors" not in await gql(client, "Billing", token=member)
    assert stripe_stub.to("/v1/checkout/sessions") == []


async def test_an_active_subscription_goes_to_the_portal_not_a_second_checkout(make_client, runtime):
    client = await make_client()
    owner = await register(client)
    async with runtime.db.engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO billing_accounts (org_id, plan, status, stripe_subscription_id, created_at, updated_at) "
                "VALUES (:org, 'pro', 'active', 'sub_1', now(), now())"
            ),
            {"org": owner.org_id},
        )
    result = await gql(client, "CreateCheckoutSession", {"priceId": PRICE_BUSINESS}, token=owner.token)
    assert error_code(result) == "CONFLICT"
    assert "createPortalSession" in result["errors"][0]["message"]


async def test_rest_billing_as_the_reference_documents_it(make_client, runtime, stripe_stub):
    """Seed 002 §11: prices exactly {pro, business} (public), checkout-session, subscription, portal-session."""
    client = await make_client()
    prices = await client.get("/api/v1/billing/prices")
    assert prices.status_code == 200 and prices.json() == {"pro": PRICE_PRO, "business": PRICE_BUSINESS}
    owner = await register(client, org="Rest Billing")
    bearer = {"Authorization": f"Bearer {owner.token}"}
    checkout = await client.post("/api/v1/billing/checkout-session", json={"priceId": PRICE_PRO}, headers=bearer)
    assert checkout.status_code == 200, checkout.text
    assert checkout.json()["sessionId"].startswith("cs_test_") and checkout.json()["url"].startswith("https://")
    (account,) = await _rows(runtime, "SELECT stripe_customer_id FROM billing_accounts")
    assert account.stripe_customer_id == "cus_test1"  # kept (committed) as the GraphQL mutation keeps it
    sub = await client.get("/api/v1/billing/subscription", headers=bearer)
    assert sub.status_code == 200 and sub.json()["plan"] == "free" and sub.json()["configured"] is True
    portal = await client.post("/api/v1/billing/portal-session", headers=bearer)
    assert portal.status_code == 200 and portal.json()["url"].startswith("https://")
    bad = await client.post("/api/v1/billing/checkout-session", json={"priceId": "price_nope"}, headers=bearer)
    assert bad.status_code == 400 and bad.json()["status"] == 400
    key, _ = await create_api_key(client, owner)
    assert (await client.get("/api/v1/billing/subscription", headers={"X-API-Key": key})).status_code == 403
