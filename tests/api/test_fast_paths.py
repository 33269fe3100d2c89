"""The fast paths are taken, not only equal in their results: the plain-leaf execution (app/api/execution.py),
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
    # fields with resolvers went the general way; plain attributes of a leaf type did not
    assert {("Query", "trace"), ("Trace", "rootSpans"), ("AuditLog", "children")} <= set(general)
    assert not {name for parent, name in general if parent == "AuditLog"} & {"spanId", "action", "durationMs"}
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
