"""Query cost: the static analysis, the per-operation maximum, the per-principal budget, search bounds and the
statement timeout."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from graphql import parse

from app.api.cost import CostAnalysis
from app.api.schema import build_schema
from app.db import JOB_STATEMENT_TIMEOUT, Database, is_statement_timeout
from app.runtime.resources import Runtime
from app.settings import Settings
from support import GraphQLWebSocket, create_api_key, error_code, gql, operation, register

ANALYSIS = CostAnalysis(build_schema()._schema)

# the attacks of issue 15, item 7
SPANS_CHAIN = "{ auditLogs(first: 50) { edges { node { trace { spans { id chain { id } } } } } } }"
DEEP_500 = "{ agents(first: 500) { edges { node { traces(first: 500) { edges { node { spans { trace { spans { id } } } } } } } } } }"  # noqa: E501
METRIC = 'metrics(from: "2026-01-01T00:00:00Z", groupBy: [AGENT, ACTION, STATUS, HOUR]) { count }'
METRICS_30 = "{ " + " ".join(f"m{i}: {METRIC}" for i in range(30)) + " }"
ANALYTICS_30 = "{ " + " ".join(f"a{i}: policyAnalytics {{ recordsEvaluated }}" for i in range(30)) + " }"


def cost(query: str, variables: dict[str, Any] | None = None, name: str | None = None) -> int | None:
    return ANALYSIS.operation_cost(parse(query), name, variables)


def test_nodes_counted_as_github_does() -> None:
    # a connection: one node, then `first` edges and nodes; leaves are free
    assert cost("{ auditLogs(first: 10) { edges { node { id action } } pageInfo { hasNextPage } } }") == 1 + 10 + 10 + 1
    assert cost("query($n: Int) { auditLogs(first: $n) { edges { node { id } } } }", {"n": 200}) == 1 + 200 + 200
    # no `first`: the default page size
    assert cost("{ auditLogs { edges { node { id } } } }") == 1 + 50 + 50
    # nested connections multiply
    assert cost("{ agents(first: 10) { edges { node { traces(first: 5) { edges { node { traceId } } } } } } }") == (
        1 + 10 + 10 + 10 * (1 + 5 + 5)
    )
    # fragments and aliases count like inline fields
    assert cost("{ a: me { user { id } } b: me { user { id } } }") == 2 * cost("{ me { user { id } } }")
    assert cost('fragment F on AuditLog { id } { auditLog(id: "x") { ...F } }') == 1
    # any product stays a number JSON carries exactly
    huge = "{ agents(first: 2000000000) { edges { node { traces(first: 2000000000) { edges { node { spans { id } } } } } } } }"  # noqa: E501
    assert cost(huge) == 2**53 - 1
    # introspection is free
    assert cost("{ __schema { types { name fields { name } } } }") == 0


def test_declared_bounds_and_weights() -> None:
    # a trace's spans: up to 10,000; the tree's children do not multiply within one trace
    flat = cost('{ trace(traceId: "t") { spans { id } } }')
    tree = cost('{ trace(traceId: "t") { rootSpans { children { children { id } } } } }')
    assert flat == 10 + 1 + 10_000
    assert tree == 10 + 1 + 3 * 10_000
    # but every span's chain does: 10,000 × 10,000
    assert cost('{ trace(traceId: "t") { spans { chain { id } } } }') > 10**8
    # expensive fields carry their weight, search too (declared on the input field)
    plain = cost("{ auditLogs(first: 1) { edges { node { id } } } }")
    searched = cost('{ auditLogs(first: 1, filter: {search: "refund"}) { edges { node { id } } } }')
    assert searched == plain + 1_000
    assert cost("{ verifyAuditTrail { ok } }") >= 25_000
    assert cost(METRICS_30) > 30 * 5_000
    # the documents frontends copy stay within the default limit
    limit = Settings().max_query_cost
    assert cost(operation("TraceTree"), {"traceId": "t"}, "TraceTree") <= limit
    assert cost(operation("AuditLogs"), {"first": 500}, "AuditLogs") <= limit


def test_weights_through_variables_and_unweighted_inputs_left_to_execution() -> None:
    """A weighted input counts however it arrives (a whole variable, a variable inside a literal); an input
    without weights (an ingest batch's records) is not coerced by the analysis: its values do not matter."""
    plain = cost("{ auditLogs(first: 1) { edges { node { id } } } }")
    whole = "query($f: AuditLogFilter) { auditLogs(first: 1, filter: $f) { edges { node { id } } } }"
    assert cost(whole, {"f": {"search": "refund"}}) == plain + 1_000
    inside = "query($s: String, $a: [String!]) { auditLogs(first: 1, filter: {search: $s, action: $a}) { edges { node { id } } } }"  # noqa: E501
    assert cost(inside, {"s": "refund", "a": ["x"]}) == plain + 1_000
    assert cost(inside, {"a": ["x"]}) == plain
    batch = "mutation($input: [AuditLogInput!]!) { logEvents(input: $input) { id } }"
    records = [{"action": "step", "metadata": {"k": i}} for i in range(1000)]
    assert cost(batch, {"input": records}) == cost(batch, {"input": [{"not": "even valid"}]}) == 100
    # a variable that does matter and does not coerce: left to execution to report
    assert cost("query($n: Int) { auditLogs(first: $n) { edges { node { id } } } }", {"n": "many"}) is None


def test_the_attacks_exceed_the_default_limit() -> None:
    limit = Settings().max_query_cost
    for query in (SPANS_CHAIN, DEEP_500, METRICS_30, ANALYTICS_30):
        assert cost(query) > limit, query


async def test_costly_operation_refused_before_it_runs(client: httpx.AsyncClient) -> None:
    account = await register(client)
    key, _ = await create_api_key(client, account)
    result = await gql(client, SPANS_CHAIN, api_key=key)
    assert error_code(result) == "BAD_USER_INPUT"
    error = result["errors"][0]
    assert error["extensions"]["cost"] > error["extensions"]["limit"] == Settings().max_query_cost
    assert "exceeds the limit" in error["message"]
    assert result.get("data") is None
    assert result["extensions"]["cost"]["requested"] == error["extensions"]["cost"]


async def test_cost_reported_in_extensions(client: httpx.AsyncClient) -> None:
    account = await register(client)
    key, _ = await create_api_key(client, account)
    result = await gql(client, "{ auditLogs(first: 20) { edges { node { id } } } }", api_key=key)
    assert "errors" not in result, result
    report = result["extensions"]["cost"]
    assert report["requested"] == 41
    assert report["limit"] == Settings().max_query_cost
    budget = Settings().query_cost_budget
    assert report["budget"] == budget
    assert budget - 41 - 5 <= report["remaining"] <= budget - 41
    again = await gql(client, "{ auditLogs(first: 20) { edges { node { id } } } }", api_key=key)
    assert again["extensions"]["cost"]["remaining"] <= budget - 41  # refilled at 1,000 points a second
    # what it really returned (the connection alone: no records yet) is what it finally cost
    assert report["requestedQueryCost"] == 41 and report["actualQueryCost"] == 1
    throttle = report["throttleStatus"]
    assert throttle["maximumAvailable"] == budget and throttle["restoreRate"] == Settings().query_cost_refill_per_second
    assert budget - 1 - 5 <= throttle["currentlyAvailable"] <= budget


def test_actual_cost_counts_what_the_result_holds() -> None:
    def actual(query: str, data: Any, variables: dict[str, Any] | None = None, name: str | None = None) -> int | None:
        return ANALYSIS.actual_cost(parse(query), name, variables, data)

    page = "{ auditLogs(first: 10) { edges { node { id prompt } } pageInfo { hasNextPage } } }"
    three = {"auditLogs": {"edges": [{"node": {"id": str(i), "prompt": "p"}} for i in range(3)], "pageInfo": {}}}
    # the connection, 3 edges, 3 nodes (each with its weighted prompt), pageInfo; against 10 of each requested
    assert actual(page, three) == 1 + 3 + 3 * (1 + 1) + 1
    assert cost(page) == 1 + 10 + 10 * (1 + 1) + 1
    full = {"auditLogs": {"edges": [{"node": {"id": str(i), "prompt": "p"}} for i in range(10)], "pageInfo": {}}}
    assert actual(page, full) == cost(page)
    # a trace tree: the trace (and its weight), its agents and every span returned, however deep
    tree = {
        "trace": {
            "traceId": "t",
            "agents": [],
            "rootSpans": [{"id": "a", "children": [{"id": "b", "children": []}, {"id": "c", "children": []}]}],
        }
    }
    assert actual(operation("TraceTree"), tree, {"traceId": "t"}, "TraceTree") == 1 + 10 + 3
    # a flat list of objects with weighted leaves (counted in one loop): each object, plus the weight of each
    # weighted field it holds (null or not); a field it does not hold (skipped) counts nothing
    spans = [{"id": "a", "prompt": "p", "metadata": {}}, {"id": "b", "prompt": None, "metadata": None}, {"id": "c"}]
    flat = '{ trace(traceId: "t") { spans { id prompt metadata } } }'
    assert actual(flat, {"trace": {"spans": spans}}) == 1 + 10 + 3 + 3 + 1
    assert actual(operation("TraceTree"), {"trace": None}, {"traceId": "t"}, "TraceTree") == 10
    # aliases count apiece, fragments like inline fields; absent fields (a skipped one) count nothing
    assert actual("{ a: me { user { id } } b: me { user { id } } }", {"a": {"user": {"id": "u"}}, "b": None}) == 2
    skipped = '{ me { user @skip(if: true) { id } } auditLog(id: "x") { id } }'
    assert actual(skipped, {"me": {}, "auditLog": None}) == 1
    assert actual("{ __typename }", {"__typename": "Query"}) == 0


async def test_actual_cost_is_refunded_so_big_traces_can_be_read_again(client: httpx.AsyncClient) -> None:
    """A dashboard opening big trace trees: each TraceTree is charged ~60,000 points up front (its static cost,
    which the default budget of 200,000 allows three times in a row), then what the trace really returned is
    all it costs."""
    account = await register(client)
    records = [
        {"action": "step", "traceId": "big", "spanId": f"s{i}", "parentSpanId": f"s{(i - 1) // 3}" if i else None}
        for i in range(40)
    ]
    stored = await gql(client, "LogEvents", {"input": records}, token=account.token)
    assert "errors" not in stored, stored
    budget = Settings().query_cost_budget
    for _ in range(6):
        result = await gql(client, "TraceTree", {"traceId": "big"}, token=account.token)
        assert "errors" not in result, result
        report = result["extensions"]["cost"]
        assert report["requestedQueryCost"] == cost(operation("TraceTree"), {"traceId": "big"}, "TraceTree")
        assert report["requestedQueryCost"] > budget / 4
        assert report["actualQueryCost"] == 1 + 10 + 40  # the trace, its weight, its 40 spans (no agents)
    throttle = result["extensions"]["cost"]["throttleStatus"]
    assert throttle["currentlyAvailable"] >= budget - 6 * 51 - 100  # LogEvents cost 100 of the user's budget
    # an operation that fails keeps its whole charge
    failed = await gql(
        client, '{ auditLogs(first: 20, after: "not a cursor") { edges { node { id } } } }', token=account.token
    )
    assert error_code(failed) == "BAD_USER_INPUT", failed
    report = failed["extensions"]["cost"]
    assert report["throttleStatus"]["currentlyAvailable"] == report["remaining"]


@pytest.fixture
async def small_budget(settings: Settings, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    from app.main import create_app

    own = settings.model_copy(
        update={"max_query_cost": 500, "query_cost_budget": 1_000, "query_cost_refill_per_second": 50}
    )
    app = create_app(own, runtime=dataclasses.replace(runtime, settings=own))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.11", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


async def test_budget_per_principal_runs_out_and_refills(small_budget: httpx.AsyncClient) -> None:
    http = small_budget
    account = await register(http)
    key, _ = await create_api_key(http, account)
    other = await register(http, org="Other")
    # 200 records, so that the pages below return all they ask for (what is not returned is refunded)
    records = [{"action": "step", "metadata": {"n": i}} for i in range(200)]
    assert error_code(await gql(http, "LogEvents", {"input": records}, token=account.token)) is None
    page = "{ auditLogs(first: 200) { edges { node { id } } } }"  # 401 points
    assert error_code(await gql(http, page, api_key=key)) is None
    assert error_code(await gql(http, page, api_key=key)) is None
    refused = await gql(http, page, api_key=key)
    assert error_code(refused) == "RATE_LIMITED"
    assert refused["errors"][0]["extensions"]["retryAfter"] >= 1
    assert refused["errors"][0]["extensions"]["cost"] == 401
    # another principal has its own budget; small operations of the same key still pass
    assert error_code(await gql(http, page, token=other.token)) is None
    assert error_code(await gql(http, "{ me { organization { id } } }", api_key=key)) is None
    await asyncio.sleep(5)  # 50 points a second
    assert error_code(await gql(http, page, api_key=key)) is None


async def test_search_is_bounded(client: httpx.AsyncClient) -> None:
    account = await register(client)
    query = "query($s: String) { auditLogs(first: 1, filter: {search: $s}) { edges { node { id } } } }"
    many = " OR ".join(f"term{i}" for i in range(40))  # 40 terms in 280 characters
    result = await gql(client, query, {"s": many}, token=account.token)
    assert error_code(result) == "BAD_USER_INPUT"
    assert "at most 32 terms" in result["errors"][0]["message"]
    long = "x" * 5_000
    assert error_code(await gql(client, query, {"s": long}, token=account.token)) == "BAD_USER_INPUT"
    ok = await gql(client, query, {"s": '"refund issued" OR chargeback -test'}, token=account.token)
    assert "errors" not in ok, ok


async def test_statement_timeout_for_requests_not_for_jobs(settings: Settings) -> None:
    assert settings.database_url is not None
    db = Database(settings.database_url, pool_size=1, max_overflow=0, statement_timeout_ms=200)
    try:
        async with db.system_session() as session:
            with pytest.raises(sa.exc.DBAPIError) as caught:
                await session.execute(sa.text("SELECT pg_sleep(1)"))
            assert is_statement_timeout(caught.value)

        async def as_a_job() -> None:
            JOB_STATEMENT_TIMEOUT.set(0)
            async with db.system_session() as session:
                await session.execute(sa.text("SELECT pg_sleep(0.4)"))

        await asyncio.create_task(as_a_job())
        # the job's SET LOCAL ended with its transaction: the pooled connection has the request timeout again
        async with db.system_session() as session:
            with pytest.raises(sa.exc.DBAPIError):
                await session.execute(sa.text("SELECT pg_sleep(1)"))
    finally:
        await db.dispose()


async def test_subscription_documents_are_cost_checked(client: httpx.AsyncClient, live_server: str) -> None:
    account = await register(client)
    ws = await GraphQLWebSocket.connect(live_server, {"authorization": f"Bearer {account.token}"})
    try:
        assert (await ws.receive())["type"] == "connection_ack"
        op = await ws.subscribe('subscription { traceSpans(traceId: "t") { id trace { spans { chain { id } } } } }')
        message = await ws.receive()
        assert message["id"] == op
        payload = message["payload"]
        errors = payload if isinstance(payload, list) else payload.get("errors")
        assert errors[0]["extensions"]["code"] == "BAD_USER_INPUT"
        assert "exceeds the limit" in errors[0]["message"]
    finally:
        await ws.close()
