"""PostgreSQL stopped and started again under load (an embedded PostgreSQL of the test's own).

While it is down every route answers 503 JSON `{"error", "status", "code": "UNAVAILABLE"}` with Retry-After, and
GraphQL UNAVAILABLE with `extensions.retryAfter`; an agent that retries what it was refused ends with every
record stored exactly once.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import sqlalchemy as sa

from app.runtime import migrations
from app.runtime.embedded import EmbeddedPostgres
from faults.conftest import running_stack
from support import create_api_key, gql, register

RECORDS = 120


async def _log(http, key: str, n: int, refusals: list[dict]) -> str:
    """REST ingest, retried (same idempotency key) after a 503 as the Retry-After asks (shortened here)."""
    body = {"action": "tool_call", "idempotencyKey": f"db-{n}"}
    deadline = time.monotonic() + 60
    while True:
        try:
            response = await http.post("/api/v1/audit-logs", json=body, headers={"X-API-Key": key})
        except Exception:
            response = None
        if response is not None and response.status_code in (200, 201):
            return response.json()["id"]
        if response is not None:
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"].isdigit()
            refusals.append(response.json())
        assert time.monotonic() < deadline, f"record {n} never accepted"
        await asyncio.sleep(0.2)


async def test_postgres_stopped_under_load_answers_unavailable_and_loses_nothing(settings, tmp_path: Path):
    postgres = EmbeddedPostgres(tmp_path / "pg")
    database_url = postgres.start()
    await migrations.upgrade(database_url)
    try:
        async with running_stack(settings, database_url, tmp_path) as stack:
            http = stack.http
            account = await register(http)
            key, _ = await create_api_key(http, account)
            refusals: list[dict] = []
            sent = [await _log(http, key, n, refusals) for n in range(RECORDS // 3)]

            postgres.stop()
            rest = await http.post("/api/v1/audit-logs", json={"action": "a"}, headers={"X-API-Key": key})
            assert rest.status_code == 503 and rest.headers["retry-after"] == "5"
            assert rest.json() == {
                "error": "the database is unavailable; retry later",
                "status": 503,
                "code": "UNAVAILABLE",
                "retryAfter": 5,
            }
            graphql = await gql(http, "LogEvent", {"input": {"action": "a"}}, api_key=key)
            [error] = graphql["errors"]
            assert error["extensions"] == {"code": "UNAVAILABLE", "retryAfter": 5}
            signed_in = await gql(http, "Me", token=account.token)
            assert signed_in["errors"][0]["extensions"]["code"] == "UNAVAILABLE"
            ready = await http.get("/readyz")
            assert ready.status_code == 503 and "postgres" in ready.json()["error"]
            batch = await http.post("/api/v1/audit-logs/batch", json=[{"action": "a"}], headers={"X-API-Key": key})
            assert batch.status_code == 503 and batch.json()["code"] == "UNAVAILABLE"
            export = await http.get("/api/v1/audit-logs/export", headers={"X-API-Key": key})
            assert export.status_code == 503 and export.json()["code"] == "UNAVAILABLE"

            # the agent keeps sending while PostgreSQL is down, and it comes back meanwhile
            async def restart() -> None:
                await asyncio.sleep(2.0)
                await asyncio.to_thread(postgres.start)

            restarting = asyncio.create_task(restart())
            sent += [await _log(http, key, n, refusals) for n in range(RECORDS // 3, RECORDS)]
            await restarting

            async with stack.runtime.db.engine.connect() as conn:
                stored, distinct = (
                    await conn.execute(sa.text("SELECT count(*), count(DISTINCT idempotency_key) FROM audit_logs"))
                ).one()
            figures = {"sent": len(sent), "stored": stored, "duplicated": stored - distinct,
                       "lost": len(set(sent)) - distinct, "refused_503": len(refusals)}  # fmt: skip
            print("fault postgres-restart:", figures)
            assert len(set(sent)) == RECORDS == stored == distinct
            assert refusals and all(r["code"] == "UNAVAILABLE" for r in refusals)
    finally:
        postgres.stop()
