"""POST /v1/logs (issue 17.10): GenAI content events sent as OTLP log records, by the real OpenTelemetry SDK
(LoggerProvider and its OTLP/HTTP log exporter) to a real uvicorn, attached to their span whichever arrives
first; OTLP JSON through httpx; rejections and nothing written."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from opentelemetry._logs import LogRecord
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import format_span_id, format_trace_id, set_span_in_context
from otel.test_otlp_http import count, export_with_sdk, recorder, setup

from support import gql

JSON = {"Content-Type": "application/json"}


def _logger(base: str, key: str, service_name: str = "support-bot") -> tuple[Any, LoggerProvider]:
    provider = LoggerProvider(resource=Resource.create({"service.name": service_name}))
    exporter = OTLPLogExporter(endpoint=f"http://{base}/v1/logs", headers={"X-API-Key": key}, timeout=10)
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    return provider.get_logger("opentelemetry.instrumentation.openai_v2"), provider


def _emit_chat_events(logger: Any, span: Any) -> None:
    """What opentelemetry-instrumentation-openai-v2 emits in event_only mode, within the chat span's context."""
    context = set_span_in_context(span)
    system = {"gen_ai.system": "openai"}
    logger.emit(LogRecord(event_name="gen_ai.system.message", body={"content": "Be brief."}, attributes=system,
                          context=context))  # fmt: skip
    logger.emit(LogRecord(event_name="gen_ai.user.message", body={"content": "Refund order 1234"}, attributes=system,
                          context=context))  # fmt: skip
    choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Refunded."}}
    logger.emit(LogRecord(event_name="gen_ai.choice", body=choice, attributes=system, context=context))


async def _tree(client: httpx.AsyncClient, key: str, trace_id: str) -> list[Any]:
    result = await gql(client, "TraceTree", {"traceId": trace_id}, api_key=key)
    assert "errors" not in result, result

    def shape(nodes: list[dict[str, Any]]) -> list[Any]:
        return [[n["action"], shape(n.get("children") or [])] for n in nodes]

    return shape(result["data"]["trace"]["rootSpans"])


async def test_genai_events_attach_to_their_span_whichever_arrives_first(client, runtime, live_server):
    account, key = await setup(client)
    tracer, memory = recorder("support-bot")
    logger, log_provider = _logger(live_server, key)
    trace_ids = []
    for logs_first in (True, False):
        memory.clear()
        with tracer.start_as_current_span("chat gpt-4o", attributes={"gen_ai.operation.name": "chat"}) as span:
            trace_ids.append(format_trace_id(span.get_span_context().trace_id))
            span_id = format_span_id(span.get_span_context().span_id)
            if logs_first:
                await asyncio.to_thread(_emit_chat_events, logger, span)
        spans = list(memory.get_finished_spans())
        assert (await export_with_sdk(live_server, key, spans)).name == "SUCCESS"
        if not logs_first:
            await asyncio.to_thread(_emit_chat_events, logger, span)

        result = await gql(client, "AuditLogs", {"filter": {"traceId": trace_ids[-1]}}, api_key=key)
        nodes = sorted((e["node"] for e in result["data"]["auditLogs"]["edges"]), key=lambda n: n["occurredAt"])
        [chat] = [n for n in nodes if n["action"] == "llm_call"]
        contents = [n for n in nodes if n["action"] == "llm_content"]
        assert [(c["prompt"], c["response"]) for c in contents] == [
            ("system: Be brief.", None),
            ("user: Refund order 1234", None),
            (None, "assistant: Refunded."),
        ]
        for content in contents:
            assert content["parentSpanId"] == span_id and content["traceId"] == trace_ids[-1]
            assert content["metadata"]["attributes"] == {"gen_ai.system": "openai"}
            assert content["agentId"] is not None and content["agentId"] == chat["agentId"]
        assert [c["metadata"]["otel"]["eventName"] for c in contents] == [
            "gen_ai.system.message",
            "gen_ai.user.message",
            "gen_ai.choice",
        ]
        # the same shape whatever the order: the events are children of their span
        assert await _tree(client, key, trace_ids[-1]) == [["llm_call", [["llm_content", []]] * 3]]
    log_provider.shutdown()
    # one agent, registered once, for spans and logs
    agents = (await gql(client, "Agents", token=account.token))["data"]["agents"]["edges"]
    assert [a["node"]["name"] for a in agents] == ["support-bot"]


async def test_otlp_json_logs_retries_and_other_log_records(client, runtime):
    _, key = await setup(client)
    trace_id, span_id = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174"
    document = {
        "resourceLogs": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "bot"}}]},
                "scopeLogs": [
                    {
                        "scope": {"name": "openllmetry"},
                        "logRecords": [
                            {
                                "timeUnixNano": "1700000000000000000",
                                "traceId": trace_id,
                                "spanId": span_id,
                                "attributes": [
                                    {"key": "event.name", "value": {"stringValue": "gen_ai.user.message"}},
                                    {"key": "password", "value": {"stringValue": "hunter2hunter2"}},
                                ],
                                "body": {
                                    "kvlistValue": {
                                        "values": [
                                            {"key": "content", "value": {"stringValue": "key sk_live_" + "a" * 24}}
                                        ]
                                    }
                                },
                            },
                            {
                                "timeUnixNano": "1700000000000000001",
                                "traceId": trace_id,
                                "spanId": span_id,
                                "eventName": "gen_ai.client.inference.operation.details",
                                "attributes": [
                                    {
                                        "key": "gen_ai.output.messages",
                                        "value": {
                                            "stringValue": json.dumps(
                                                [{"role": "assistant", "parts": [{"type": "text", "content": "ok"}]}]
                                            )
                                        },
                                    }
                                ],
                            },
                            {"timeUnixNano": "1700000000000000002", "body": {"stringValue": "GET /health 200"}},
                        ],
                    }
                ],
            }
        ]
    }
    headers = {**JSON, "X-API-Key": key}
    for _ in range(2):  # an exporter's retry writes nothing new
        response = await client.post("/v1/logs", json=document, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json() == {}
    result = await gql(client, "AuditLogs", {"filter": {"traceId": trace_id}}, api_key=key)
    nodes = sorted((e["node"] for e in result["data"]["auditLogs"]["edges"]), key=lambda n: n["occurredAt"])
    assert await count(runtime) == 2 and {n["action"] for n in nodes} == {"llm_content"}
    user, details = sorted(nodes, key=lambda n: n["prompt"] is None)  # the two share their millisecond
    assert (user["prompt"], user["response"]) == ("user: key [REDACTED]", None)
    assert (details["prompt"], details["response"]) == (None, "assistant: ok")
    assert user["credentialMasked"] is True
    assert user["metadata"]["attributes"] == {"password": "[REDACTED]"}
    assert user["occurredAt"] == "2023-11-14T22:13:20.000Z"
    assert "hunter2" not in json.dumps(nodes) and "sk_live_" not in json.dumps(nodes)


async def test_log_rejections_and_errors(client, runtime):
    _, key = await setup(client)
    headers = {**JSON, "X-API-Key": key}
    orphan = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"eventName": "gen_ai.user.message",
              "body": {"stringValue": "hi"}}]}]}]}  # fmt: skip
    response = await client.post("/v1/logs", json=orphan, headers=headers)
    assert response.status_code == 400 and "trace_id" in response.json()["message"]
    assert await count(runtime) == 0
    assert (await client.post("/v1/logs", content=b"{", headers=headers)).status_code == 400
    assert (await client.post("/v1/logs", json=orphan, headers=JSON)).status_code == 401
    plain = {**headers, "Content-Type": "text/plain"}
    assert (await client.post("/v1/logs", content=b"x", headers=plain)).status_code == 415
    protobuf = {"Content-Type": "application/x-protobuf", "X-API-Key": key}
    empty = await client.post("/v1/logs", content=b"", headers=protobuf)
    assert empty.status_code == 200
    ExportLogsServiceResponse().ParseFromString(empty.content)
    assert await count(runtime) == 0
