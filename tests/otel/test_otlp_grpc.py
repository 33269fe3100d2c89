"""OTLP over gRPC (issue 17.11): the real OpenTelemetry SDK's gRPC span and log exporters against the receiver
`agentrail serve --otlp-grpc-port` starts, with the API key in the call's metadata; same mapping as OTLP/HTTP;
the statuses exporters act on; and `serve` itself with the option."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from typing import Any

import grpc
import pytest
from opentelemetry._logs import LogRecord
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import format_trace_id, set_span_in_context
from otel.test_otlp_http import count, recorder, setup

from app.api.otlp_grpc import start_server
from support import agentrail_command, free_port, gql


@pytest.fixture
async def grpc_port(runtime, settings):
    server, port = await start_server(runtime, settings, host="127.0.0.1", port=0)
    yield port
    await server.stop(grace=1)


def _export_spans(port: int, spans: list[Any], headers: dict[str, str] | None) -> SpanExportResult:
    exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True, headers=headers, timeout=10)
    try:
        return exporter.export(spans)
    finally:
        exporter.shutdown()


async def test_spans_and_logs_through_the_sdk_grpc_exporters(client, runtime, grpc_port):
    account, key = await setup(client)
    tracer, memory = recorder("support-bot")
    with tracer.start_as_current_span("chat gpt-4o", attributes={"gen_ai.operation.name": "chat"}) as span:
        trace_id = format_trace_id(span.get_span_context().trace_id)
        with tracer.start_as_current_span("refund", attributes={"openinference.span.kind": "TOOL",
                                                                  "input.value": '{"order": 7}'}):  # fmt: skip
            pass
    spans = list(memory.get_finished_spans())
    result = await asyncio.to_thread(_export_spans, grpc_port, spans, {"x-api-key": key})
    assert result == SpanExportResult.SUCCESS

    provider = LoggerProvider(resource=Resource.create({"service.name": "support-bot"}))
    log_exporter = OTLPLogExporter(endpoint=f"127.0.0.1:{grpc_port}", insecure=True,
                                   headers={"authorization": f"Bearer {key}"}, timeout=10)  # fmt: skip
    provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))
    logger = provider.get_logger("genai")
    context = set_span_in_context(span)
    await asyncio.to_thread(
        logger.emit, LogRecord(event_name="gen_ai.user.message", body={"content": "Refund 7"}, context=context)
    )
    provider.shutdown()

    result = await gql(client, "AuditLogs", {"filter": {"traceId": trace_id}}, api_key=key)
    nodes = {n["action"]: n for n in (e["node"] for e in result["data"]["auditLogs"]["edges"])}
    assert set(nodes) == {"llm_call", "tool_use", "llm_content"}
    assert (
        nodes["tool_use"]["args"] == {"order": 7} and nodes["tool_use"]["parentSpanId"] == nodes["llm_call"]["spanId"]
    )
    assert nodes["llm_content"]["prompt"] == "user: Refund 7"
    assert nodes["llm_content"]["parentSpanId"] == nodes["llm_call"]["spanId"]
    agents = (await gql(client, "Agents", token=account.token))["data"]["agents"]["edges"]
    assert [a["node"]["name"] for a in agents] == ["support-bot"]
    # an exporter's retry writes nothing new
    assert await asyncio.to_thread(_export_spans, grpc_port, spans, {"x-api-key": key}) == SpanExportResult.SUCCESS
    assert await count(runtime) == 3


async def test_grpc_statuses(client, runtime, grpc_port):
    _, key = await setup(client)
    tracer, memory = recorder("bot")
    with tracer.start_as_current_span("x"):
        pass
    spans = list(memory.get_finished_spans())
    # the SDK does not retry these, and reports the failure
    assert await asyncio.to_thread(_export_spans, grpc_port, spans, None) == SpanExportResult.FAILURE
    bad = {"x-api-key": "aa_live_" + "x" * 40}
    assert await asyncio.to_thread(_export_spans, grpc_port, spans, bad) == SpanExportResult.FAILURE
    assert await count(runtime) == 0

    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        request = trace_service_pb2.ExportTraceServiceRequest()
        span = request.resource_spans.add().scope_spans.add().spans.add()
        span.trace_id, span.span_id, span.name = b"\0" * 16, b"\1" * 8, "zero trace"
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Export(request)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as invalid:
            await stub.Export(request, metadata=(("x-api-key", key),))
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "trace_id must be 16 bytes" in (invalid.value.details() or "")
        good = request.resource_spans[0].scope_spans[0].spans.add()
        good.trace_id, good.span_id, good.name = b"\2" * 16, b"\3" * 8, "fine"
        answer = await stub.Export(request, metadata=(("x-api-key", key),))
        assert answer.partial_success.rejected_spans == 1
        assert "1 of 2 spans rejected" in answer.partial_success.error_message
    assert await count(runtime) == 1


def test_serve_with_the_grpc_option(tmp_path):
    """`agentrail serve --otlp-grpc-port` listens for OTLP/gRPC beside HTTP (embedded servers of its own)."""
    http_port, grpc_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    process = subprocess.Popen(
        [*agentrail_command(), "serve", "--port", str(http_port), "--otlp-grpc-port", str(grpc_port),
         "--data-dir", str(tmp_path), "--no-worker"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                    grpc.channel_ready_future(channel).result(timeout=1)
                    stub = trace_service_pb2_grpc.TraceServiceStub(channel)
                    with pytest.raises(grpc.RpcError) as refused:
                        stub.Export(trace_service_pb2.ExportTraceServiceRequest(), timeout=10)
                    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
                    break
            except grpc.FutureTimeoutError:
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
        else:
            raise AssertionError("the OTLP/gRPC port never answered")
    finally:
        process.terminate()
        process.wait(timeout=30)
