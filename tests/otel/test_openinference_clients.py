"""Issue 17.7–9 with the clients users have: arize-phoenix-otel's `register(project_name=…)` and the
OpenInference semantic conventions, exported by the real OpenTelemetry SDK over OTLP/HTTP to a real uvicorn."""

from __future__ import annotations

import asyncio
import json

import sqlalchemy as sa
from openinference.semconv.trace import OpenInferenceSpanKindValues, SpanAttributes
from phoenix.otel import register

from support import create_api_key, gql
from support import register as register_account

VECTOR = [0.0625] * 256


async def test_phoenix_project_tool_and_embedding_spans(client, runtime, live_server):
    account = await register_account(client)
    key, _ = await create_api_key(client, account)
    provider = register(
        endpoint=f"http://{live_server}/v1/traces",
        project_name="support-bot",
        headers={"x-api-key": key},
        protocol="http/protobuf",
        batch=False,
        set_global_tracer_provider=False,
        verbose=False,
    )
    assert provider.resource.attributes["service.name"].startswith("unknown_service")  # the SDK's default
    tracer = provider.get_tracer("agent")

    def run() -> str:
        with tracer.start_as_current_span("refund", openinference_span_kind="tool") as tool:
            tool.set_attribute(SpanAttributes.TOOL_NAME, "stripe:create_refund")
            tool.set_attribute(SpanAttributes.INPUT_VALUE, json.dumps({"amount": 50, "charge_id": "ch_abc123"}))
            tool.set_attribute(SpanAttributes.INPUT_MIME_TYPE, "application/json")
            tool.set_attribute(SpanAttributes.OUTPUT_VALUE, json.dumps({"refund_id": "re_xyz789"}))
            tool.set_attribute(SpanAttributes.OUTPUT_MIME_TYPE, "application/json")
            trace_id = format(tool.get_span_context().trace_id, "032x")
        with tracer.start_as_current_span("embed") as embed:
            embed.set_attribute(SpanAttributes.OPENINFERENCE_SPAN_KIND, OpenInferenceSpanKindValues.EMBEDDING.value)
            embed.set_attribute(SpanAttributes.EMBEDDING_MODEL_NAME, "text-embedding-3-small")
            for i, text in enumerate(("refund policy", "chargebacks")):
                embed.set_attribute(f"embedding.embeddings.{i}.embedding.text", text)
                embed.set_attribute(f"embedding.embeddings.{i}.embedding.vector", VECTOR)
            embed.set_attribute(SpanAttributes.OUTPUT_VALUE, json.dumps({"data": [{"embedding": VECTOR}] * 2}))
        provider.force_flush()
        return trace_id

    trace_id = await asyncio.to_thread(run)
    provider.shutdown()

    agents = (await gql(client, "Agents", token=account.token))["data"]["agents"]["edges"]
    assert [a["node"]["name"] for a in agents] == ["support-bot"]  # the project, not "unknown_service:python"
    result = await gql(client, "AuditLogs", {"first": 10}, api_key=key)
    nodes = {n["action"]: n for n in (e["node"] for e in result["data"]["auditLogs"]["edges"])}
    tool = nodes["tool_use"]
    assert tool["traceId"] == trace_id and tool["verb"] == "stripe:create_refund"
    assert tool["args"] == {"amount": 50, "charge_id": "ch_abc123"} and tool["result"] == {"refund_id": "re_xyz789"}
    assert tool["prompt"] is None and tool["response"] is None
    embedding = nodes["embedding"]
    assert embedding["prompt"] == "refund policy\nchargebacks" and embedding["response"] is None
    assert embedding["metadata"]["embeddings"] == {"count": 2, "dimensions": 256}
    async with runtime.db.engine.connect() as conn:
        stored = (
            await conn.execute(sa.text("SELECT metadata::text FROM audit_logs WHERE action = 'embedding'"))
        ).scalar()
    assert "0.0625" not in stored and "embedding.vector" not in stored
