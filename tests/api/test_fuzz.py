"""Fuzz suite: generated GraphQL operations (hypothesis-graphql, from the printed schema: valid ones and ones
that break it) and generated REST requests, as a user and as an API key. Whatever arrives, the answer is never
a 5xx and never INTERNAL.

Bounded for CI: a fixed number of examples, the same on every run, and a deadline per example; about 20 s in
all. AGENTRAIL_FUZZ_EXAMPLES=10 runs ten times as many, drawn at random, to explore. No example database is
written (`database=None`).
"""

from __future__ import annotations

import asyncio
import os
import string
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import graphql
import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import Mode, from_schema, nodes

from app.api.schema import print_sdl
from support import create_api_key, register

SCALE = float(os.environ.get("AGENTRAIL_FUZZ_EXAMPLES", "1"))


def bounded(examples: int) -> Any:
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        deadline=timedelta(seconds=10),
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
        # the same examples on every run (no red from chance); a longer run with AGENTRAIL_FUZZ_EXAMPLES explores
        derandomize="AGENTRAIL_FUZZ_EXAMPLES" not in os.environ,
    )


def _object_node(items: dict[str, str]) -> graphql.ObjectValueNode:
    return graphql.ObjectValueNode(
        fields=tuple(
            graphql.ObjectFieldNode(name=graphql.NameNode(value=k), value=graphql.StringValueNode(value=v))
            for k, v in items.items()
        )
    )


TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
CUSTOM_SCALARS = {
    "DateTime": st.one_of(
        st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)).map(
            lambda d: nodes.String(d.isoformat().replace("+00:00", "Z"))
        ),
        TEXT.map(nodes.String),
    ),
    "JSON": st.one_of(
        st.dictionaries(st.text(string.ascii_letters, min_size=1, max_size=8), TEXT, max_size=4).map(_object_node),
        TEXT.map(nodes.String),
        st.integers().map(nodes.Int),
    ),
}

SDL = print_sdl()
SCHEMA = graphql.build_schema(SDL)
QUERY_FIELDS = sorted(SCHEMA.query_type.fields) if SCHEMA.query_type else []
MUTATION_FIELDS = sorted(SCHEMA.mutation_type.fields) if SCHEMA.mutation_type else []
# mutations that would end the fuzzing principal's own access part-way (the rest of the run would only see 401s)
SELF_ENDING = {"revokeApiKey", "deleteAccount", "removeMember", "leaveOrganization"}


def _assert_sound(response: httpx.Response, sent: object) -> None:
    assert response.status_code < 500, (response.status_code, sent, response.text[:500])
    try:
        body = response.json()
    except ValueError:
        return
    errors = body.get("errors") if isinstance(body, dict) else None
    for error in errors or []:
        code = (error.get("extensions") or {}).get("code")
        assert code != "INTERNAL", (sent, error)


class Driver:
    """Runs hypothesis (synchronous) in a thread; each example's request runs on the test's event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)


async def _in_thread(body: Callable[[Driver], None]) -> None:
    driver = Driver(asyncio.get_running_loop())
    await asyncio.to_thread(body, driver)


@pytest.fixture
async def principals(client: httpx.AsyncClient) -> dict[str, dict[str, str]]:
    account = await register(client)
    key, _ = await create_api_key(client, account)
    # something to read: a small trace
    records = [{"action": "llm_call", "traceId": "fuzz", "spanId": f"s{i}", "parentSpanId": f"s{i - 1}" if i else None,
                "prompt": "hello refund", "metadata": {"n": i}} for i in range(5)]  # fmt: skip
    response = await client.post("/api/v1/audit-logs/batch", json=records, headers={"X-API-Key": key})
    assert response.status_code == 201, response.text
    return {"user": {"Authorization": f"Bearer {account.token}"}, "key": {"X-API-Key": key}}


@pytest.mark.parametrize("mode", [Mode.POSITIVE, Mode.NEGATIVE])
async def test_generated_queries(client: httpx.AsyncClient, principals: dict, mode: Mode) -> None:
    strategy = from_schema(SDL, fields=QUERY_FIELDS, custom_scalars=CUSTOM_SCALARS, allow_x00=False, mode=mode)

    def body(driver: Driver) -> None:
        @bounded(60)
        @given(query=strategy, who=st.sampled_from(["user", "key"]))
        def check(query: str, who: str) -> None:
            response = driver.run(client.post("/graphql", json={"query": query}, headers=principals[who]))
            _assert_sound(response, query)

        check()

    await _in_thread(body)


@pytest.mark.parametrize("mode", [Mode.POSITIVE, Mode.NEGATIVE])
async def test_generated_mutations(client: httpx.AsyncClient, principals: dict, mode: Mode) -> None:
    fields = [f for f in MUTATION_FIELDS if f not in SELF_ENDING]
    strategy = from_schema(SDL, fields=fields, custom_scalars=CUSTOM_SCALARS, allow_x00=False, mode=mode)

    def body(driver: Driver) -> None:
        @bounded(60)
        @given(mutation=strategy, who=st.sampled_from(["user", "key"]))
        def check(mutation: str, who: str) -> None:
            response = driver.run(client.post("/graphql", json={"query": mutation}, headers=principals[who]))
            _assert_sound(response, mutation)

        check()

    await _in_thread(body)


# integers within 64 bits: orjson encodes the bodies (numbers beyond are harden-input's property test's subject)
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | INT64 | st.floats(allow_nan=False) | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=12,
)
RECORD_FIELDS = {
    "action": TEXT,
    "prompt": TEXT,
    "response": TEXT,
    "traceId": TEXT,
    "spanId": TEXT,
    "parentSpanId": TEXT,
    "agentId": TEXT,
    "metadata": JSON_VALUES,
    "occurredAt": CUSTOM_SCALARS["DateTime"].map(lambda n: n.value) | TEXT,
    "durationMs": st.floats(allow_nan=False) | INT64 | TEXT,
    "status": st.sampled_from(["ok", "error", "blocked", "OK", "nope"]) | TEXT,
    "riskLevel": st.sampled_from(["LOW", "MEDIUM", "HIGH", "x"]),
    "idempotencyKey": TEXT,
    "args": JSON_VALUES,
    "result": JSON_VALUES,
}
RECORDS = (
    st.fixed_dictionaries({"action": TEXT}, optional={k: v for k, v in RECORD_FIELDS.items() if k != "action"})
    | JSON_VALUES
)
QUERY_PARAMS = st.dictionaries(
    st.sampled_from(["from", "to", "format", "agentId", "action", "status", "limit", "search", "x", "traceId"]),
    TEXT,
    max_size=4,
)
EXPORTS = ["/api/v1/audit-logs/export", "/api/v1/activity/export", "/api/v1/billing/prices"]
RAW_TARGETS = ["/api/v1/audit-logs", "/v1/traces", "/graphql"]
NO_BODY = st.just(b"")
NO_PARAMS = st.just({})
REQUESTS = st.one_of(
    st.tuples(st.just("POST"), st.just("/api/v1/audit-logs"), RECORDS.map(orjson.dumps), NO_PARAMS),
    st.tuples(
        st.just("POST"), st.just("/api/v1/audit-logs/batch"), st.lists(RECORDS, max_size=5).map(orjson.dumps), NO_PARAMS
    ),
    st.tuples(st.just("POST"), st.sampled_from(RAW_TARGETS), st.binary(max_size=200), NO_PARAMS),
    st.tuples(st.just("POST"), st.just("/v1/traces"), JSON_VALUES.map(orjson.dumps), NO_PARAMS),
    st.tuples(st.just("GET"), st.sampled_from(EXPORTS), NO_BODY, QUERY_PARAMS),
    st.tuples(st.just("GET"), TEXT.map(lambda t: f"/api/v1/exports/{t}"), NO_BODY, NO_PARAMS),
    st.tuples(st.just("GET"), TEXT.map(lambda t: f"/api/v1/reports/{t}/download"), NO_BODY, QUERY_PARAMS),
    st.tuples(st.just("POST"), st.just("/api/v1/billing/webhook"), st.binary(max_size=100), NO_PARAMS),
)


async def test_generated_rest_requests(client: httpx.AsyncClient, principals: dict) -> None:
    def body(driver: Driver) -> None:
        @bounded(150)
        @given(
            request=REQUESTS,
            who=st.sampled_from(["user", "key", None]),
            content_type=st.sampled_from(["application/json", "application/x-protobuf", "text/plain", None]),
        )
        def check(request: tuple[str, str, bytes, dict[str, str]], who: str | None, content_type: str | None) -> None:
            method, path, content, params = request
            headers = {**(principals[who] if who else {}), **({"content-type": content_type} if content_type else {})}
            try:
                sent = client.request(method, path, content=content or None, params=params, headers=headers)
                response = driver.run(sent)
            except httpx.InvalidURL:
                return  # not a request a client can send
            _assert_sound(response, (method, path, content[:200], params))

        check()

    await _in_thread(body)
