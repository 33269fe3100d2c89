"""The monthly record quota: refused whole beyond the limit, exact under concurrency, kept in PostgreSQL."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from billing.stripe_stub import event, now, send_event, subscription
from support import create_api_key, error_code, gql, register

LIMIT = 10


async def _count(runtime, org_id: str) -> int:
    async with runtime.db.engine.connect() as conn:
        query = sa.text("SELECT count(*) FROM audit_logs WHERE org_id = :org")
        return int((await conn.execute(query, {"org": org_id})).scalar_one())


async def _used(runtime, org_id: str) -> int:
    async with runtime.db.engine.connect() as conn:
        query = sa.text("SELECT coalesce(sum(records), 0) FROM usage_counters WHERE org_id = :org")
        return int((await conn.execute(query, {"org": org_id})).scalar_one())


async def _batch(client, key: str, n: int, prefix: str = "r"):
    records = [{"action": f"{prefix}{i}"} for i in range(n)]
    return await client.post("/api/v1/audit-logs/batch", json=records, headers={"X-API-Key": key})


async def _setup(make_client, **overrides):
    client = await make_client(
        plan_limits={"free": {"records_per_month": LIMIT, "requests_per_second": 1000}}, **overrides
    )
    owner = await register(client)
    key, _ = await create_api_key(client, owner)
    return client, owner, key


async def test_a_batch_that_would_cross_the_limit_is_refused_whole(make_client, runtime):
    client, owner, key = await _setup(make_client)
    assert (await _batch(client, key, 8)).status_code == 201

    refused = await _batch(client, key, 3)
    assert refused.status_code == 402
    body = refused.json()
    assert body["code"] == "QUOTA_EXCEEDED" and body["status"] == 402
    assert body["limit"] == LIMIT and body["used"] == 8 and body["requested"] == 3 and body["plan"] == "free"
    message = body["error"]
    assert "10 records per month" in message and "Free plan" in message
    assert "upgrade to Pro" in message and "createCheckoutSession" in message
    assert body["resetsAt"].endswith("-01T00:00:00Z")
    assert await _count(runtime, owner.org_id) == 8 and await _used(runtime, owner.org_id) == 8

    graphql = await gql(
        client,
        "mutation($i: [AuditLogInput!]!) { logEvents(input: $i) { id } }",
        {"i": [{"action": "g1"}, {"action": "g2"}, {"action": "g3"}]},
        api_key=key,
    )
    assert error_code(graphql) == "QUOTA_EXCEEDED"
    assert graphql["errors"][0]["extensions"]["limit"] == LIMIT
    assert await _count(runtime, owner.org_id) == 8

    assert (await _batch(client, key, 2)).status_code == 201  # exactly up to the limit
    assert await _count(runtime, owner.org_id) == LIMIT and await _used(runtime, owner.org_id) == LIMIT
    single = await client.post("/api/v1/audit-logs", json={"action": "one more"}, headers={"X-API-Key": key})
    assert single.status_code == 402
    one = await gql(client, 'mutation { logEvent(input: {action: "x"}) { id } }', api_key=key)
    assert error_code(one) == "QUOTA_EXCEEDED"

    billing = (await gql(client, "Billing", token=owner.token))["data"]["billing"]
    assert billing["usage"] == {**billing["usage"], "recordsThisPeriod": LIMIT, "limit": LIMIT, "remaining": 0}


async def test_idempotent_replays_do_not_count(make_client, runtime):
    client, owner, key = await _setup(make_client)
    records = [{"action": f"a{i}", "idempotencyKey": f"k{i}"} for i in range(LIMIT)]
    first = await client.post("/api/v1/audit-logs/batch", json=records, headers={"X-API-Key": key})
    assert first.status_code == 201
    # at the limit, the same records again: nothing new is written, so nothing is refused or counted
    again = await client.post("/api/v1/audit-logs/batch", json=records, headers={"X-API-Key": key})
    assert again.status_code == 201
    assert again.json() == first.json()  # the created ids, in input order
    assert await _used(runtime, owner.org_id) == LIMIT
    # one new record among replays is refused, and takes the batch with it
    mixed = await client.post(
        "/api/v1/audit-logs/batch",
        json=[*records[:3], {"action": "new", "idempotencyKey": "new"}],
        headers={"X-API-Key": key},
    )
    assert mixed.status_code == 402 and mixed.json()["requested"] == 1


async def test_two_batches_racing_for_the_last_slots_never_exceed_the_limit(make_client, runtime):
    for round_ in range(4):
        client, owner, key = await _setup(make_client)
        assert (await _batch(client, key, 6)).status_code == 201
        # each batch alone fits (6 + 4 = 10); both together would not
        first, second = await asyncio.gather(_batch(client, key, 4, "x"), _batch(client, key, 4, "y"))
        statuses = sorted([first.status_code, second.status_code])
        assert statuses == [201, 402], (round_, first.text, second.text)
        assert await _count(runtime, owner.org_id) == LIMIT
        assert await _used(runtime, owner.org_id) == LIMIT


async def test_many_concurrent_single_records_stop_exactly_at_the_limit(make_client, runtime):
    client, owner, key = await _setup(make_client)
    responses = await asyncio.gather(
        *(client.post("/api/v1/audit-logs", json={"action": f"s{i}"}, headers={"X-API-Key": key}) for i in range(25))
    )
    assert sorted(r.status_code for r in responses) == [201] * LIMIT + [402] * 15
    assert await _count(runtime, owner.org_id) == LIMIT == await _used(runtime, owner.org_id)


async def test_usage_survives_a_redis_flush(make_client, runtime):
    client, _owner, key = await _setup(make_client)
    assert (await _batch(client, key, LIMIT)).status_code == 201
    await runtime.redis.flushdb()
    assert (await _batch(client, key, 1)).status_code == 402


async def test_upgrading_raises_the_quota(make_client, runtime):
    client, owner, key = await _setup(make_client)
    assert (await _batch(client, key, LIMIT)).status_code == 201
    checkout = await gql(client, "CreateCheckoutSession", {"priceId": "price_test_pro"}, token=owner.token)
    assert "errors" not in checkout, checkout
    async with runtime.db.engine.connect() as conn:
        customer = (await conn.execute(sa.text("SELECT stripe_customer_id FROM billing_accounts"))).scalar_one()
    await send_event(client, event("customer.subscription.created", subscription("sub_1", customer), created=now()))
    assert (await _batch(client, key, 5)).status_code == 201
    assert await _used(runtime, owner.org_id) == LIMIT + 5


async def test_organisations_have_their_own_quota(make_client, runtime):
    client, _alice, alice_key = await _setup(make_client)
    bob = await register(client, org="Bob")
    bob_key, _ = await create_api_key(client, bob)
    assert (await _batch(client, alice_key, LIMIT)).status_code == 201
    assert (await _batch(client, bob_key, LIMIT)).status_code == 201
    assert (await _batch(client, alice_key, 1)).status_code == 402


async def test_unenforced_servers_count_but_do_not_limit(make_client, runtime):
    client = await make_client(configured=False, plan_limits={"free": {"records_per_month": 2}})
    owner = await register(client)
    key, _ = await create_api_key(client, owner)
    assert (await _batch(client, key, 5)).status_code == 201
    assert await _used(runtime, owner.org_id) == 5
    billing = (await gql(client, "Billing", token=owner.token))["data"]["billing"]
    assert billing["limitsEnforced"] is False
    assert billing["usage"]["recordsThisPeriod"] == 5 and billing["usage"]["limit"] is None


async def test_enforced_without_stripe_names_the_operator(make_client):
    client = await make_client(configured=False, enforce_limits=True, plan_limits={"free": {"records_per_month": 1}})
    owner = await register(client)
    key, _ = await create_api_key(client, owner)
    refused = await _batch(client, key, 2)
    assert refused.status_code == 402
    assert "ask the operator of this server" in refused.json()["error"]
