"""Rate limits per API key (the plan's rate) and per user: 429 / RATE_LIMITED with Retry-After, X-RateLimit-*."""

from __future__ import annotations

import asyncio
import time

from billing.stripe_stub import event, now, send_event, subscription
from support import create_api_key, error_code, gql, register


def _per_key(rate: float) -> dict:
    return {"plan_limits": {"free": {"requests_per_second": rate}}, "rate_limit_burst_seconds": 3}


async def test_an_api_key_over_its_rate_gets_429_with_retry_after(make_client, runtime):
    client = await make_client(**_per_key(1))  # burst 3, then one per second
    owner = await register(client)
    key, _ = await create_api_key(client, owner)
    headers = {"X-API-Key": key}
    ok = [await client.post("/api/v1/audit-logs", json={"action": f"a{i}"}, headers=headers) for i in range(3)]
    assert [r.status_code for r in ok] == [201, 201, 201]
    assert ok[0].headers["x-ratelimit-limit"] == "1" and ok[0].headers["x-ratelimit-burst"] == "3"
    assert [int(r.headers["x-ratelimit-remaining"]) for r in ok] == [2, 1, 0]
    assert "retry-after" not in ok[0].headers

    limited = await client.post("/api/v1/audit-logs", json={"action": "too fast"}, headers=headers)
    assert limited.status_code == 429
    body = limited.json()
    assert body["code"] == "RATE_LIMITED" and body["retryAfter"] >= 1
    assert limited.headers["retry-after"] == str(body["retryAfter"])
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert "1 requests per second per API key" in body["error"]

    # GraphQL: the error code and retryAfter, and the same headers
    graphql = await client.post("/graphql", json={"query": "{ me { kind } }"}, headers=headers)
    assert graphql.status_code == 200
    assert error_code(graphql.json()) == "RATE_LIMITED"
    assert graphql.json()["errors"][0]["extensions"]["retryAfter"] >= 1
    assert int(graphql.headers["retry-after"]) >= 1

    # the refused requests wrote nothing, and after the wait the key works again
    await asyncio.sleep(1.05)
    again = await client.post("/api/v1/audit-logs", json={"action": "later"}, headers=headers)
    assert again.status_code == 201


async def test_a_caller_that_does_not_wait_is_held_for_its_retry_after(make_client):
    """A refused caller that comes back before its Retry-After gets its next refusal only once that time has
    passed (the server's work for it stays bounded); one that waits as told is answered at once."""
    client = await make_client(**_per_key(1))  # burst 3, then one per second
    owner = await register(client)
    key, _ = await create_api_key(client, owner)
    headers = {"X-API-Key": key}

    async def timed(path: str = "/api/v1/audit-logs") -> tuple[int, float]:
        started = time.monotonic()
        response = await client.post(path, json={"action": "a"}, headers=headers)
        return response.status_code, time.monotonic() - started

    for _ in range(3):
        assert (await timed())[0] == 201
    status, first = await timed()
    assert status == 429 and first < 0.5  # the first refusal: at once
    status, held = await timed()
    assert status == 429 and held >= 0.95  # came back at once: held for its Retry-After (1 s)
    await asyncio.sleep(1.05)  # waits as told
    status, honoured = await timed()
    assert status == 201 and honoured < 0.5
    for _ in range(3):  # what refilled meanwhile, then refused again: at once, it had waited
        status, first = await timed()
        if status == 429:
            break
    assert status == 429 and first < 0.5
    # GraphQL: the same hold for a caller that does not wait
    started = time.monotonic()
    graphql = await client.post("/graphql", json={"query": "{ me { kind } }"}, headers=headers)
    assert error_code(graphql.json()) == "RATE_LIMITED" and time.monotonic() - started >= 0.95


async def test_keys_are_limited_separately(make_client):
    client = await make_client(**_per_key(1))
    owner = await register(client)
    first, _ = await create_api_key(client, owner, "first")
    second, _ = await create_api_key(client, owner, "second")
    for _ in range(3):
        await client.post("/api/v1/audit-logs", json={"action": "a"}, headers={"X-API-Key": first})
    assert (
        await client.post("/api/v1/audit-logs", json={"action": "a"}, headers={"X-API-Key": first})
    ).status_code == 429
    assert (
        await client.post("/api/v1/audit-logs", json={"action": "a"}, headers={"X-API-Key": second})
    ).status_code == 201


async def test_concurrent_requests_cannot_exceed_the_burst(make_client):
    client = await make_client(**_per_key(0.5))  # burst 2 (ceil 1.5)
    owner = await register(client)
    key, _ = await create_api_key(client, owner)
    responses = await asyncio.gather(
        *(client.post("/api/v1/audit-logs", json={"action": "a"}, headers={"X-API-Key": key}) for _ in range(10))
    )
    assert sorted(r.status_code for r in responses) == [201, 201] + [429] * 8


async def test_a_signed_in_user_is_limited_too(make_client):
    client = await make_client(user_requests_per_second=1, rate_limit_burst_seconds=3)
    owner = await register(client)  # registering is not authenticated: not counted
    results = [await gql(client, "Me", token=owner.token) for _ in range(4)]
    assert [error_code(r) for r in results] == [None, None, None, "RATE_LIMITED"]
    assert "per user" in results[-1]["errors"][0]["message"]


async def test_upgrading_raises_the_key_rate(make_client, runtime):
    client = await make_client(plan_limits={"free": {"requests_per_second": 1}, "pro": {"requests_per_second": 50}})
    owner = await register(client)
    key, _ = await create_api_key(client, owner)
    me = await client.post("/graphql", json={"query": "{ me { kind } }"}, headers={"X-API-Key": key})
    assert me.headers["x-ratelimit-limit"] == "1"
    checkout = await gql(client, "CreateCheckoutSession", {"priceId": "price_test_pro"}, token=owner.token)
    assert "errors" not in checkout
    import sqlalchemy as sa

    async with runtime.db.engine.connect() as conn:
        customer = (await conn.execute(sa.text("SELECT stripe_customer_id FROM billing_accounts"))).scalar_one()
    await send_event(client, event("customer.subscription.created", subscription("sub_1", customer), created=now()))
    me = await client.post("/graphql", json={"query": "{ me { kind } }"}, headers={"X-API-Key": key})
    assert me.headers["x-ratelimit-limit"] == "50"  # the webhook dropped the cached plan


async def test_not_enforced_means_no_rate_limit_headers(make_client):
    client = await make_client(configured=False)
    owner = await register(client)
    key, _ = await create_api_key(client, owner)
    response = await client.post("/api/v1/audit-logs", json={"action": "a"}, headers={"X-API-Key": key})
    assert response.status_code == 201 and "x-ratelimit-limit" not in response.headers


async def test_redis_down_lets_requests_through(make_client, monkeypatch):
    from redis.exceptions import ConnectionError as RedisConnectionError

    from app.usage import ratelimit

    client = await make_client(**_per_key(1))
    owner = await register(client)
    key, _ = await create_api_key(client, owner)

    async def down(*_args, **_kwargs):
        raise RedisConnectionError("down")

    monkeypatch.setattr(ratelimit.RateLimiter, "hit", down)
    for _ in range(5):
        response = await client.post("/api/v1/audit-logs", json={"action": "a"}, headers={"X-API-Key": key})
        assert response.status_code == 201
