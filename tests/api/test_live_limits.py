"""On a real uvicorn: a GraphQL request's work stops when its client leaves (GET and POST), and an answer above
the response size cap is refused with a clear error while the server goes on serving."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse

import asyncpg
import httpx
import pytest

from app.settings import Settings
from support import create_api_key, error_code, gql, register

PAGE = "{ auditLogs(first: 5) { edges { node { id action } } } }"


async def _waiting_on_lock(conn: asyncpg.Connection) -> int:
    """Lock requests on audit_logs not granted (the request's query behind our LOCK TABLE).

    Asked on a connection of its own, outside the holder's transaction, and of pg_locks: pg_stat_activity is
    a snapshot taken at its first read in a transaction, so polled from inside the holder's transaction it
    never lists a backend that connected later (the pool may open one for the request), and the request was
    never seen to reach the lock."""
    found = await conn.fetchval(
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'audit_logs'::regclass "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    return int(found)


async def _until(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.05)
    return False


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_work_stops_when_the_client_disconnects(client, live_server, database_url, method):
    """The request's query waits behind a table lock the test holds; the client hangs up; the query is cancelled
    at once (the statement timeout is 15 s away), and the server answers the next request as usual."""
    account = await register(client)
    key, _ = await create_api_key(client, account)
    assert error_code(await gql(client, 'mutation { logEvent(input: {action: "a"}) { id } }', api_key=key)) is None
    host, port = live_server.split(":")
    if method == "GET":
        request = (
            f"GET /graphql?query={urllib.parse.quote(PAGE)} HTTP/1.1\r\nhost: x\r\nx-api-key: {key}\r\n"
            "accept: application/json\r\n\r\n"
        ).encode()
    else:
        body = json.dumps({"query": PAGE}).encode()
        request = (
            f"POST /graphql HTTP/1.1\r\nhost: x\r\nx-api-key: {key}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        ).encode() + body
    plain_url = database_url.replace("postgresql+asyncpg://", "postgresql://")
    holder = await asyncpg.connect(plain_url)
    observer = await asyncpg.connect(plain_url)
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("LOCK TABLE audit_logs IN ACCESS EXCLUSIVE MODE")
        _reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(request)
        await writer.drain()
        assert await _until(lambda: _waiting_on_lock_positive(observer), 10), "the request never reached the lock"
        writer.close()
        started = time.monotonic()
        assert await _until(lambda: _no_one_waiting(observer), 5), "the query still waits after the client left"
        assert time.monotonic() - started < 5
        await transaction.rollback()
    finally:
        await observer.close()
        await holder.close()
    async with httpx.AsyncClient(base_url=f"http://{live_server}", timeout=10) as http:
        after = await gql(http, PAGE, api_key=key)
    assert "errors" not in after, after
    assert len(after["data"]["auditLogs"]["edges"]) == 1


async def _waiting_on_lock_positive(conn: asyncpg.Connection) -> bool:
    return await _waiting_on_lock(conn) > 0


async def _no_one_waiting(conn: asyncpg.Connection) -> bool:
    return await _waiting_on_lock(conn) == 0


async def test_an_answer_above_the_response_cap_is_refused_and_the_server_goes_on(client, live_server):
    """Five aliases of a page of eight prompts of 1 MB (a prompt holds at most 1 MiB): a 40 MB answer within
    every other limit (its cost is 155), refused with BAD_USER_INPUT naming the cap (32 MiB by default) instead
    of being sent."""
    cap = Settings().max_response_bytes
    assert cap == 32 * 1024 * 1024
    account = await register(client)
    key, _ = await create_api_key(client, account)
    prompt = "abcdefghij" * 100_000
    records = [{"action": f"big {i}", "prompt": prompt} for i in range(8)]
    stored = await gql(
        client, "mutation($r: [AuditLogInput!]!) { logEvents(input: $r) { id } }", {"r": records}, api_key=key
    )
    assert "errors" not in stored, str(stored)[:500]
    query = "{ " + " ".join(f"a{i}: auditLogs(first: 10) {{ edges {{ node {{ prompt }} }} }}" for i in range(5)) + " }"
    async with httpx.AsyncClient(base_url=f"http://{live_server}", timeout=60) as http:
        response = await http.post("/graphql", json={"query": query}, headers={"X-API-Key": key})
        assert response.status_code == 200
        assert len(response.content) < 2_000  # the refusal, not the answer
        body = response.json()
        assert body["data"] is None
        error = body["errors"][0]
        assert error["extensions"] == {"code": "BAD_USER_INPUT", "limit": cap}
        assert "more than the limit of 33554432" in error["message"]
        size = int(error["message"].split("would be ")[1].split(" bytes")[0])
        assert size > 5 * 8 * len(prompt)
        # the same data within the cap is answered, and the server serves the next requests as usual
        one = await http.post(
            "/graphql",
            json={"query": "{ auditLogs(first: 1) { edges { node { prompt } } } }"},
            headers={"X-API-Key": key},
        )
        assert one.json()["data"]["auditLogs"]["edges"][0]["node"]["prompt"] == prompt
        me = await gql(http, "{ me { organization { id } } }", api_key=key)
        assert me["data"]["me"]["organization"]["id"] == account.org_id
