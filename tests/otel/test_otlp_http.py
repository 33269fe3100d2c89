"""POST /v1/traces end to end: the real OpenTelemetry SDK and its OTLP/HTTP exporter against a real uvicorn,
OTLP JSON through httpx, and every rejection with its status and nothing written."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from google.protobuf import json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode, format_span_id, format_trace_id

from support import GraphQLWebSocket, create_api_key, gql, register

PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}


# --- helpers ---------------------------------------------------------------------------------------
def recorder(service_name: str | None = "support-bot") -> tuple[Any, InMemorySpanExporter]:
    """A tracer whose finished spans are collected, to be exported explicitly (in chosen batches)."""
    attributes = {"service.name": service_name} if service_name else {}
    provider = TracerProvider(resource=Resource.create(attributes))
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return provider.get_tracer("agent.runtime", "1.2.3"), memory


async def export_with_sdk(base: str, key: str, spans: list[ReadableSpan], **options: Any) -> SpanExportResult:
    """The SDK's own OTLP/HTTP exporter (protobuf). It is blocking: run it off the event loop that serves."""
    exporter = OTLPSpanExporter(endpoint=f"http://{base}/v1/traces", headers={"X-API-Key": key}, timeout=10, **options)
    try:
        return await asyncio.to_thread(exporter.export, spans)
    finally:
        exporter.shutdown()


def otlp_json(spans: list[ReadableSpan]) -> dict[str, Any]:
    """ExportTraceServiceRequest as OTLP JSON: protobuf's JSON mapping with hex ids (enums as ints)."""
    document = json_format.MessageToDict(encode_spans(spans), use_integers_for_enums=True)
    for resource_spans in document["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return document


async def count(runtime: Any, sql: str = "SELECT count(*) FROM audit_logs") -> int:
    async with runtime.db.engine.connect() as conn:
        return int((await conn.execute(sa.text(sql))).scalar_one())


async def nothing_written(runtime: Any) -> bool:
    return (await count(runtime), await count(runtime, "SELECT count(*) FROM agents")) == (0, 0)


def decoded_status(response: httpx.Response) -> status_pb2.Status:
    status = status_pb2.Status()
    if response.headers["content-type"].startswith("application/x-protobuf"):
        status.ParseFromString(response.content)
    else:
        json_format.Parse(response.text, status)
    return status


async def records_of(client: httpx.AsyncClient, key: str, trace_id: str) -> dict[str, dict[str, Any]]:
    result = await gql(client, "AuditLogs", {"filter": {"traceId": trace_id}, "first": 100}, api_key=key)
    assert "errors" not in result, result
    return {e["node"]["spanId"]: e["node"] for e in result["data"]["auditLogs"]["edges"]}


def tree_shape(nodes: list[dict[str, Any]], name_of: Callable[[dict[str, Any]], str]) -> list[Any]:
    return [[name_of(n), tree_shape(n.get("children") or [], name_of)] for n in nodes]


async def setup(client: httpx.AsyncClient) -> tuple[Any, str]:
    account = await register(client)
    key, _ = await create_api_key(client, account)
    return account, key


def _spans_counter(outcome: str) -> float:
    from app.runtime.telemetry import REGISTRY

    return REGISTRY.get_sample_value("agentrail_otlp_spans_total", {"outcome": outcome}) or 0.0


# --- round trips -----------------------------------------------------------------------------------
async def test_genai_span_tree_round_trips_through_the_sdk_exporter(client, runtime, live_server):
    account, key = await setup(client)
    tracer, memory = recorder("support-bot")
    with tracer.start_as_current_span("invoke_agent refunds", attributes={"gen_ai.operation.name": "invoke_agent"}):
        with tracer.start_as_current_span(
            "chat gpt-4o",
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.response.model": "gpt-4o-2024-08-06",
                "gen_ai.usage.input_tokens": 120,
                "gen_ai.usage.output_tokens": 30,
                "gen_ai.request.temperature": 0.2,
                "gen_ai.input.messages": json.dumps(
                    [{"role": "user", "parts": [{"type": "text", "content": "Refund order 1234"}]}]
                ),
                "gen_ai.output.messages": json.dumps(
                    [
                        {
                            "role": "assistant",
                            "parts": [{"type": "tool_call", "name": "refund", "arguments": {"order": 1234}}],
                            "finish_reason": "tool_call",
                        }
                    ]
                ),
            },
        ):
            pass
        with tracer.start_as_current_span(
            "execute_tool refund",
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "stripe:create_refund",
                "gen_ai.tool.call.arguments": '{"order": 1234, "amount": 1200}',
                "gen_ai.tool.call.result": '{"refund": "re_1"}',
            },
        ) as tool:
            tool.set_status(Status(StatusCode.ERROR, "card declined"))
            tool.record_exception(ValueError("card declined"))
        with tracer.start_as_current_span(
            "text_completion claude",
            attributes={"gen_ai.operation.name": "text_completion", "gen_ai.system": "anthropic"},
        ) as legacy:
            legacy.add_event("gen_ai.user.message", {"content": "Summarise the refund"})
            legacy.add_event("gen_ai.choice", {"message": json.dumps({"role": "assistant", "content": "Refunded."})})
    spans = memory.get_finished_spans()
    result = await export_with_sdk(live_server, key, list(spans), compression=Compression.Gzip)
    assert result is SpanExportResult.SUCCESS

    trace_id = format_trace_id(spans[0].context.trace_id)
    by_name = {s.name: format_span_id(s.context.span_id) for s in spans}
    tree = await gql(client, "TraceTree", {"traceId": trace_id}, token=account.token)
    assert "errors" not in tree, tree
    trace = tree["data"]["trace"]
    assert trace["spanCount"] == 4 and trace["status"] == "ERROR"
    assert [a["name"] for a in trace["agents"]] == ["support-bot"]
    names = {v: k for k, v in by_name.items()}
    assert tree_shape(trace["rootSpans"], lambda n: names[n["spanId"]]) == [
        [
            "invoke_agent refunds",
            [["chat gpt-4o", []], ["execute_tool refund", []], ["text_completion claude", []]],
        ]
    ]

    records = await records_of(client, key, trace_id)
    root, chat = records[by_name["invoke_agent refunds"]], records[by_name["chat gpt-4o"]]
    tool_record, legacy_record = records[by_name["execute_tool refund"]], records[by_name["text_completion claude"]]
    assert root["action"] == "agent_invoke" and root["parentSpanId"] is None
    assert chat["action"] == "llm_call" and chat["parentSpanId"] == by_name["invoke_agent refunds"]
    assert chat["prompt"] == "user: Refund order 1234"
    assert chat["response"] == 'assistant: [tool call refund({"order":1234})]'
    assert chat["provider"] == "openai" and chat["status"] == "OK"
    assert (chat["metadata"]["model"], chat["metadata"]["requestModel"]) == ("gpt-4o-2024-08-06", "gpt-4o")
    assert (chat["metadata"]["inputTokens"], chat["metadata"]["outputTokens"], chat["metadata"]["tokens"]) == (
        120,
        30,
        150,
    )
    assert chat["metadata"]["attributes"] == {"gen_ai.operation.name": "chat", "gen_ai.request.temperature": 0.2}
    otel = chat["metadata"]["otel"]
    assert otel["kind"] == "internal" and otel["name"] == "chat gpt-4o"
    assert otel["scope"] == {"name": "agent.runtime", "version": "1.2.3"}
    assert otel["resource"]["service.name"] == "support-bot" and "telemetry.sdk.language" in otel["resource"]
    assert chat["idempotencyKey"] == f"otlp:{trace_id}:{by_name['chat gpt-4o']}"
    assert chat["durationMs"] is not None and chat["durationMs"] >= 0
    assert chat["agentId"] == root["agentId"] is not None

    assert tool_record["action"] == "tool_use" and tool_record["verb"] == "stripe:create_refund"
    assert tool_record["args"] == {"order": 1234, "amount": 1200} and tool_record["result"] == {"refund": "re_1"}
    assert tool_record["status"] == "ERROR"
    assert tool_record["metadata"]["otel"]["statusMessage"] == "card declined"
    exception = tool_record["metadata"]["otel"]["events"][0]
    assert exception["name"] == "exception" and exception["attributes"]["exception.type"] == "ValueError"

    assert legacy_record["action"] == "llm_call" and legacy_record["provider"] == "anthropic"
    assert legacy_record["prompt"] == "user: Summarise the refund"
    assert legacy_record["response"] == "assistant: Refunded."
    assert "events" not in legacy_record["metadata"]["otel"]  # they became the prompt and the response

    for record in records.values():
        assert record["checksum"].startswith("sha256:")

    # the agent was registered once, by the API key, as an activity event
    async with runtime.db.engine.connect() as conn:
        agents = (await conn.execute(sa.text("SELECT id, name, metadata FROM agents"))).all()
        events = (
            await conn.execute(sa.text("SELECT actor_type, action, target_id, metadata FROM activity_events"))
        ).all()
    assert [(a.name, a.metadata["source"]) for a in agents] == [("support-bot", "opentelemetry")]
    created = [e for e in events if e.action == "agent.created"]
    assert len(created) == 1 and created[0].actor_type == "api_key" and created[0].target_id == agents[0].id
    assert created[0].metadata == {"name": "support-bot", "autoRegistered": True, "source": "opentelemetry"}


async def test_openinference_span_tree_round_trips_as_otlp_json(client, runtime, live_server):
    account, key = await setup(client)
    tracer, memory = recorder("research-agent")
    with tracer.start_as_current_span(
        "AgentExecutor", attributes={"openinference.span.kind": "AGENT", "input.value": "find the invoice"}
    ):
        with tracer.start_as_current_span(
            "ChatOpenAI",
            attributes={
                "openinference.span.kind": "LLM",
                "llm.model_name": "gpt-4o-mini",
                "llm.provider": "openai",
                "llm.input_messages.0.message.role": "system",
                "llm.input_messages.0.message.content": "You are terse.",
                "llm.input_messages.1.message.role": "user",
                "llm.input_messages.1.message.content": "Where is invoice 7?",
                "llm.output_messages.0.message.role": "assistant",
                "llm.output_messages.0.message.content": "In the archive.",
                "llm.token_count.prompt": 21,
                "llm.token_count.completion": 4,
                "llm.token_count.total": 25,
                "input.value": '{"messages": "..."}',
                "input.mime_type": "application/json",
            },
        ):
            pass
        with (
            tracer.start_as_current_span(
                "search_archive",
                attributes={
                    "openinference.span.kind": "TOOL",
                    "tool.name": "search_archive",
                    "input.value": "invoice 7",
                    "output.value": "archive/2024/inv-7.pdf",
                },
            ),
            tracer.start_as_current_span(
                "retrieve", attributes={"openinference.span.kind": "RETRIEVER", "custom.flag": True}
            ),
        ):
            pass
    spans = list(memory.get_finished_spans())
    trace_id = format_trace_id(spans[0].context.trace_id)
    names = {format_span_id(s.context.span_id): s.name for s in spans}

    response = await client.post(
        "/v1/traces", content=json.dumps(otlp_json(spans)), headers={**JSON, "Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {}  # everything accepted: no partial_success

    tree = await gql(client, "TraceTree", {"traceId": trace_id}, token=account.token)
    trace = tree["data"]["trace"]
    assert tree_shape(trace["rootSpans"], lambda n: names[n["spanId"]]) == [
        ["AgentExecutor", [["ChatOpenAI", []], ["search_archive", [["retrieve", []]]]]]
    ]
    flat = await gql(client, "TraceFlat", {"traceId": trace_id}, token=account.token)
    assert sorted(s["depth"] for s in flat["data"]["trace"]["spans"]) == [0, 1, 1, 2]

    by_name = {names[k]: v for k, v in (await records_of(client, key, trace_id)).items()}
    agent, llm, tool, retriever = (by_name[n] for n in ("AgentExecutor", "ChatOpenAI", "search_archive", "retrieve"))
    assert agent["action"] == "agent_invoke" and agent["prompt"] == "find the invoice"
    assert llm["action"] == "llm_call" and llm["provider"] == "openai"
    assert llm["prompt"] == "system: You are terse.\nuser: Where is invoice 7?"
    assert llm["response"] == "assistant: In the archive."
    assert (llm["metadata"]["model"], llm["metadata"]["inputTokens"], llm["metadata"]["tokens"]) == (
        "gpt-4o-mini",
        21,
        25,
    )
    assert llm["metadata"]["attributes"]["input.value"] == '{"messages": "..."}'  # the messages won
    assert tool["action"] == "tool_use" and tool["verb"] == "search_archive"
    assert (tool["args"], tool["result"]) == ("invoice 7", "archive/2024/inv-7.pdf")  # a TOOL span's input/output
    assert (tool["prompt"], tool["response"]) == (None, None)
    assert retriever["action"] == "retrieval" and retriever["metadata"]["attributes"]["custom.flag"] is True
    assert {r["agentId"] for r in by_name.values()} == {trace["agents"][0]["id"]}
    assert trace["agents"][0]["name"] == "research-agent"


async def test_parents_arriving_in_a_later_export_nest_their_children(client, runtime, live_server):
    account, key = await setup(client)
    tracer, memory = recorder()
    with (
        tracer.start_as_current_span("root"),
        tracer.start_as_current_span("child"),
        tracer.start_as_current_span("grandchild"),
    ):
        pass
    spans = list(memory.get_finished_spans())  # in end order: grandchild, child, root
    trace_id = format_trace_id(spans[0].context.trace_id)
    names = {format_span_id(s.context.span_id): s.name for s in spans}

    ws = await GraphQLWebSocket.connect(live_server, {"x-api-key": key})
    assert (await ws.receive())["type"] == "connection_ack"
    await ws.subscribe("TraceSpans", {"traceId": trace_id})
    await asyncio.sleep(0.2)  # the subscription is registered before anything is published

    assert await export_with_sdk(live_server, key, [spans[0]]) is SpanExportResult.SUCCESS  # grandchild alone
    first = await gql(client, "TraceTree", {"traceId": trace_id}, token=account.token)
    assert tree_shape(first["data"]["trace"]["rootSpans"], lambda n: names[n["spanId"]]) == [["grandchild", []]]

    assert await export_with_sdk(live_server, key, [spans[2]]) is SpanExportResult.SUCCESS  # then the root
    assert await export_with_sdk(live_server, key, [spans[1]]) is SpanExportResult.SUCCESS  # the link last
    final = await gql(client, "TraceTree", {"traceId": trace_id}, token=account.token)
    assert tree_shape(final["data"]["trace"]["rootSpans"], lambda n: names[n["spanId"]]) == [
        ["root", [["child", [["grandchild", []]]]]]
    ]
    live = [await ws.receive() for _ in range(3)]
    await ws.close()
    assert [names[m["payload"]["data"]["traceSpans"]["spanId"]] for m in live] == ["grandchild", "root", "child"]


async def test_a_re_export_writes_nothing_new(client, runtime, live_server):
    _, key = await setup(client)
    tracer, memory = recorder("retry-bot")
    with tracer.start_as_current_span("root"):
        for i in range(5):
            with tracer.start_as_current_span(f"step {i}"):
                pass
    spans = list(memory.get_finished_spans())
    before = {o: _spans_counter(o) for o in ("written", "duplicate")}
    for _ in range(3):  # an exporter retrying after a lost response
        assert await export_with_sdk(live_server, key, spans) is SpanExportResult.SUCCESS
    assert await count(runtime) == 6
    assert {o: _spans_counter(o) - before[o] for o in before} == {"written": 6, "duplicate": 12}  # /metrics
    assert await count(runtime, "SELECT count(*) FROM agents") == 1
    assert await count(runtime, "SELECT count(*) FROM activity_events WHERE action = 'agent.created'") == 1
    # and as JSON too: same ids, same records
    response = await client.post("/v1/traces", content=json.dumps(otlp_json(spans)), headers={**JSON, "X-API-Key": key})
    assert response.status_code == 200 and response.json() == {}
    assert await count(runtime) == 6


async def test_concurrent_exports_register_an_agent_once(client, runtime):
    _, key = await setup(client)
    bodies = []
    for _ in range(6):
        tracer, memory = recorder("racing-bot")
        with tracer.start_as_current_span("work"):
            pass
        bodies.append(encode_spans(memory.get_finished_spans()).SerializeToString())
    responses = await asyncio.gather(
        *(client.post("/v1/traces", content=b, headers={**PROTOBUF, "X-API-Key": key}) for b in bodies)
    )
    assert [r.status_code for r in responses] == [200] * 6
    assert await count(runtime) == 6
    assert await count(runtime, "SELECT count(*) FROM agents") == 1
    assert await count(runtime, "SELECT count(DISTINCT agent_id) FROM audit_logs") == 1
    assert await count(runtime, "SELECT count(*) FROM activity_events WHERE action = 'agent.created'") == 1


async def test_exports_larger_than_a_batch_are_written_in_chunks(client, runtime, monkeypatch):
    from app.audit import service as audit

    _, key = await setup(client)
    monkeypatch.setattr(runtime.settings, "max_batch_records", 10)
    sizes: list[int] = []
    original = audit.ingest

    async def counting(session, principal, drafts):
        sizes.append(len(drafts))
        return await original(session, principal, drafts)

    monkeypatch.setattr(audit, "ingest", counting)
    tracer, memory = recorder()
    with tracer.start_as_current_span("root"):
        for i in range(24):
            with tracer.start_as_current_span(f"step {i}"):
                pass
    body = encode_spans(memory.get_finished_spans()).SerializeToString()
    response = await client.post("/v1/traces", content=body, headers={**PROTOBUF, "X-API-Key": key})
    assert response.status_code == 200
    assert ExportTraceServiceResponse.FromString(response.content) == ExportTraceServiceResponse()
    assert sizes == [10, 10, 5]
    assert await count(runtime) == 25


async def test_invalid_spans_are_rejected_one_by_one_with_partial_success(client, runtime):
    _, key = await setup(client)
    tracer, memory = recorder()
    future = time.time_ns() + 3 * 3600 * 10**9
    with tracer.start_as_current_span("good"):
        pass
    tracer.start_span("from the future", start_time=future).end(end_time=future + 1000)
    with tracer.start_as_current_span("also good"):
        pass
    request = encode_spans(memory.get_finished_spans())
    broken = request.resource_spans[0].scope_spans[0].spans.add()
    broken.CopyFrom(request.resource_spans[0].scope_spans[0].spans[0])
    broken.trace_id = bytes(16)  # all zero: invalid

    for encoding in ("protobuf", "json"):
        if encoding == "protobuf":
            response = await client.post(
                "/v1/traces", content=request.SerializeToString(), headers={**PROTOBUF, "X-API-Key": key}
            )
            assert response.headers["content-type"] == "application/x-protobuf"
            answer = ExportTraceServiceResponse.FromString(response.content)
            rejected, message = answer.partial_success.rejected_spans, answer.partial_success.error_message
        else:
            document = json_format.MessageToDict(request)
            for span in document["resourceSpans"][0]["scopeSpans"][0]["spans"]:
                for key_name in ("traceId", "spanId", "parentSpanId"):
                    if key_name in span:
                        span[key_name] = base64.b64decode(span[key_name]).hex()
            response = await client.post("/v1/traces", content=json.dumps(document), headers={**JSON, "X-API-Key": key})
            body = response.json()
            rejected, message = int(body["partialSuccess"]["rejectedSpans"]), body["partialSuccess"]["errorMessage"]
        assert response.status_code == 200
        assert rejected == 2
        assert message.startswith("2 of 4 spans rejected")
        assert "trace_id must be 16 bytes" in message and "occurredAt is more than an hour in the future" in message
        assert await count(runtime) == 2  # the valid ones, once


async def test_secrets_are_masked_in_otlp_spans(client, runtime):
    _, key = await setup(client)
    tracer, memory = recorder()
    stripe_key = "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc"
    with tracer.start_as_current_span(
        f"GET /charges?api_key={stripe_key}",
        attributes={"input.value": f"use {stripe_key}", "http.request.header.authorization": "Bearer abc.def.ghi"},
    ):
        pass
    spans = list(memory.get_finished_spans())
    body = encode_spans(spans).SerializeToString()
    response = await client.post("/v1/traces", content=body, headers={**PROTOBUF, "X-API-Key": key})
    assert response.status_code == 200
    records = await records_of(client, key, format_trace_id(spans[0].context.trace_id))
    (record,) = records.values()
    assert record["credentialMasked"] is True
    assert stripe_key not in json.dumps(record)
    assert record["prompt"] == "use [REDACTED]"
    assert record["action"] == "GET /charges?api_key=[REDACTED]"
    assert record["metadata"]["attributes"]["http.request.header.authorization"] == "[REDACTED]"


# --- rejections: status, body, nothing written -----------------------------------------------------
def _valid_body() -> bytes:
    tracer, memory = recorder()
    with tracer.start_as_current_span("root"):
        pass
    return encode_spans(memory.get_finished_spans()).SerializeToString()


async def test_authentication_is_required(client, runtime):
    account, _ = await setup(client)
    body = _valid_body()
    cases = [
        ({}, 401),
        ({"X-API-Key": "aa_live_" + "x" * 40}, 401),
        ({"X-API-Key": "not-a-key"}, 401),
        ({"Authorization": "Bearer aa_live_unknown0123456789"}, 401),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, 401),
    ]
    for headers, status in cases:
        response = await client.post("/v1/traces", content=body, headers={**PROTOBUF, **headers})
        assert response.status_code == status, headers
        assert response.headers["content-type"] == "application/x-protobuf"
        assert decoded_status(response).code == code_pb2.UNAUTHENTICATED
    # a revoked key
    key, key_id = await create_api_key(client, account)
    revoked = await gql(client, "RevokeApiKey", {"id": key_id}, token=account.token)
    assert "errors" not in revoked, revoked
    response = await client.post("/v1/traces", content=body, headers={**JSON, "X-API-Key": key})
    assert response.status_code == 401 and decoded_status(response).code == code_pb2.UNAUTHENTICATED
    assert await nothing_written(runtime)


async def test_undecodable_bodies_are_400_with_a_status_in_the_request_encoding(client, runtime):
    _, key = await setup(client)
    auth = {"X-API-Key": key}
    cases = [
        (b"\x0a\xff\xff\xff\xff\x0f", PROTOBUF),  # a length prefix pointing past the end
        (b"\x0a\x05\x12\x03\x0a", PROTOBUF),  # truncated nested message
        (b"{not json", JSON),
        (b"[1, 2]", JSON),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "soon"}]}]}]}', JSON),
        (b'{"resourceSpans": "nope"}', JSON),
        (gzip.compress(b"x")[:-4], {**PROTOBUF, "Content-Encoding": "gzip"}),  # truncated gzip
        (b"definitely not gzip", {**PROTOBUF, "Content-Encoding": "gzip"}),
    ]
    for body, headers in cases:
        response = await client.post("/v1/traces", content=body, headers={**headers, **auth})
        assert response.status_code == 400, (body, response.text)
        assert response.headers["content-type"] == headers["Content-Type"]
        status = decoded_status(response)
        assert status.code == code_pb2.INVALID_ARGUMENT and status.message
    assert await nothing_written(runtime)


async def test_unsupported_content_type_and_encoding_are_415(client, runtime):
    _, key = await setup(client)
    body = _valid_body()
    for headers in (
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/grpc"},
        {},
        {**PROTOBUF, "Content-Encoding": "br"},
    ):
        response = await client.post("/v1/traces", content=body, headers={**headers, "X-API-Key": key})
        assert response.status_code == 415, headers
        assert decoded_status(response).message
    assert await nothing_written(runtime)


async def test_oversized_bodies_and_gzip_bombs_are_413(client, runtime, monkeypatch):
    _, key = await setup(client)
    limit = runtime.settings.max_request_bytes
    auth = {"X-API-Key": key}
    # too large as sent (the request middleware answers before the route reads anything)
    response = await client.post("/v1/traces", content=b"\x00" * (limit + 1), headers={**PROTOBUF, **auth})
    assert response.status_code == 413
    # sent chunked, without a Content-Length
    chunks = [b"\x00" * (1 << 20)] * (limit // (1 << 20) + 1)

    async def stream():
        for chunk in chunks:
            yield chunk

    response = await client.post("/v1/traces", content=stream(), headers={**PROTOBUF, **auth})
    assert response.status_code == 413
    # a gzip bomb: 40 KB that would inflate to 40 MB; refused once the limit is passed
    bomb = gzip.compress(b"\x00" * (4 * limit), compresslevel=9)
    assert len(bomb) < limit // 100
    response = await client.post("/v1/traces", content=bomb, headers={**PROTOBUF, **auth, "Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert decoded_status(response).code == code_pb2.RESOURCE_EXHAUSTED
    assert "decompressed" in decoded_status(response).message
    # several gzip members adding up past the limit
    member = gzip.compress(b"\x00" * (limit // 2 + 1))
    response = await client.post("/v1/traces", content=member * 3, headers={**JSON, **auth, "Content-Encoding": "gzip"})
    assert response.status_code == 413 and response.headers["content-type"] == "application/json"
    assert await nothing_written(runtime)


async def test_database_unavailable_is_503_with_retry_after(client, runtime, monkeypatch):
    from app.db import Database

    _, key = await setup(client)
    body = _valid_body()
    unreachable = Database("postgresql://nobody:nothing@127.0.0.1:1/none")
    monkeypatch.setattr(runtime, "db", unreachable)
    try:
        response = await client.post("/v1/traces", content=body, headers={**PROTOBUF, "X-API-Key": key})
    finally:
        monkeypatch.undo()
        await unreachable.dispose()
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    status = decoded_status(response)
    assert status.code == code_pb2.UNAVAILABLE
    retry = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(retry) and retry.retry_delay.seconds == 5
    assert await count(runtime) == 0


async def test_rate_limited_is_429_with_retry_after(settings, runtime):
    """The real limiter (plan limits enforced, one request per second, bursts of one) in front of OTLP."""
    import dataclasses

    from app.main import create_app

    limited = settings.model_copy(
        update={
            "enforce_limits": True,
            "plan_limits": {"free": {"requests_per_second": 1}},
            "rate_limit_burst_seconds": 1,
        }
    )
    app = create_app(limited, runtime=dataclasses.replace(runtime, settings=limited))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://limited") as client,
    ):
        _, key = await setup(client)
        headers = {**PROTOBUF, "X-API-Key": key}
        responses = [await client.post("/v1/traces", content=_valid_body(), headers=headers) for _ in range(3)]
    refused = [r for r in responses if r.status_code == 429]
    assert refused, [r.status_code for r in responses]
    assert int(refused[0].headers["retry-after"]) >= 1
    assert decoded_status(refused[0]).code == code_pb2.RESOURCE_EXHAUSTED


async def test_the_sdk_exporter_reports_failure_on_rejection(client, runtime, live_server):
    tracer, memory = recorder()
    with tracer.start_as_current_span("root"):
        pass
    result = await export_with_sdk(live_server, "aa_live_" + "y" * 40, list(memory.get_finished_spans()))
    assert result is SpanExportResult.FAILURE
    assert await nothing_written(runtime)


@pytest.mark.parametrize("service_name", [None, "x" * 500, "bad\x00name\nwith controls"])
async def test_service_names_become_valid_agent_names(client, runtime, service_name):
    _, key = await setup(client)
    tracer, memory = recorder(service_name)
    with tracer.start_as_current_span("root"):
        pass
    body = encode_spans(memory.get_finished_spans()).SerializeToString()
    response = await client.post("/v1/traces", content=body, headers={**PROTOBUF, "X-API-Key": key})
    assert response.status_code == 200
    async with runtime.db.engine.connect() as conn:
        names = (await conn.execute(sa.text("SELECT name FROM agents"))).scalars().all()
    if service_name is None:  # the SDK's default
        assert names == ["unknown_service:python"]
    elif service_name.startswith("x"):
        assert names == ["x" * 200]
    else:
        assert names == ["bad\ufffdname with controls"]
    assert await count(runtime) == 1


async def test_a_bare_span_maps_with_defaults(client, runtime):
    """Not every SDK sends a parent: root spans and unknown kinds still map (kind → metadata.otel.kind)."""
    _, key = await setup(client)
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
    span.span_id = bytes.fromhex("b7ad6b7169203331")
    span.name = "bare"
    span.kind = 9  # unknown enum value, kept as a number
    response = await client.post(
        "/v1/traces", content=request.SerializeToString(), headers={**PROTOBUF, "X-API-Key": key}
    )
    assert response.status_code == 200
    records = await records_of(client, key, "0af7651916cd43dd8448eb211c80319c")
    record = records["b7ad6b7169203331"]
    assert record["action"] == "bare" and record["agentId"] is None and record["durationMs"] is None
    assert record["metadata"]["otel"]["kind"] == "9"


async def test_a_deleted_agent_is_registered_again(client, runtime):
    account, key = await setup(client)
    bodies = []
    for _ in range(2):
        tracer, memory = recorder("phoenix-bot")
        with tracer.start_as_current_span("work"):
            pass
        bodies.append(encode_spans(memory.get_finished_spans()).SerializeToString())
    first = await client.post("/v1/traces", content=bodies[0], headers={**PROTOBUF, "X-API-Key": key})
    assert first.status_code == 200
    async with runtime.db.engine.connect() as conn:
        (old_id,) = (await conn.execute(sa.text("SELECT id FROM agents"))).scalars().all()
    deleted = await gql(client, "DeleteAgent", {"id": old_id}, token=account.token)
    assert "errors" not in deleted, deleted
    # the id of the deleted agent is still remembered by the receiver: the write fails on it, and the
    # name is registered again instead of the export failing
    second = await client.post("/v1/traces", content=bodies[1], headers={**PROTOBUF, "X-API-Key": key})
    assert second.status_code == 200 and second.content == b""
    async with runtime.db.engine.connect() as conn:
        agents = (await conn.execute(sa.text("SELECT id, deleted_at FROM agents ORDER BY created_at"))).all()
        owners = (await conn.execute(sa.text("SELECT agent_id FROM audit_logs ORDER BY seq"))).scalars().all()
    assert len(agents) == 2 and agents[0].id == old_id and agents[0].deleted_at is not None
    assert owners == [old_id, agents[1].id]


async def test_a_saturated_node_answers_503_with_retry_after(client, runtime, monkeypatch):
    from app.otel import routes

    _, key = await setup(client)
    limit = runtime.settings.db_pool_size + runtime.settings.db_max_overflow
    monkeypatch.setattr(routes._InFlight, "count", limit)
    response = await client.post("/v1/traces", content=_valid_body(), headers={**PROTOBUF, "X-API-Key": key})
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert decoded_status(response).code == code_pb2.UNAVAILABLE
    monkeypatch.setattr(routes._InFlight, "count", limit - 1)
    response = await client.post("/v1/traces", content=_valid_body(), headers={**PROTOBUF, "X-API-Key": key})
    assert response.status_code == 200
    assert routes._InFlight.count == limit - 1  # released again


async def test_compliance_rules_see_otlp_spans(client, runtime):
    account, key = await setup(client)
    installed = await gql(client, "InstallCompliancePack", {"packId": "finance"}, token=account.token)
    assert "errors" not in installed, installed
    rule = await gql(
        client,
        "CreateComplianceRule",
        {
            "input": {
                "name": "Big prompts",
                "kind": "THRESHOLD",
                "config": {"path": "metadata.tokens", "operator": ">", "value": 8000},
            }
        },
        token=account.token,
    )
    assert "errors" not in rule, rule
    tracer, memory = recorder()
    with tracer.start_as_current_span(
        "chat",
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.usage.input_tokens": 8500,
            "gen_ai.usage.output_tokens": 10,
            "gen_ai.prompt": "charge card 4111 1111 1111 1111 please",
        },
    ):
        pass
    spans = list(memory.get_finished_spans())
    body = encode_spans(spans).SerializeToString()
    response = await client.post("/v1/traces", content=body, headers={**PROTOBUF, "X-API-Key": key})
    assert response.status_code == 200
    (record,) = (await records_of(client, key, format_trace_id(spans[0].context.trace_id))).values()
    assert record["governanceStatus"] == "blocked"  # the finance pack's PAN rule
    alerts = (await gql(client, "Alerts", {}, token=account.token))["data"]["alerts"]["edges"]
    assert {e["node"]["ruleName"] for e in alerts} == {"Primary account numbers", "Big prompts"}
    assert {e["node"]["auditLogId"] for e in alerts} == {record["id"]}


async def test_organisations_are_apart_even_with_the_same_ids(client, runtime):
    first, first_key = await setup(client)
    second, second_key = await setup(client)
    tracer, memory = recorder("shared-name")
    with tracer.start_as_current_span("root"), tracer.start_as_current_span("child"):
        pass
    spans = list(memory.get_finished_spans())
    body = encode_spans(spans).SerializeToString()
    for key in (first_key, second_key):
        response = await client.post("/v1/traces", content=body, headers={**PROTOBUF, "X-API-Key": key})
        assert response.status_code == 200
    assert await count(runtime) == 4  # the same idempotency keys, but in two organisations
    assert await count(runtime, "SELECT count(*) FROM agents") == 2
    trace_id = format_trace_id(spans[0].context.trace_id)
    for account in (first, second):
        trace = (await gql(client, "TraceTree", {"traceId": trace_id}, token=account.token))["data"]["trace"]
        assert trace["spanCount"] == 2
        assert {n["agentId"] for n in (trace["rootSpans"][0], trace["rootSpans"][0]["children"][0])} == {
            trace["agents"][0]["id"]
        }
    assert (await gql(client, "TraceTree", {"traceId": trace_id}, token=first.token))["data"]["trace"]["agents"] != (
        await gql(client, "TraceTree", {"traceId": trace_id}, token=second.token)
    )["data"]["trace"]["agents"]


async def test_an_existing_agent_is_found_by_name_in_any_case(client, runtime):
    account, key = await setup(client)
    created = await gql(client, "CreateAgent", {"input": {"name": "Support-Bot"}}, token=account.token)
    assert "errors" not in created, created
    agent_id = created["data"]["createAgent"]["id"]
    tracer, memory = recorder("support-bot")
    with tracer.start_as_current_span("work"):
        pass
    spans = list(memory.get_finished_spans())
    body = encode_spans(spans).SerializeToString()
    response = await client.post("/v1/traces", content=body, headers={**PROTOBUF, "X-API-Key": key})
    assert response.status_code == 200
    (record,) = (await records_of(client, key, format_trace_id(spans[0].context.trace_id))).values()
    assert record["agentId"] == agent_id
    assert await count(runtime, "SELECT count(*) FROM agents") == 1
    assert await count(runtime, "SELECT count(*) FROM activity_events WHERE action = 'agent.created'") == 1
