"""The fast paths are taken, not only equal in their results: the plain-leaf and plain-object execution
(app/api/execution.py),
the shared live execution (app/api/shared_subscriptions.py) and the frame writer (app/runtime/websocket.py).
They lean on internals of strawberry, graphql-core and uvicorn (pinned to the tested minor versions in
pyproject.toml): if an upgrade moves one of them, these fail instead of the code quietly taking the slow path."""

from __future__ import annotations

import asyncio

import strawberry

from app.api import execution, shared_subscriptions
from app.api.context import Context, OperationScope, OrganizationContext
from app.api.execution import FastLeafExecutionContext
from app.runtime import websocket
from support import GraphQLWebSocket, create_api_key, gql, register

TRACE = '{ trace(traceId: "t") { spanCount rootSpans { spanId action children { spanId action durationMs } } } }'


async def test_plain_leaves_skip_the_per_field_machinery(client, app, monkeypatch):
    account = await register(client)
    spans = [
        {"action": "root", "traceId": "t", "spanId": "a", "durationMs": 5},
        {"action": "child", "traceId": "t", "spanId": "b", "parentSpanId": "a", "durationMs": 2},
    ]
    assert "errors" not in await gql(client, "LogEvents", {"input": spans}, token=account.token)
    general: list[tuple[str, str]] = []
    execute_field = FastLeafExecutionContext.execute_field

    def spy(self, parent_type, source, field_details_list, path, position_context):
        general.append((parent_type.name, field_details_list[0].node.name.value))
        return execute_field(self, parent_type, source, field_details_list, path, position_context)

    monkeypatch.setattr(FastLeafExecutionContext, "execute_field", spy)
    result = await gql(client, TRACE, token=account.token)
    [root] = result["data"]["trace"]["rootSpans"]
    assert (root["spanId"], root["action"]) == ("a", "root")
    assert root["children"] == [{"spanId": "b", "action": "child", "durationMs": 2.0}]
    # fields with resolvers went the general way; the spans (plain objects: plain leaves, and children read
    # directly from the assembled tree) did not go through it at all
    assert {("Query", "trace"), ("Trace", "rootSpans")} <= set(general)
    assert not [name for parent, name in general if parent == "AuditLog"]
    schema = app.state.graphql.schema._schema
    assert FastLeafExecutionContext._plans[(schema.get_type("AuditLog"), "spanId")] is not None


LIVE = "subscription { alerts { auditLogId rule { name } auditLog { spanId } } }"


async def _log_alert(client, account, span: str) -> str:
    result = await gql(client, "LogEvent", {"input": {"action": "llm_call", "spanId": span,
                       "prompt": "write to someone@example.com"}}, token=account.token)  # fmt: skip
    assert "errors" not in result, result
    return result["data"]["logEvent"]["id"]


async def test_one_shared_execution_of_the_organisation_alone_framed_once(client, app, live_server, monkeypatch):
    """A user and an API key of one organisation subscribe alike: one execution serves both, under a context
    that knows the organisation and no subscriber; each gets its frames through the frame writer; the first
    subscriber leaving does not end it for the other."""
    alice = await register(client, org="Alice")
    key, _ = await create_api_key(client, alice)
    rule = {"name": "Email", "kind": "PII", "config": {"types": ["email"]}}
    assert "errors" not in await gql(client, "CreateComplianceRule", {"input": rule}, token=alice.token)

    streams: list[shared_subscriptions.SharedStream] = []
    contexts: list[OperationScope] = []
    frames: list[int] = []
    stream_init, db, write = shared_subscriptions.SharedStream.__init__, OperationScope.db, websocket.FrameWriter.write

    def spy_stream(self, *args, **kwargs):
        streams.append(self)
        stream_init(self, *args, **kwargs)

    async def spy_db(self):
        contexts.append(self)
        return await db(self)

    def spy_write(self, data):
        frames.append(len(data))
        return write(self, data)

    monkeypatch.setattr(shared_subscriptions.SharedStream, "__init__", spy_stream)
    monkeypatch.setattr(OperationScope, "db", spy_db)
    monkeypatch.setattr(websocket.FrameWriter, "write", spy_write)

    user_ws = await GraphQLWebSocket.connect(live_server, {"authorization": f"Bearer {alice.token}"})
    key_ws = await GraphQLWebSocket.connect(live_server, {"x-api-key": key})
    for ws in (user_ws, key_ws):
        assert (await ws.receive())["type"] == "connection_ack"
        await ws.subscribe(LIVE)
    shared = app.state.graphql.graphql_transport_ws_handler_class.shared
    deadline = asyncio.get_running_loop().time() + 5
    while not (len(shared) == 1 and len(streams[0].members) == 2):
        assert asyncio.get_running_loop().time() < deadline, "the subscribers never shared a stream"
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)  # the execution is listening
    try:
        log_id = await _log_alert(client, alice, "s1")
        for ws in (user_ws, key_ws):
            message = await ws.receive()
            expected = {"auditLogId": log_id, "rule": {"name": "Email"}, "auditLog": {"spanId": "s1"}}
            assert message["payload"] == {"data": {"alerts": expected}}, message
        assert len(streams) == 1  # one execution for both
        assert len(frames) >= 2  # each member's frame went through the writer, not the ASGI send

        # the fields ran under the stream's own context: the organisation, and nobody in it
        live = [c for c in contexts if not isinstance(c, Context)]
        assert live and all(isinstance(c, OrganizationContext) for c in live)
        principal = await live[0].principal()
        assert (principal.org_id, principal.kind) == (alice.org_id, "organization")
        assert (principal.user_id, principal.api_key_id, principal.role, principal.actor_name) == (None,) * 4
        assert not hasattr(live[0], "connection") and not hasattr(live[0], "source_ip")

        await user_ws.close()  # the first subscriber leaves: the execution was never its own
        log_id = await _log_alert(client, alice, "s2")
        assert (await key_ws.receive())["payload"]["data"]["alerts"]["auditLogId"] == log_id
        assert len(streams) == 1
    finally:
        await key_ws.close()


@strawberry.type
class SliceNode:
    n: int
    children: list[SliceNode]

    @strawberry.field
    def fails(self) -> int | None:
        if self.n == 1234:
            raise ValueError("this one fails")
        return self.n


@strawberry.type
class SliceQuery:
    @strawberry.field
    def nodes(self) -> list[SliceNode]:
        return [SliceNode(n=i, children=[SliceNode(n=j, children=[]) for j in range(i % 3)]) for i in range(3000)]


async def test_big_results_are_completed_in_slices_other_tasks_run_between():
    """A result of thousands of list items (pure Python, no I/O) pauses every YIELD_EVERY items: a task
    spinning beside it runs in between, and the result (nested lists, nulls, errors and their paths) is the
    same as without slices."""
    schema = strawberry.Schema(query=SliceQuery, execution_context_class=FastLeafExecutionContext)
    query = "{ nodes { n fails children { n } } }"
    ticks = 0
    running = True

    async def spin() -> None:
        nonlocal ticks
        while running:
            ticks += 1
            await asyncio.sleep(0)

    spinner = asyncio.create_task(spin())
    await asyncio.sleep(0)
    before = ticks
    sliced = await schema.execute(query)
    during = ticks - before
    running = False
    await spinner
    items = 3000 + sum(i % 3 for i in range(3000))
    assert during >= items // execution.YIELD_EVERY - 2, during
    # the same answer in one go
    original = execution.YIELD_EVERY
    execution.YIELD_EVERY = 10**9
    try:
        whole = await schema.execute(query)
    finally:
        execution.YIELD_EVERY = original
    assert sliced.data == whole.data
    assert sliced.data["nodes"][1234]["fails"] is None and sliced.data["nodes"][5]["children"] == [{"n": 0}, {"n": 1}]
    assert [(e.message, e.path) for e in sliced.errors] == [(e.message, e.path) for e in whole.errors]
    assert sliced.errors[0].path == ["nodes", 1234, "fails"]


# a trace of 7 spans over three levels, agents on some, one span whose parent never arrived (a second root)
PLAIN_SPANS = [
    {"action": "root", "traceId": "p", "spanId": "a", "durationMs": 5, "status": "OK"},
    {"action": "plan", "traceId": "p", "spanId": "b", "parentSpanId": "a", "status": "ERROR", "riskLevel": "HIGH"},
    {"action": "tool", "traceId": "p", "spanId": "c", "parentSpanId": "a", "metadata": {"k": [1, 2]}},
    {"action": "llm", "traceId": "p", "spanId": "d", "parentSpanId": "b", "prompt": "hello", "durationMs": 1.5},
    {"action": "llm", "traceId": "p", "spanId": "e", "parentSpanId": "b", "verb": "stripe:refund"},
    {"action": "leaf", "traceId": "p", "spanId": "f", "parentSpanId": "d"},
    {"action": "orphan", "traceId": "p", "spanId": "g", "parentSpanId": "missing"},
]
PLAIN_QUERIES = {
    "aliases": """query { trace(traceId: "p") { rootSpans { sid: spanId a: action children { x: spanId
        children { spanId y: status children { spanId } } } } } }""",
    "fragments": """query { trace(traceId: "p") { rootSpans { ...Span children { ...Span children { ... on AuditLog {
        spanId riskLevel } ...Span } } } } }
        fragment Span on AuditLog { id spanId parentSpanId depth action status occurredAt durationMs prompt
            metadata }""",
    "typename": """query { trace(traceId: "p") { __typename rootSpans { __typename spanId
        children { __typename t: __typename spanId } } } }""",
    "directives": """query($with: Boolean!, $without: Boolean!) { trace(traceId: "p") { rootSpans {
        spanId action @include(if: $with) status @skip(if: $with)
        children @include(if: $with) { spanId durationMs @skip(if: $without) children @skip(if: $without) { spanId } }
        } } }""",
    "merged": """query { trace(traceId: "p") { rootSpans {
        children { spanId } children { action children { id } } } } }""",
    "flat": """query { trace(traceId: "p") { spans { spanId parentSpanId depth action riskLevel agentId } } }""",
}
# selections with a field that is not plain: the list under it goes the general way
GENERAL_QUERIES = {
    "relation": """query { trace(traceId: "p") { rootSpans { spanId children { spanId agent { id } } } } }""",
    "parent": """query { trace(traceId: "p") { rootSpans { children { children { spanId parent { spanId } } } } } }""",
}


async def test_plain_objects_are_made_directly_and_equal_the_general_path(client, monkeypatch):
    """Under a trace, spans whose selection is plain (leaves, __typename, children, whatever the aliases,
    fragments, @include/@skip) are completed directly, never through execute_field; a selection with a
    relation (agent, parent) leaves the list to the general path. Either way the result is exactly the general
    execution's (FastLeafExecutionContext.plain_objects off)."""
    account = await register(client)
    assert "errors" not in await gql(client, "LogEvents", {"input": PLAIN_SPANS}, token=account.token)
    general: list[tuple[str, str]] = []
    slices: list[int] = []
    execute_field, plain_slice = FastLeafExecutionContext.execute_field, FastLeafExecutionContext._plain_slice

    def spy_field(self, parent_type, source, field_details_list, path, position_context):
        general.append((parent_type.name, field_details_list[0].node.name.value))
        return execute_field(self, parent_type, source, field_details_list, path, position_context)

    def spy_slice(self, work):
        slices.append(len(work))
        return plain_slice(self, work)

    monkeypatch.setattr(FastLeafExecutionContext, "execute_field", spy_field)
    monkeypatch.setattr(FastLeafExecutionContext, "_plain_slice", spy_slice)

    async def both(query: str, variables: dict | None = None) -> tuple[dict, dict, list, list]:
        general.clear()
        slices.clear()
        fast = await gql(client, query, variables, token=account.token)
        fast_general, fast_slices = list(general), list(slices)
        monkeypatch.setattr(FastLeafExecutionContext, "plain_objects", False)
        try:
            slow = await gql(client, query, variables, token=account.token)
        finally:
            monkeypatch.setattr(FastLeafExecutionContext, "plain_objects", True)
        assert "errors" not in fast, fast
        fast.pop("extensions"), slow.pop("extensions")  # the cost budget left differs from one read to the next
        return fast, slow, fast_general, fast_slices

    for name, query in PLAIN_QUERIES.items():
        variants = [{"with": w, "without": wo} for w in (True, False) for wo in (True, False)]
        for variables in variants if "$with" in query else [None]:
            fast, slow, fast_general, fast_slices = await both(query, variables)
            assert fast == slow, (name, variables)
            assert fast_slices, name  # the plain completion ran
            assert not [f for parent, f in fast_general if parent == "AuditLog"], (name, fast_general)
    fast, _slow, _g, _s = await both(PLAIN_QUERIES["aliases"])
    [root, orphan] = fast["data"]["trace"]["rootSpans"]
    assert (root["sid"], orphan["sid"], [c["x"] for c in root["children"]]) == ("a", "g", ["b", "c"])
    assert root["children"][0]["children"][0]["children"] == [{"spanId": "f"}]

    for name, query in GENERAL_QUERIES.items():
        fast, slow, fast_general, _fast_slices = await both(query)
        assert fast == slow, name
        assert ("AuditLog", "children") in fast_general, name  # the nested lists went the general way


@strawberry.type
class PlainItem:
    n: int
    label: str  # None for one item: "Cannot return null for non-nullable field"
    items: list[PlainItem] | None


@strawberry.type
class PlainQuery:
    @strawberry.field
    def items(self) -> list[PlainItem]:
        label = lambda i: None if i == 77 else f"n{i}"  # noqa: E731
        return [PlainItem(n=i, label=label(i), items=[PlainItem(n=-i, label="c", items=None)]) for i in range(500)]


async def test_an_unusual_value_completes_the_general_way_with_its_errors(monkeypatch):
    """A null for a non-null field deep in a plain list: the list is completed again the general way, so the
    error, its path and the nulls that propagate are exactly graphql-core's; without one, the plain result
    (paused every YIELD_EVERY objects) equals the general one."""
    schema = strawberry.Schema(query=PlainQuery, execution_context_class=FastLeafExecutionContext)
    ticks, running = 0, True

    async def spin() -> None:
        nonlocal ticks
        while running:
            ticks += 1
            await asyncio.sleep(0)

    slices: list[int] = []
    plain_slice = FastLeafExecutionContext._plain_slice

    def spy_slice(self, work):
        slices.append(len(work))
        return plain_slice(self, work)

    monkeypatch.setattr(FastLeafExecutionContext, "_plain_slice", spy_slice)
    spinner = asyncio.create_task(spin())
    await asyncio.sleep(0)
    before = ticks
    await schema.execute("{ items { n items { n } } }")  # 1,000 plain objects: still paused every YIELD_EVERY
    during = ticks - before
    running = False
    await spinner
    assert during >= 1000 // execution.YIELD_EVERY - 2, during
    assert len(slices) >= 1000 // execution.YIELD_EVERY  # made directly, slice after slice
    results = {}
    for plain in (True, False):
        FastLeafExecutionContext.plain_objects = plain
        try:
            results[plain] = (
                await schema.execute("{ items { n label items { n label items { n } } } }"),
                await schema.execute("{ items { n items { n __typename } } }"),
            )
        finally:
            FastLeafExecutionContext.plain_objects = True
    (broken, fine), (broken_general, fine_general) = results[True], results[False]
    assert broken.data == broken_general.data is None
    assert [(e.message, e.path) for e in broken.errors] == [(e.message, e.path) for e in broken_general.errors]
    assert broken.errors[0].path == ["items", 77, "label"]
    assert fine.errors is None and fine.data == fine_general.data
    assert fine.data["items"][3] == {"n": 3, "items": [{"n": -3, "__typename": "PlainItem"}]}
