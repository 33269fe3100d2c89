"""Health, readiness, metrics and request limits."""

from __future__ import annotations

import contextlib

from support import gql, register


async def test_health_and_readiness(client, runtime):
    from app.runtime import heartbeat

    assert (await client.get("/healthz")).json() == {"status": "ok"}
    await heartbeat.beat(runtime.redis, stale_seconds=30)  # as a worker does while it polls the queue
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"postgres": "ok", "redis": "ok", "worker": "ok", "audit_trail": "ok"}
    assert ready.headers["x-request-id"]


async def test_readiness_names_a_worker_without_heartbeat(client, runtime):
    """No worker has polled the queue within worker_stale_seconds (it died, or its Redis connection did)."""
    from app.runtime import heartbeat

    await runtime.redis.delete(heartbeat.HEARTBEAT_KEY)
    response = await client.get("/readyz")
    assert response.status_code == 503 and response.headers["retry-after"]
    body = response.json()
    assert body["code"] == "UNAVAILABLE" and "worker" in body["error"]
    assert body["checks"]["postgres"] == body["checks"]["redis"] == "ok"
    assert body["checks"]["worker"].startswith("down")


async def test_a_running_worker_beats_the_heartbeat(client, runtime):
    import asyncio

    from workers.settings import run_worker

    await runtime.redis.delete("agentrail:worker:heartbeat")
    worker = asyncio.create_task(run_worker(runtime))
    try:
        for _ in range(100):
            if (await client.get("/readyz")).status_code == 200:
                break
            await asyncio.sleep(0.1)
        assert (await client.get("/readyz")).json()["checks"]["worker"] == "ok"
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker


async def test_readiness_names_what_is_down(settings):
    import httpx

    from app.main import create_app

    broken = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    app = create_app(broken, urls=(settings.database_url, "redis://127.0.0.1:1/0"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            response = await http.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == 503 and "redis" in body["error"]
    assert body["checks"]["postgres"] == "ok"


async def test_metrics_count_operations(client):
    account = await register(client)
    await gql(client, "Me", token=account.token)
    text = (await client.get("/metrics")).text
    assert 'agentrail_graphql_operations_total{operation="Me",type="query"}' in text
    assert "agentrail_http_request_duration_seconds_bucket" in text
    assert "agentrail_db_pool_checked_out" in text
    assert account.token not in text


async def test_request_body_limit(client, settings):
    big = "x" * (settings.max_request_bytes + 1)
    response = await client.post("/graphql", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["status"] == 413


async def test_request_id_is_echoed(client):
    response = await client.get("/healthz", headers={"x-request-id": "abc123"})
    assert response.headers["x-request-id"] == "abc123"


async def test_repeated_documents_are_validated_once(client):
    """The depth and alias limits must not defeat the validation cache (it is keyed by the rule classes)."""
    from strawberry.extensions.validation_cache import _get_validate_cache

    cache = _get_validate_cache(512)
    query = "query RepeatedDocument { __typename }"
    await client.post("/graphql", json={"query": query})
    hits = cache.cache_info().hits
    for _ in range(3):
        response = await client.post("/graphql", json={"query": query})
        assert response.json() == {"data": {"__typename": "Query"}}
    assert cache.cache_info().hits == hits + 3


async def test_plain_fields_and_their_errors_are_the_same_on_the_fast_path(client):
    """Leaf fields read directly (app/api/execution.py) keep the selection's order, aliases and errors."""
    from support import register

    account = await register(client)
    query = "query { me { b: __typename organization { id name } a: __typename } }"
    headers = {"Authorization": f"Bearer {account.token}"}
    response = await client.post("/graphql", json={"query": query}, headers=headers)
    body = response.json()
    assert "errors" not in body, body
    assert list(body["data"]["me"]) == ["b", "organization", "a"]
    assert list(body["data"]["me"]["organization"]) == ["id", "name"]
