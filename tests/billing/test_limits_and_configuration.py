"""The API key limit of the plan, and a server without Stripe: billing says so, everything else works."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from billing.stripe_stub import billing_settings
from support import create_api_key, error_code, gql, register


async def _active_keys(runtime, org_id: str) -> int:
    async with runtime.db.engine.connect() as conn:
        query = sa.text("SELECT count(*) FROM api_keys WHERE org_id = :org AND revoked_at IS NULL")
        return int((await conn.execute(query, {"org": org_id})).scalar_one())


async def test_the_plan_limits_active_api_keys(make_client, runtime):
    client = await make_client()  # free: 2 keys
    owner = await register(client)
    _, first = await create_api_key(client, owner, "one")
    await create_api_key(client, owner, "two")
    refused = await gql(client, "CreateApiKey", {"name": "three"}, token=owner.token)
    assert error_code(refused) == "QUOTA_EXCEEDED"
    error = refused["errors"][0]
    assert error["extensions"]["limit"] == 2 and error["extensions"]["resource"] == "api_keys"
    assert "Free plan allows 2 active API keys" in error["message"] and "revoke one" in error["message"]
    assert "upgrade to Pro (25)" in error["message"]
    assert await _active_keys(runtime, owner.org_id) == 2
    async with runtime.db.engine.connect() as conn:
        created = sa.text("SELECT count(*) FROM activity_events WHERE action = 'api_key.created'")
        assert (await conn.execute(created)).scalar_one() == 2

    # revoked keys do not count
    assert "errors" not in await gql(client, "RevokeApiKey", {"id": first}, token=owner.token)
    assert "errors" not in await gql(client, "CreateApiKey", {"name": "three"}, token=owner.token)


async def test_concurrent_key_creation_respects_the_limit(make_client, runtime):
    client = await make_client(plan_limits={"free": {"api_keys": 3}})
    owner = await register(client)
    await create_api_key(client, owner)
    results = await asyncio.gather(
        *(gql(client, "CreateApiKey", {"name": f"k{i}"}, token=owner.token) for i in range(5))
    )
    assert sorted(str(error_code(r)) for r in results) == ["None", "None", *["QUOTA_EXCEEDED"] * 3]
    assert await _active_keys(runtime, owner.org_id) == 3


async def test_exposed_limits_for_other_domains(make_client, runtime, settings, stripe_stub):
    """What the webhooks domain will call: require_capacity(..., "webhook_endpoints", count=...)."""
    from app.errors import QuotaExceeded
    from app.usage import quota

    client = await make_client()
    owner = await register(client)
    configured = billing_settings(settings, stripe_stub)

    async def one() -> int:
        return 1

    async with runtime.db.tenant_session(owner.org_id) as session:
        limits = await quota.limits_of(session, owner.org_id, settings=configured)
        assert limits.webhook_endpoints == 1 and limits.retention_days == 7
        await quota.require_capacity(
            session, owner.org_id, "webhook_endpoints", count=one, adding=0, settings=configured
        )
        with pytest.raises(QuotaExceeded) as refused:
            await quota.require_capacity(session, owner.org_id, "webhook_endpoints", count=one, settings=configured)
        assert "1 webhook endpoints" in refused.value.message and "delete one" in refused.value.message
        # unenforced (no Stripe): no limit
        await quota.require_capacity(session, owner.org_id, "webhook_endpoints", count=one, settings=settings)


async def test_without_stripe_billing_is_not_configured_and_the_rest_works(client, runtime):
    """The suite's default app has no Stripe settings."""
    owner = await register(client)
    billing = await gql(client, "Billing", token=owner.token)
    assert "errors" not in billing, billing
    view = billing["data"]["billing"]
    assert view["configured"] is False and view["limitsEnforced"] is False
    assert view["plan"] == "FREE" and view["prices"] == {"pro": None, "business": None}
    assert view["usage"]["limit"] is None

    for op, variables in (("CreateCheckoutSession", {"priceId": "price_x"}), ("CreatePortalSession", {})):
        result = await gql(client, op, variables, token=owner.token)
        assert error_code(result) == "FORBIDDEN"
        assert result["errors"][0]["message"].startswith("billing is not configured")
        assert result["errors"][0]["extensions"]["reason"] == "BILLING_NOT_CONFIGURED"

    webhook = await client.post("/api/v1/billing/webhook", content=b"{}", headers={"Stripe-Signature": "t=1,v1=00"})
    assert webhook.status_code == 403 and "billing is not configured" in webhook.json()["error"]
    prices = await client.get("/api/v1/billing/prices?detail=true")
    assert prices.status_code == 200 and prices.json()["configured"] is False

    # no plan limits: more keys than the free plan has, records count without a quota
    for i in range(4):
        key, _ = await create_api_key(client, owner, f"k{i}")
    response = await client.post("/api/v1/audit-logs", json={"action": "a"}, headers={"X-API-Key": key})
    assert response.status_code == 201 and "x-ratelimit-limit" not in response.headers
    async with runtime.db.engine.connect() as conn:
        assert (await conn.execute(sa.text("SELECT count(*) FROM billing_accounts"))).scalar_one() == 0
        assert (await conn.execute(sa.text("SELECT count(*) FROM stripe_events"))).scalar_one() == 0
        assert (await conn.execute(sa.text("SELECT sum(records) FROM usage_counters"))).scalar_one() == 1
