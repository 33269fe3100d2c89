"""Subscriptions over HTTP on a real uvicorn: multipart (Apollo Client's `multipart/mixed;subscriptionSpec=1.0`,
read here by a parser of that spec over httpx's streaming reader) and graphql-sse (distinct connections mode,
read with the httpx-sse client). Same credentials, replay, fan-out and revocation as the WebSocket path."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse

from support import create_api_key, gql, operation, register

MULTIPART_ACCEPT = 'multipart/mixed;boundary="graphql";subscriptionSpec="1.0",application/json'


async def _email_rule(client, account) -> None:
    result = await gql(client, "CreateComplianceRule", {"input": {"name": "Email", "kind": "PII",
                       "config": {"types": ["email"]}}}, token=account.token)  # fmt: skip
    assert "errors" not in result, result


async def _alerting_record(client, account, n: int) -> str:
    result = await gql(client, "LogEvent", {"input": {"action": "llm_call", "prompt": f"mail user{n}@example.com"}},
                       token=account.token)  # fmt: skip
    return result["data"]["logEvent"]["id"]


async def multipart_parts(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The JSON bodies of a multipart/mixed subscription response (heartbeats `{}` included), as Apollo reads
    them: parts separated by `--<boundary>`, each with headers, a blank line and a JSON body; `--<boundary>--`
    ends the stream."""
    content_type = response.headers["content-type"]
    assert content_type.startswith("multipart/mixed"), content_type
    params = dict(p.strip().split("=", 1) for p in content_type.split(",")[0].split(";")[1:])
    assert params["subscriptionSpec"].strip('"') == "1.0"
    delimiter = b"--" + params["boundary"].strip('"').encode()
    buffer = b""
    async for chunk in response.aiter_bytes():
        buffer += chunk
        while True:
            start = buffer.find(delimiter)
            if start < 0:
                break
            after = buffer[start + len(delimiter) :]
            if after.startswith(b"--"):
                return  # the closing delimiter
            end = after.find(b"\r\n" + delimiter)
            if end < 0:
                break  # this part is not complete yet
            part = after[:end]
            buffer = after[end + 2 :]
            head, _, body = part.partition(b"\r\n\r\n")
            headers = dict(
                line.split(":", 1) for line in head.decode().strip().split("\r\n") if ":" in line
            )  # fmt: skip
            assert headers["Content-Type"].strip().startswith("application/json"), headers
            assert int(headers["Content-Length"]) == len(body)
            yield json.loads(body)


async def _payloads(parts: AsyncIterator[dict[str, Any]], count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    async def read() -> None:
        while len(out) < count:
            part = await anext(parts)
            if part:  # {} is a heartbeat
                out.append(part["payload"])

    await asyncio.wait_for(read(), timeout)
    return out


@contextlib.asynccontextmanager
async def _multipart(base: str, headers: dict[str, str], variables: dict | None = None):
    async with (
        httpx.AsyncClient(base_url=f"http://{base}", timeout=30) as http,
        http.stream(
            "POST",
            "/graphql",
            json={"query": operation("LiveAlerts"), "variables": variables or {}},
            headers={"accept": MULTIPART_ACCEPT, **headers},
        ) as response,
    ):
        yield response, multipart_parts(response)


async def test_multipart_subscription_replays_then_goes_live(client, live_server):
    account = await register(client)
    await _email_rule(client, account)
    for n in range(2):
        await _alerting_record(client, account, n)
    page = await gql(client, "Alerts", {"first": 2}, token=account.token)
    oldest = page["data"]["alerts"]["edges"][-1]
    async with _multipart(live_server, {"authorization": f"Bearer {account.token}"}, {"after": oldest["cursor"]}) as (
        r,
        parts,
    ):
        assert r.status_code == 200
        [replayed] = await _payloads(parts, 1)
        assert replayed["data"]["alerts"]["id"] == page["data"]["alerts"]["edges"][0]["node"]["id"]
        await asyncio.sleep(0.2)
        record_id = await _alerting_record(client, account, 2)
        [live] = await _payloads(parts, 1)
        assert live["data"]["alerts"]["auditLogId"] == record_id


async def test_sse_subscription_with_an_api_key(client, live_server):
    account = await register(client)
    await _email_rule(client, account)
    secret, _ = await create_api_key(client, account)
    other = await register(client, org="Other")
    await _email_rule(client, other)
    body = {"query": operation("LiveAlerts"), "variables": {}}
    async with (
        httpx.AsyncClient(base_url=f"http://{live_server}", timeout=30) as http,
        aconnect_sse(http, "POST", "/graphql", json=body, headers={"x-api-key": secret}) as source,
    ):
        assert source.response.headers["content-type"].startswith("text/event-stream")
        events = source.aiter_sse()

        async def writer() -> str:
            await asyncio.sleep(0.3)
            await _alerting_record(client, other, 0)  # another organisation's alert never arrives
            return await _alerting_record(client, account, 1)

        writing = asyncio.create_task(writer())
        event = await asyncio.wait_for(anext(events), 10)
        assert event.event == "next"
        assert event.json()["data"]["alerts"]["auditLogId"] == await writing


async def test_a_query_over_sse_is_one_result_then_complete(client, live_server):
    account = await register(client)
    async with (
        httpx.AsyncClient(base_url=f"http://{live_server}", timeout=30) as http,
        aconnect_sse(
            http,
            "POST",
            "/graphql",
            json={"query": "{ me { kind } }"},
            headers={"authorization": f"Bearer {account.token}"},
        ) as source,
    ):
        events = [event async for event in source.aiter_sse()]
    assert [e.event for e in events] == ["next", "complete"]
    assert events[0].json()["data"] == {"me": {"kind": "USER"}}


@pytest.mark.parametrize("accept", [MULTIPART_ACCEPT, "text/event-stream"])
async def test_no_stream_without_a_valid_credential(client, live_server, accept):
    async with httpx.AsyncClient(base_url=f"http://{live_server}", timeout=10) as http:
        for headers in ({}, {"x-api-key": "aa_live_unknown"}, {"authorization": "Bearer not-a-token"}):
            response = await http.post(
                "/graphql", json={"query": operation("LiveAlerts")}, headers={"accept": accept, **headers}
            )
            assert response.status_code == 401, response.text
            assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_validation_errors_and_limits_arrive_in_the_stream(client, live_server):
    account = await register(client)
    async with (
        httpx.AsyncClient(base_url=f"http://{live_server}", timeout=10) as http,
        http.stream(
            "POST",
            "/graphql",
            json={"query": "subscription { alerts { noSuchField } }"},
            headers={"accept": MULTIPART_ACCEPT, "authorization": f"Bearer {account.token}"},
        ) as response,
    ):
        [payload] = await _payloads(multipart_parts(response), 1)
    assert payload["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_revoking_the_key_ends_its_http_streams(client, live_server):
    account = await register(client)
    secret, key_id = await create_api_key(client, account)
    async with _multipart(live_server, {"x-api-key": secret}) as (_response, parts):
        await asyncio.sleep(0.3)
        revoked = await gql(client, "RevokeApiKey", {"id": key_id}, token=account.token)
        assert "errors" not in revoked, revoked
        [payload] = await _payloads(parts, 1)
        assert payload["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        rest = [part async for part in parts]  # then the stream completes
        assert all(part == {} for part in rest)


async def test_a_client_leaving_ends_its_stream(client, live_server, app):
    account = await register(client)
    connections = app.state.open_connections
    before = len(connections)
    async with _multipart(live_server, {"authorization": f"Bearer {account.token}"}) as (_response, parts):
        await asyncio.wait_for(anext(parts), 10)  # the first heartbeat: the stream is open
        for _ in range(50):
            if len(connections) == before + 1:
                break
            await asyncio.sleep(0.05)
        assert len(connections) == before + 1
    for _ in range(100):  # the client has gone: the server's side of the stream ends and is forgotten
        if len(connections) == before:
            break
        await asyncio.sleep(0.05)
    assert len(connections) == before
