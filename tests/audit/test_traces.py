"""Trace trees: nesting, out-of-order parents, cycles, chains, lists, bounded SQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import websockets
from sqlalchemy import event

from support import GraphQLWebSocket, error_code, gql, register

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def _at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


async def _log(client, account, **fields):
    result = await gql(client, "LogEvent", {"input": {"action": "step", **fields}}, token=account.token)
    assert "errors" not in result, result
    return result["data"]["logEvent"]


async def test_tree_nested_and_flat_with_out_of_order_parents(client):
    account = await register(client)
    # children arrive before their parents
    await _log(client, account, traceId="t", spanId="c1", parentSpanId="root", occurredAt=_at(1), durationMs=500)
    await _log(client, account, traceId="t", spanId="g1", parentSpanId="c1", occurredAt=_at(2), status="ERROR")
    before = await gql(client, "TraceTree", {"traceId": "t"}, token=account.token)
    assert [s["spanId"] for s in before["data"]["trace"]["rootSpans"]] == ["c1"]  # parent not there yet: a root
    await _log(client, account, traceId="t", spanId="root", occurredAt=_at(0), durationMs=5000)
    await _log(client, account, traceId="t", spanId="c2", parentSpanId="root", occurredAt=_at(3))

    tree = (await gql(client, "TraceTree", {"traceId": "t"}, token=account.token))["data"]["trace"]
    assert tree["spanCount"] == 4 and tree["truncated"] is False
    assert tree["status"] == "ERROR"
    assert tree["startedAt"] == _at(0).replace(":00Z", ":00.000Z")
    assert tree["durationMs"] == 5000
    [root] = tree["rootSpans"]
    assert root["spanId"] == "root"
    assert [c["spanId"] for c in root["children"]] == ["c1", "c2"]
    assert [g["spanId"] for g in root["children"][0]["children"]] == ["g1"]

    flat = (await gql(client, "TraceFlat", {"traceId": "t"}, token=account.token))["data"]["trace"]["spans"]
    assert [(s["spanId"], s["depth"], s["parentSpanId"]) for s in flat] == [
        ("root", 0, None),
        ("c1", 1, "root"),
        ("g1", 2, "c1"),
        ("c2", 1, "root"),
    ]


async def test_trace_content_is_read_only_when_selected(client, runtime):
    """A trace read that shows no prompt/response/metadata/args/result leaves them out of the query; one that
    selects any of them (also through a fragment) gets them all."""
    account = await register(client)
    await _log(client, account, traceId="tc", spanId="a", prompt="hello", metadata={"k": 1}, args={"x": [1]})
    await _log(client, account, traceId="tc", spanId="b", parentSpanId="a", response="world", result={"ok": True})
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if "FROM audit_logs" in statement and "trace_id" in statement:
            statements.append(statement)

    event.listen(runtime.db.engine.sync_engine, "before_cursor_execute", record)
    try:
        light = await gql(client, "query($t: String!) { trace(traceId: $t) { spanCount rootSpans { spanId "
                          "children { spanId checksum } } } }", {"t": "tc"}, token=account.token)  # fmt: skip
        fragment = ("query($t: String!) { trace(traceId: $t) { spans { ...Content } } } "
                    "fragment Content on AuditLog { spanId prompt response metadata args result }")  # fmt: skip
        heavy = await gql(client, fragment, {"t": "tc"}, token=account.token)
    finally:
        event.remove(runtime.db.engine.sync_engine, "before_cursor_execute", record)
    assert light["data"]["trace"]["rootSpans"][0]["children"][0]["spanId"] == "b"
    assert "NULL AS prompt" in statements[0] and "NULL AS prompt" not in statements[1]
    spans = {s["spanId"]: s for s in heavy["data"]["trace"]["spans"]}
    assert spans["a"]["prompt"] == "hello" and spans["a"]["metadata"] == {"k": 1} and spans["a"]["args"] == {"x": [1]}
    assert spans["b"]["response"] == "world" and spans["b"]["result"] == {"ok": True}


async def test_chain_and_parent_links(client):
    account = await register(client)
    ids = []
    parent = None
    for i in range(5):
        record = await _log(client, account, traceId="chain", spanId=f"s{i}", parentSpanId=parent, occurredAt=_at(i))
        ids.append(record["id"])
        parent = f"s{i}"
    leaf = (await gql(client, "AuditLog", {"id": ids[-1]}, token=account.token))["data"]["auditLog"]
    assert [c["spanId"] for c in leaf["chain"]] == ["s3", "s2", "s1", "s0"]
    assert leaf["parent"]["spanId"] == "s3"
    root = (await gql(client, "AuditLog", {"id": ids[0]}, token=account.token))["data"]["auditLog"]
    assert root["chain"] == [] and [c["spanId"] for c in root["children"]] == ["s1"]


async def test_parent_cycles_end(client):
    account = await register(client)
    a = await _log(client, account, traceId="loop", spanId="a", parentSpanId="b", occurredAt=_at(0))
    await _log(client, account, traceId="loop", spanId="b", parentSpanId="c", occurredAt=_at(1))
    await _log(client, account, traceId="loop", spanId="c", parentSpanId="a", occurredAt=_at(2))
    await _log(client, account, traceId="loop", spanId="self", parentSpanId="self", occurredAt=_at(3))
    tree = (await gql(client, "TraceFlat", {"traceId": "loop"}, token=account.token))["data"]["trace"]
    assert sorted(s["spanId"] for s in tree["spans"]) == ["a", "b", "c", "self"]  # each exactly once
    nested = (await gql(client, "TraceTree", {"traceId": "loop"}, token=account.token))["data"]["trace"]
    assert [r["spanId"] for r in nested["rootSpans"]] == ["a", "self"]
    chain = (await gql(client, "AuditLog", {"id": a["id"]}, token=account.token))["data"]["auditLog"]["chain"]
    assert [c["spanId"] for c in chain] == ["b", "c"]  # stops before coming back to `a`


async def test_audit_logs_filters_and_pagination(client, runtime):
    from workers.settings import run_worker

    account = await register(client)
    for i in range(7):
        await _log(
            client,
            account,
            action="llm_call" if i % 2 else "tool_use",
            occurredAt=_at(i),
            provider="openai" if i < 3 else "anthropic",
            riskLevel="HIGH" if i == 6 else "LOW",
            prompt="the quick brown fox" if i == 4 else "hello world",
            status="ERROR" if i == 5 else "OK",
        )

    async def ids(filter_):
        result = await gql(client, "AuditLogs", {"filter": filter_, "first": 500}, token=account.token)
        assert "errors" not in result, result
        return [e["node"]["occurredAt"] for e in result["data"]["auditLogs"]["edges"]]

    assert len(await ids({"search": "fox"})) == 0  # indexed off the ingest path, by the worker
    await run_worker(runtime, burst=True)
    assert len(await ids({})) == 7
    assert len(await ids({"action": ["llm_call"]})) == 3
    assert len(await ids({"action": ["llm_call", "tool_use"]})) == 7
    assert len(await ids({"provider": ["openai"]})) == 3
    assert len(await ids({"riskLevel": ["HIGH"]})) == 1
    assert len(await ids({"status": ["ERROR"]})) == 1
    assert len(await ids({"search": "fox"})) == 1
    assert len(await ids({"from": _at(2), "to": _at(5)})) == 3
    assert len(await ids({"hasAlerts": True})) == 0
    newest_first = await ids({})
    assert newest_first == sorted(newest_first, reverse=True)

    seen, after = [], None
    while True:
        page = await gql(client, "AuditLogs", {"first": 3, "after": after}, token=account.token)
        conn = page["data"]["auditLogs"]
        seen += [e["node"]["id"] for e in conn["edges"]]
        # a record arriving while paging does not shift the pages (it is newer than the cursor)
        await _log(client, account, action="late")
        if not conn["pageInfo"]["hasNextPage"]:
            break
        after = conn["pageInfo"]["endCursor"]
    assert len(seen) == len(set(seen)) == 7


async def test_traces_list(client):
    account = await register(client)
    for t in range(3):
        for s in range(t + 1):
            await _log(
                client,
                account,
                traceId=f"trace-{t}",
                spanId=f"s{s}",
                occurredAt=_at(t * 10 + s),
                status="ERROR" if (t, s) == (1, 1) else "OK",
            )
    result = await gql(client, "Traces", {"first": 2}, token=account.token)
    conn = result["data"]["traces"]
    assert [n["node"]["traceId"] for n in conn["edges"]] == ["trace-2", "trace-1"]
    assert [n["node"]["spanCount"] for n in conn["edges"]] == [3, 2]
    assert conn["edges"][1]["node"]["status"] == "ERROR"
    rest = await gql(client, "Traces", {"first": 2, "after": conn["pageInfo"]["endCursor"]}, token=account.token)
    assert [n["node"]["traceId"] for n in rest["data"]["traces"]["edges"]] == ["trace-0"]
    errors = await gql(client, "Traces", {"filter": {"status": "ERROR"}}, token=account.token)
    assert [n["node"]["traceId"] for n in errors["data"]["traces"]["edges"]] == ["trace-1"]
    window = await gql(client, "Traces", {"filter": {"from": _at(5), "to": _at(15)}}, token=account.token)
    assert [n["node"]["traceId"] for n in window["data"]["traces"]["edges"]] == ["trace-1"]


async def test_large_trace_is_read_with_a_bounded_number_of_statements(client, runtime):
    account = await register(client)
    spans = []
    for i in range(5000):  # a wide and deep tree: each span's parent is i // 4
        spans.append(
            {
                "action": "step",
                "traceId": "big",
                "spanId": f"s{i}",
                "parentSpanId": f"s{(i - 1) // 4}" if i else None,
                "occurredAt": _at(i / 1000),
            }
        )
    for start in range(0, len(spans), 1000):
        result = await gql(client, "LogEvents", {"input": spans[start : start + 1000]}, token=account.token)
        assert "errors" not in result

    statements: list[str] = []

    def count(_conn, _cursor, statement, *_args):
        statements.append(statement)

    event.listen(runtime.db.engine.sync_engine, "before_cursor_execute", count)
    try:
        tree = await gql(client, "TraceTree", {"traceId": "big"}, token=account.token)
        flat = await gql(client, "TraceFlat", {"traceId": "big"}, token=account.token)
    finally:
        event.remove(runtime.db.engine.sync_engine, "before_cursor_execute", count)
    assert tree["data"]["trace"]["spanCount"] == 5000
    assert len(flat["data"]["trace"]["spans"]) == 5000
    assert len(statements) <= 8, statements  # auth + one query per trace read, whatever the size
    depth_of_last = flat["data"]["trace"]["spans"][-1]["depth"]
    assert depth_of_last == 6


async def test_trace_over_the_limit_is_truncated(client, runtime, monkeypatch):
    from app.audit import service

    monkeypatch.setattr(service, "MAX_TRACE_SPANS", 10)
    account = await register(client)
    await gql(
        client,
        "LogEvents",
        {"input": [{"action": "s", "traceId": "long", "occurredAt": _at(i)} for i in range(15)]},
        token=account.token,
    )
    trace = (await gql(client, "TraceFlat", {"traceId": "long"}, token=account.token))["data"]["trace"]
    assert trace["truncated"] is True and trace["spanCount"] == 15 and len(trace["spans"]) == 10


async def test_trace_spans_subscription_replays_then_streams(client, live_server):
    account = await register(client)
    await _log(client, account, traceId="live", spanId="first", occurredAt=_at(0))
    ws = await GraphQLWebSocket.connect(live_server, {"authorization": f"Bearer {account.token}"})
    assert (await ws.receive())["type"] == "connection_ack"
    op = await ws.subscribe("TraceSpans", {"traceId": "live"})
    replayed = await ws.receive()
    assert replayed["id"] == op and replayed["payload"]["data"]["traceSpans"]["spanId"] == "first"
    await asyncio.sleep(0.2)  # subscribed: what comes now arrives live
    await _log(client, account, traceId="live", spanId="second", parentSpanId="first")
    await _log(client, account, traceId="other", spanId="unrelated")
    live_message = await ws.receive()
    assert live_message["payload"]["data"]["traceSpans"]["spanId"] == "second"
    other_org = await register(client, org="Other")
    await _log(client, other_org, traceId="live", spanId="theirs")
    await _log(client, account, traceId="live", spanId="third")
    assert (await ws.receive())["payload"]["data"]["traceSpans"]["spanId"] == "third"
    await ws.close()


async def test_subscription_needs_credentials(live_server):
    ws = await GraphQLWebSocket.connect(live_server, {})
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await ws.receive()
    assert closed.value.rcvd.code == 4403


async def test_bad_cursor_and_page_size(client):
    account = await register(client)
    assert error_code(await gql(client, "AuditLogs", {"after": "nope"}, token=account.token)) == "BAD_USER_INPUT"
    assert error_code(await gql(client, "Traces", {"first": 501}, token=account.token)) == "BAD_USER_INPUT"


async def test_search_sweeper_indexes_what_a_lost_job_missed(client, runtime):
    from app.audit import search

    account = await register(client)
    await _log(client, account, prompt="quarterly revenue forecast", response="draft attached")
    await _log(client, account, prompt="unrelated", response="nothing")
    await runtime.redis.flushdb()  # the queued indexing jobs are lost
    assert await search.sweep(runtime.db) == 0  # too recent: a transaction could still be committing
    assert await search.sweep(runtime.db, lag_seconds=0) == 2
    assert await search.sweep(runtime.db, lag_seconds=0) == 0  # remembered how far it got
    found = await gql(client, "AuditLogs", {"filter": {"search": "revenue forecast"}}, token=account.token)
    assert [e["node"]["prompt"] for e in found["data"]["auditLogs"]["edges"]] == ["quarterly revenue forecast"]
    other = await register(client, org="Other")
    theirs = await gql(client, "AuditLogs", {"filter": {"search": "revenue"}}, token=other.token)
    assert theirs["data"]["auditLogs"]["edges"] == []


_AGGREGATE = """
    SELECT org_id, trace_id, count(*) AS span_count, min(occurred_at) AS started_at,
        max(occurred_at + make_interval(secs => coalesce(duration_ms, 0) / 1000.0)) AS ended_at,
        count(*) FILTER (WHERE status = 'error') AS error_count,
        count(*) FILTER (WHERE status = 'blocked') AS blocked_count,
        array_remove(array_agg(DISTINCT agent_id), NULL) AS agent_ids
    FROM audit_logs GROUP BY org_id, trace_id ORDER BY org_id, trace_id
"""


async def _summaries(runtime):
    import sqlalchemy as sa

    async with runtime.db.system_session() as session:
        kept = (await session.execute(sa.text("SELECT * FROM audit_traces ORDER BY org_id, trace_id"))).all()
        aggregated = (await session.execute(sa.text(_AGGREGATE))).all()
    return [tuple(r) for r in kept], [tuple(r) for r in aggregated]


async def test_trace_summaries_kept_at_ingest_equal_the_aggregate(client, runtime):
    """The summary row of each trace (written in the ingest transaction) equals the aggregate over its records,
    through out-of-order spans, repeated idempotency keys, agents joining, errors and blocks, concurrent batches
    sharing traces, and traces without a traceId (one span each)."""
    account = await register(client)
    agents = []
    for name in ("a1", "a2"):
        created = await gql(client, "mutation($n: String!) { createAgent(input: {name: $n}) { id } }", {"n": name},
                            token=account.token)  # fmt: skip
        agents.append(created["data"]["createAgent"]["id"])
    await _log(client, account, traceId="s", spanId="late", occurredAt=_at(10), durationMs=2500, agentId=agents[1])
    await _log(client, account, traceId="s", spanId="early", occurredAt=_at(1), status="ERROR", idempotencyKey="k")
    await _log(client, account, traceId="s", spanId="again", occurredAt=_at(0), idempotencyKey="k")  # a replay
    await _log(client, account, action="alone")

    async def batch(offset: int) -> None:
        records = [
            {"action": "step", "traceId": f"c{i % 3}", "spanId": f"x{offset}-{i}", "occurredAt": _at(offset + i),
             "durationMs": i * 1.5, "status": "BLOCKED" if i == 4 else "OK", "agentId": agents[i % 2]}
            for i in range(12)
        ]  # fmt: skip
        result = await gql(client, "LogEvents", {"input": records}, token=account.token)
        assert "errors" not in result, result

    await asyncio.gather(*(batch(o) for o in range(0, 60, 12)))
    kept, aggregated = await _summaries(runtime)
    assert kept == aggregated and len(kept) == 5
    by_trace = {r[1]: r for r in kept}
    assert by_trace["s"][2] == 2 and by_trace["s"][5] == 1  # the replay counted nothing
    page = (await gql(client, "Traces", {"first": 10}, token=account.token))["data"]["traces"]["edges"]
    assert {n["node"]["traceId"] for n in page} == set(by_trace)
    s = next(n["node"] for n in page if n["node"]["traceId"] == "s")
    assert s["spanCount"] == 2 and s["status"] == "ERROR" and s["durationMs"] == 11500
    assert [a["id"] for a in s["agents"]] == [agents[1]]


async def test_traces_page_reads_roots_alone(client, runtime):
    """`traces { rootSpans { … } }` without `children` reads the roots' rows only (the other spans' ids and
    parents to find them), leaves out the JSON content unless selected, and gives the roots a full read gives,
    loops cut the same way."""
    account = await register(client)
    await _log(client, account, traceId="r", spanId="root", prompt="p0", metadata={"m": 0}, occurredAt=_at(0))
    for i in range(5):
        await _log(client, account, traceId="r", spanId=f"c{i}", parentSpanId="root", metadata={"big": "x" * 100},
                   occurredAt=_at(i + 1))  # fmt: skip
    await _log(client, account, traceId="r", spanId="orphan", parentSpanId="missing", prompt="p1", occurredAt=_at(9))
    await _log(client, account, traceId="loop", spanId="a", parentSpanId="b", occurredAt=_at(20))
    await _log(client, account, traceId="loop", spanId="b", parentSpanId="a", occurredAt=_at(21))
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if "FROM audit_logs" in statement:
            statements.append(statement)

    query = "{ traces(first: 3) { edges { node { traceId rootSpans { id spanId depth prompt %s } } } } }"
    event.listen(runtime.db.engine.sync_engine, "before_cursor_execute", record)
    try:
        light = await gql(client, query % "", token=account.token)
        assert "errors" not in light, light
        light_statements, statements[:] = list(statements), []
        heavy = await gql(client, query % "metadata", token=account.token)
    finally:
        event.remove(runtime.db.engine.sync_engine, "before_cursor_execute", record)
    roots = {e["node"]["traceId"]: e["node"]["rootSpans"] for e in light["data"]["traces"]["edges"]}
    assert [(s["spanId"], s["depth"], s["prompt"]) for s in roots["r"]] == [("root", 0, "p0"), ("orphan", 0, "p1")]
    assert [s["spanId"] for s in roots["loop"]] == ["a"]
    full = await gql(client, '{ trace(traceId: "loop") { rootSpans { spanId } } }', token=account.token)
    assert [s["spanId"] for s in full["data"]["trace"]["rootSpans"]] == ["a"]  # as a whole trace's read
    assert len(light_statements) == 2
    # the links alone (no content column), then the roots' rows without their JSON
    assert "prompt" not in light_statements[0] and "metadata" not in light_statements[0]
    assert "NULL AS metadata" in light_statements[1]
    assert "errors" not in heavy, heavy
    assert "NULL AS metadata" not in statements[1], statements
    heavy_roots = {e["node"]["traceId"]: e["node"]["rootSpans"] for e in heavy["data"]["traces"]["edges"]}
    assert [s["metadata"] for s in heavy_roots["r"]] == [{"m": 0}, {}]
