"""The OTLP → audit record mapping and the wire decoding, without servers: every rule of the README table,
and the bounds that make any span a valid record."""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from app.audit.validation import MAX_JSON_BYTES, MAX_TEXT_BYTES, check_records
from app.otel import decode
from app.otel.mapping import (
    MAX_ATTRIBUTES_BYTES,
    MAX_RESOURCE_BYTES,
    TRUNCATED,
    MappedSpan,
    Rejection,
    map_request,
)

TRACE = "5b8efff798038103d269b633813fc60c"
SPAN = "eee19b7ec3c1b174"
PARENT = "eee19b7ec3c1b173"
START = 1_700_000_000_000_000_000


def value(v: Any) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, bytes):
        return AnyValue(bytes_value=v)
    if isinstance(v, list):
        out = AnyValue()
        out.array_value.values.extend(value(i) for i in v)
        return out
    if isinstance(v, dict):
        out = AnyValue()
        out.kvlist_value.values.extend(KeyValue(key=k, value=value(i)) for k, i in v.items())
        return out
    return AnyValue(string_value=v)


def build(
    attributes: dict[str, Any] | None = None,
    *,
    name: str = "span",
    resource: dict[str, Any] | None = None,
    events: list[tuple[str, dict[str, Any]]] = (),
    **fields: Any,
) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(
        KeyValue(key=k, value=value(v)) for k, v in (resource or {"service.name": "bot"}).items()
    )
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "lib"
    span = scope_spans.spans.add()
    span.trace_id = bytes.fromhex(fields.pop("trace_id", TRACE))
    span.span_id = bytes.fromhex(fields.pop("span_id", SPAN))
    parent = fields.pop("parent_span_id", PARENT)
    if parent:
        span.parent_span_id = bytes.fromhex(parent)
    span.name = name
    span.start_time_unix_nano = fields.pop("start", START)
    span.end_time_unix_nano = fields.pop("end", START + 2_500_000)
    for key, item in fields.items():
        if key == "status":
            span.status.CopyFrom(item)
        else:
            setattr(span, key, item)
    span.attributes.extend(KeyValue(key=k, value=value(v)) for k, v in (attributes or {}).items())
    for event_name, event_attributes in events:
        event = span.events.add(name=event_name, time_unix_nano=START + 1000)
        event.attributes.extend(KeyValue(key=k, value=value(v)) for k, v in event_attributes.items())
    return request


def one(request: ExportTraceServiceRequest) -> dict[str, Any]:
    mapped = map_request(request)
    assert not mapped.rejections, mapped.rejections
    (span,) = mapped.spans
    assert isinstance(span, MappedSpan)
    check_records([span.record], max_batch=1000, batch=True)  # every mapped record is a valid record
    return span.record


def test_ids_times_status_and_the_idempotency_key():
    record = one(build(status=Status(code=Status.STATUS_CODE_ERROR, message="boom"), kind=Span.SPAN_KIND_CLIENT))
    assert (record["traceId"], record["spanId"], record["parentSpanId"]) == (TRACE, SPAN, PARENT)
    assert record["occurredAt"].isoformat() == "2023-11-14T22:13:20+00:00"
    assert record["durationMs"] == 2.5
    assert record["status"] == "error"
    assert record["idempotencyKey"] == f"otlp:{TRACE}:{SPAN}"
    otel = record["metadata"]["otel"]
    assert otel["kind"] == "client" and otel["statusMessage"] == "boom" and otel["scope"] == {"name": "lib"}
    assert set(otel) == {"kind", "name", "scope", "resource", "statusMessage"}
    for code in (Status.STATUS_CODE_OK, Status.STATUS_CODE_UNSET):
        assert one(build(status=Status(code=code)))["status"] == "ok"
    assert one(build(parent_span_id=""))["parentSpanId"] is None
    assert one(build(parent_span_id="0000000000000000"))["parentSpanId"] is None
    no_times = one(build(start=0, end=0))
    assert no_times["occurredAt"] is None and no_times["durationMs"] is None
    assert one(build(end=START - 1))["durationMs"] is None  # ends before it starts


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"trace_id": "00" * 16}, "trace_id must be 16 bytes"),
        ({"trace_id": "ab" * 8}, "trace_id must be 16 bytes"),
        ({"span_id": "00" * 8}, "span_id must be 8 bytes"),
        ({"span_id": "ab" * 16}, "span_id must be 8 bytes"),
        ({"parent_span_id": "ab" * 4}, "parent_span_id must be empty or 8 bytes"),
    ],
)
def test_invalid_ids_reject_the_span(fields, reason):
    mapped = map_request(build(**fields))
    assert mapped.spans == []
    (rejection,) = mapped.rejections
    assert isinstance(rejection, Rejection) and reason in rejection.reason


@pytest.mark.parametrize(
    ("attributes", "name", "action"),
    [
        ({"gen_ai.operation.name": "chat"}, "x", "llm_call"),
        ({"gen_ai.operation.name": "text_completion"}, "x", "llm_call"),
        ({"gen_ai.operation.name": "generate_content"}, "x", "llm_call"),
        ({"gen_ai.operation.name": "execute_tool"}, "x", "tool_use"),
        ({"gen_ai.operation.name": "invoke_agent"}, "x", "agent_invoke"),
        ({"gen_ai.operation.name": "create_agent"}, "x", "agent_invoke"),
        ({"gen_ai.operation.name": "embeddings"}, "x", "embedding"),
        ({"gen_ai.operation.name": "my_custom_op"}, "x", "my_custom_op"),
        ({"openinference.span.kind": "LLM"}, "x", "llm_call"),
        ({"openinference.span.kind": "TOOL"}, "x", "tool_use"),
        ({"openinference.span.kind": "AGENT"}, "x", "agent_invoke"),
        ({"openinference.span.kind": "CHAIN"}, "x", "chain"),
        ({"openinference.span.kind": "RETRIEVER"}, "x", "retrieval"),
        ({"openinference.span.kind": "EMBEDDING"}, "x", "embedding"),
        ({"openinference.span.kind": "reranker"}, "x", "rerank"),
        ({"gen_ai.tool.name": "lookup"}, "x", "tool_use"),
        ({}, "  POST /v1/chat\n\tcompletions ", "POST /v1/chat completions"),
        ({}, "nul\x00name", "nul\ufffdname"),
        ({}, "", "span"),
        ({}, "\n\t", "span"),
        ({}, "a" * 500, "a" * 128),
        ({}, "GET /x?token=sk_live_4eC39HqLyjWDarjtT1zdp7dc", "GET /x?token=[REDACTED]"),
    ],
)
def test_action(attributes, name, action):
    assert one(build(attributes, name=name))["action"] == action


def test_genai_attributes():
    record = one(
        build(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.system": "openai",
                "gen_ai.provider.name": "azure.ai.openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 10,
                "gen_ai.usage.output_tokens": "5",
                "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "Be brief."}]),
                "gen_ai.input.messages": json.dumps(
                    [
                        {"role": "user", "parts": [{"type": "text", "content": "Hi"}]},
                        {"role": "assistant", "parts": [{"type": "tool_call", "name": "f", "arguments": {"a": 1}}]},
                        {"role": "tool", "parts": [{"type": "tool_call_response", "response": {"ok": True}}]},
                    ]
                ),
                "gen_ai.output.messages": json.dumps(
                    [{"role": "assistant", "parts": [{"type": "text", "content": "Yo"}]}]
                ),
                "gen_ai.response.finish_reasons": ["stop"],
            }
        )
    )
    assert record["provider"] == "azure.ai.openai"  # gen_ai.provider.name before the deprecated gen_ai.system
    assert record["prompt"] == (
        'system: Be brief.\nuser: Hi\nassistant: [tool call f({"a":1})]\ntool: [tool result] {"ok":true}'
    )
    assert record["response"] == "assistant: Yo"
    metadata = record["metadata"]
    assert (metadata["model"], metadata["inputTokens"], metadata["outputTokens"], metadata["tokens"]) == (
        "gpt-4o",
        10,
        5,
        15,
    )
    assert "requestModel" not in metadata  # only when the model that answered differs
    assert metadata["attributes"] == {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "openai",  # not the one used: kept
        "gen_ai.response.finish_reasons": ["stop"],
    }


def test_openllmetry_indexed_prompts_and_completions():
    record = one(
        build(
            {
                "gen_ai.prompt.0.role": "system",
                "gen_ai.prompt.0.content": "Be brief.",
                "gen_ai.prompt.1.role": "user",
                "gen_ai.prompt.1.content": "Hi",
                "gen_ai.completion.0.role": "assistant",
                "gen_ai.completion.0.content": "",
                "gen_ai.completion.0.finish_reason": "tool_calls",
                "gen_ai.completion.0.tool_calls.0.name": "lookup",
                "gen_ai.completion.0.tool_calls.0.arguments": '{"q": "x"}',
                "gen_ai.completion.0.tool_calls.0.id": "call_1",
                "gen_ai.usage.prompt_tokens": 7,
                "gen_ai.usage.completion_tokens": 3,
                "llm.request.type": "chat",
            },
            name="openai.chat",
        )
    )
    assert record["action"] == "openai.chat"
    assert record["prompt"] == "system: Be brief.\nuser: Hi"
    assert record["response"] == 'assistant: [tool call lookup({"q": "x"})]'
    assert (record["metadata"]["inputTokens"], record["metadata"]["outputTokens"]) == (7, 3)
    assert record["metadata"]["attributes"] == {
        "gen_ai.completion.0.finish_reason": "tool_calls",
        "gen_ai.completion.0.tool_calls.0.id": "call_1",
        "llm.request.type": "chat",
    }


def test_openinference_attributes():
    record = one(
        build(
            {
                "openinference.span.kind": "LLM",
                "llm.system": "anthropic",
                "llm.model_name": "claude-sonnet",
                "llm.input_messages.1.message.role": "user",
                "llm.input_messages.1.message.contents.0.message_content.type": "text",
                "llm.input_messages.1.message.contents.0.message_content.text": "part one",
                "llm.input_messages.1.message.contents.1.message_content.text": "part two",
                "llm.input_messages.0.message.role": "system",
                "llm.input_messages.0.message.content": "sys",
                "llm.output_messages.0.message.role": "assistant",
                "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "search",
                "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": "{}",
                "llm.token_count.prompt": 3,
                "llm.token_count.completion": 4,
                "llm.token_count.total": 9,
                "output.value": "raw output",
            }
        )
    )
    assert record["prompt"] == "system: sys\nuser: part one\npart two"
    assert record["response"] == "assistant: [tool call search({})]"
    assert record["provider"] == "anthropic"
    assert (record["metadata"]["model"], record["metadata"]["tokens"]) == ("claude-sonnet", 9)
    assert record["metadata"]["attributes"] == {
        "openinference.span.kind": "LLM",
        "llm.input_messages.1.message.contents.0.message_content.type": "text",
        "output.value": "raw output",
    }
    # TOOL spans (issue 17.8): input.value / output.value are the call's args / result, JSON parsed when JSON
    tool = one(
        build({"openinference.span.kind": "TOOL", "tool.name": "calc", "input.value": "1+1", "output.value": "2"})
    )
    assert (tool["action"], tool["verb"], tool["args"], tool["result"]) == ("tool_use", "calc", "1+1", "2")
    assert "prompt" not in tool and "response" not in tool
    tool = one(
        build(
            {
                "openinference.span.kind": "TOOL",
                "tool.name": "refund",
                "input.value": '{"order": 1234, "amount": 50}',
                "input.mime_type": "application/json",
                "output.value": '{"refund_id": "re_1"}',
                "output.mime_type": "application/json",
                "tool.parameters": '{"type": "object"}',
            }
        )
    )
    assert (tool["args"], tool["result"]) == ({"order": 1234, "amount": 50}, {"refund_id": "re_1"})
    assert tool["metadata"]["attributes"] == {
        "openinference.span.kind": "TOOL",
        "tool.parameters": '{"type": "object"}',
    }
    only_input = one(build({"openinference.span.kind": "TOOL", "input.value": "[1, 2]"}))
    assert only_input["args"] == [1, 2] and "result" not in only_input


def test_embedding_spans_keep_the_texts_and_drop_the_vectors():
    """Issue 17.9: embedding.text is the prompt; vectors are counted, never stored."""
    vector = [0.125] * 1536
    raw_answer = json.dumps({"data": [{"embedding": vector}, {"embedding": vector}], "usage": {"total_tokens": 8}})
    record = one(
        build(
            {
                "openinference.span.kind": "EMBEDDING",
                "embedding.model_name": "text-embedding-3-small",
                "embedding.embeddings.0.embedding.text": "first text",
                "embedding.embeddings.0.embedding.vector": vector,
                "embedding.embeddings.1.embedding.text": "second text",
                "embedding.embeddings.1.embedding.vector": vector,
                "input.value": json.dumps({"input": ["first text", "second text"], "model": "x"}),
                "output.value": raw_answer,
                "llm.token_count.prompt": 8,
            }
        )
    )
    assert record["action"] == "embedding" and record["prompt"] == "first text\nsecond text"
    assert "response" not in record
    assert record["metadata"]["embeddings"] == {"count": 2, "dimensions": 1536}
    assert record["metadata"]["model"] == "text-embedding-3-small"
    stored = json.dumps(record, default=str)
    assert "0.125" not in stored and "embedding.vector" not in stored
    # only the provider's raw answer: vectors counted from it, and it is not kept
    raw_only = one(build({"gen_ai.operation.name": "embeddings", "input.value": "hello", "output.value": raw_answer}))
    assert raw_only["prompt"] == "hello" and "response" not in raw_only
    assert raw_only["metadata"]["embeddings"] == {"count": 2, "dimensions": 1536}
    assert "0.125" not in json.dumps(raw_only, default=str)


def test_prompts_and_completions_from_span_events():
    legacy = one(
        build(
            events=[
                ("gen_ai.content.prompt", {"gen_ai.prompt": "What is 2+2?"}),
                ("gen_ai.content.completion", {"gen_ai.completion": "4"}),
                ("exception", {"exception.type": "Timeout", "exception.stacktrace": "x" * 20_000}),
            ]
        )
    )
    assert (legacy["prompt"], legacy["response"]) == ("What is 2+2?", "4")
    (event,) = legacy["metadata"]["otel"]["events"]
    assert event["name"] == "exception" and event["time"] == "2023-11-14T22:13:20.000001Z"
    assert event["attributes"]["exception.stacktrace"].endswith(TRUNCATED)
    assert len(event["attributes"]["exception.stacktrace"]) == 4096

    per_message = one(
        build(
            events=[
                ("gen_ai.system.message", {"content": "Be brief."}),
                ("gen_ai.user.message", {"content": "Hi"}),
                ("gen_ai.choice", {"index": 0, "message": {"role": "assistant", "content": "Hello"}}),
            ]
        )
    )
    assert per_message["prompt"] == "system: Be brief.\nuser: Hi"
    assert per_message["response"] == "assistant: Hello"
    assert "events" not in per_message["metadata"]["otel"]

    details = one(
        build(
            events=[
                (
                    "gen_ai.client.inference.operation.details",
                    {
                        "gen_ai.input.messages": [{"role": "user", "parts": [{"type": "text", "content": "Q"}]}],
                        "gen_ai.output.messages": [{"role": "assistant", "parts": [{"type": "text", "content": "A"}]}],
                    },
                )
            ]
        )
    )
    assert (details["prompt"], details["response"]) == ("user: Q", "assistant: A")


def test_tool_arguments_and_results():
    record = one(
        build(
            {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "refund",
                "gen_ai.tool.call.arguments": '{"order": 1}',
                "gen_ai.tool.call.result": "plain text result",
            }
        )
    )
    assert (record["verb"], record["args"], record["result"]) == ("refund", {"order": 1}, "plain text result")
    huge = one(build({"gen_ai.tool.call.arguments": json.dumps({"blob": "x" * 400_000})}))
    assert isinstance(huge["args"], str) and huge["args"].endswith(TRUNCATED)
    assert len(huge["args"].encode()) <= 64 * 1024
    assert huge["metadata"]["otel"]["truncatedFields"] == ["args"]
    deep = "[" * 5000 + "]" * 5000  # valid JSON nested past any limit: kept as the text it came as
    kept = one(build({"gen_ai.tool.call.arguments": deep}))
    assert kept["args"] == deep and "truncatedFields" not in kept["metadata"]["otel"]


def test_prompts_are_cut_to_the_text_limit_never_rejected():
    big = "é" * MAX_TEXT_BYTES  # 2 MB of UTF-8
    record = one(build({"input.value": big, "output.value": "ok\x00done"}))
    assert len(record["prompt"].encode()) <= MAX_TEXT_BYTES and record["prompt"].endswith(TRUNCATED)
    assert record["response"] == "ok\ufffddone"  # PostgreSQL stores no NUL
    assert record["metadata"]["otel"]["truncatedFields"] == ["prompt"]


def test_attributes_are_bounded():
    attributes = {f"attr.{i}": "v" * 1000 for i in range(200)}  # 200 KB
    attributes["long"] = "x" * 100_000
    attributes["nested"] = {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": {"j": 1}}}}}}}}}}
    attributes["list"] = list(range(1000))
    attributes["nan"] = float("nan")
    attributes["bytes"] = b"\x00\x01"
    attributes["nul\x00key"] = "nul\x00value"
    record = one(build(dict(reversed(list(attributes.items()))), dropped_attributes_count=3))
    kept = record["metadata"]["attributes"]
    assert len(orjson.dumps(kept)) <= MAX_ATTRIBUTES_BYTES
    assert kept["long"].endswith(TRUNCATED) and len(kept["long"]) == 8 * 1024
    assert kept["list"] == list(range(128))
    assert kept["nan"] == "nan" and kept["bytes"] == "AAE="
    assert kept["nul\ufffdkey"] == "nul\ufffdvalue"
    assert "[too deep]" in json.dumps(kept["nested"])
    otel = record["metadata"]["otel"]
    dropped = 3 + (len(attributes) - len(kept))
    assert otel["droppedAttributesCount"] == dropped and dropped > 3
    assert otel["truncatedAttributesCount"] == 2  # "long" and "list"
    assert len(orjson.dumps(record["metadata"])) <= MAX_JSON_BYTES


def test_resource_and_events_are_bounded():
    resource = {"service.name": "bot", **{f"r.{i}": "v" * 2000 for i in range(50)}}
    events = [("step", {"i": i, "payload": "p" * 3000}) for i in range(100)]
    record = one(build(resource=resource, events=events))
    otel = record["metadata"]["otel"]
    assert len(orjson.dumps(otel["resource"])) <= MAX_RESOURCE_BYTES
    assert otel["resource"]["service.name"] == "bot"
    assert len(otel["events"]) < 32 and otel["droppedEventsCount"] == 100 - len(otel["events"])


def test_service_name_is_the_agent():
    mapped = map_request(build(resource={"service.name": "  support\tbot  "}))
    assert mapped.spans[0].service_name == "support bot"
    assert map_request(build(resource={"other": 1})).spans[0].service_name is None
    assert map_request(build(resource={"service.name": 7})).spans[0].service_name is None
    # arize-phoenix-otel's register(project_name=…) leaves the SDK's default service.name (issue 17.7)
    for default in ("unknown_service", "unknown_service:python", "unknown_service:java"):
        resource = {"service.name": default, "openinference.project.name": "support-bot"}
        assert map_request(build(resource=resource)).spans[0].service_name == "support-bot"
    assert map_request(build(resource={"openinference.project.name": "p"})).spans[0].service_name == "p"
    chosen = {"service.name": "billing", "openinference.project.name": "support-bot"}
    assert map_request(build(resource=chosen)).spans[0].service_name == "billing"  # a chosen name wins
    lone = {"service.name": "unknown_service:python"}
    assert map_request(build(resource=lone)).spans[0].service_name == "unknown_service:python"


def test_future_spans_are_left_to_the_record_check():
    import time

    future = time.time_ns() + 2 * 3600 * 10**9
    mapped = map_request(build(start=future, end=future + 1))
    with pytest.raises(Exception, match="occurredAt is more than an hour in the future"):
        check_records([mapped.spans[0].record], max_batch=1000, batch=True)


# --- wire -----------------------------------------------------------------------------------------
def test_otlp_json_hex_ids_and_both_field_name_styles():
    camel = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "bot"}}]},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": TRACE,
                                "spanId": SPAN,
                                "parentSpanId": PARENT,
                                "name": "x",
                                "kind": 3,
                                "startTimeUnixNano": str(START),
                                "endTimeUnixNano": START + 1_000_000,
                                "status": {"code": 2},
                                "links": [{"traceId": TRACE, "spanId": PARENT}],
                                "unknownField": {"ignored": True},
                            }
                        ]
                    }
                ],
            }
        ]
    }
    snake = {
        "resource_spans": [
            {
                "scope_spans": [
                    {"spans": [{"trace_id": TRACE, "span_id": SPAN, "parent_span_id": "", "name": "x", "kind": 3}]}
                ]
            }
        ]
    }
    first = one(decode.decode_request(orjson.dumps(camel), decode.JSON))
    assert (first["traceId"], first["spanId"], first["parentSpanId"]) == (TRACE, SPAN, PARENT)
    assert first["status"] == "error" and first["durationMs"] == 1.0
    assert first["metadata"]["otel"]["kind"] == "client"
    assert first["metadata"]["otel"]["links"] == [{"traceId": TRACE, "spanId": PARENT}]
    second = one(decode.decode_request(orjson.dumps(snake), decode.JSON))
    assert (second["traceId"], second["spanId"], second["parentSpanId"]) == (TRACE, SPAN, None)
    # an id that is not hex rejects that span alone
    camel["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"] = "not-hex"
    mapped = map_request(decode.decode_request(orjson.dumps(camel), decode.JSON))
    assert mapped.spans == [] and "trace_id" in mapped.rejections[0].reason


def test_content_types_and_encodings():
    assert decode.content_type("application/x-protobuf") == decode.PROTOBUF
    assert decode.content_type("application/protobuf") == decode.PROTOBUF
    assert decode.content_type("Application/JSON; charset=utf-8") == decode.JSON
    for bad in (None, "", "text/plain", "application/grpc"):
        with pytest.raises(decode.WireError) as error:
            decode.content_type(bad)
        assert error.value.status == 415
    payload = b"hello " * 100
    assert decode.decompress(payload, None, max_bytes=1000) == payload
    assert decode.decompress(payload, "identity", max_bytes=1000) == payload
    assert decode.decompress(gzip.compress(payload), "gzip", max_bytes=1000) == payload
    assert decode.decompress(gzip.compress(payload) * 2, "gzip", max_bytes=2000) == payload * 2
    assert decode.decompress(zlib.compress(payload), "deflate", max_bytes=1000) == payload
    with pytest.raises(decode.WireError) as error:
        decode.decompress(gzip.compress(payload), "gzip", max_bytes=599)
    assert error.value.status == 413
    assert decode.decompress(gzip.compress(payload), "gzip", max_bytes=600) == payload  # exactly the limit
    with pytest.raises(decode.WireError) as error:
        decode.decompress(payload, "br", max_bytes=1000)
    assert error.value.status == 415


def test_responses():
    from google.rpc import status_pb2
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    assert decode.export_response(0, "", decode.JSON).body == b"{}"
    assert decode.export_response(0, "", decode.PROTOBUF).body == b""
    answer = ExportTraceServiceResponse.FromString(decode.export_response(2, "bad", decode.PROTOBUF).body)
    assert (answer.partial_success.rejected_spans, answer.partial_success.error_message) == (2, "bad")
    status = status_pb2.Status.FromString(decode.status_body(401, "who?", decode.PROTOBUF).body)
    assert (status.code, status.message) == (16, "who?")
    assert json.loads(decode.status_body(400, "bad", decode.JSON).body) == {"code": 3, "message": "bad"}


@pytest.mark.parametrize(
    "hostile",
    [
        "[" * 5000 + "]" * 5000,  # deeper than any parser or serialiser allows
        "{" * 3,  # not JSON
        json.dumps([{"role": 7, "parts": "not a list", "tool_calls": "nope"}, 3, None, [1, [2]]]),
        json.dumps({"message": {"content": [{"type": "tool_call", "function": "x"}, {"weird": {"a": [1]}}]}}),
        json.dumps([{"role": "user", "content": [{"type": "tool_call_response", "response": {"k": [1, 2]}}]}]),
        "[" * 20 + "1" + "]" * 20,  # deep, but within the parsing limit
        "",
    ],
)
def test_hostile_values_map_to_valid_records(hostile):
    keys = (
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.system_instructions",
        "gen_ai.tool.call.arguments",
        "gen_ai.tool.call.result",
    )
    record = one(build(dict.fromkeys(keys, hostile)))
    assert isinstance(record["prompt"], str) and isinstance(record["response"], str)
    for key in ("gen_ai.prompt", "gen_ai.completion", "input.value", "output.value"):
        one(build({key: hostile}))
    one(build({"llm.input_messages.0.message.content": hostile, "llm.input_messages.x.message.role": hostile}))
    one(build(events=[("gen_ai.choice", {"message": hostile}), ("gen_ai.user.message", {"content": hostile})]))
