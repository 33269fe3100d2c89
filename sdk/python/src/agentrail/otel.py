"""OpenTelemetry to Agentrail, for apps already instrumented (OpenInference, OpenLLMetry, opentelemetry-
instrumentation-openai-v2, …): one call sets up a tracer provider whose OTLP/HTTP exporter sends to Agentrail's
`/v1/traces` with the API key, and whose resource names the agent (`service.name`; the server registers an
unknown name as an agent). Needs the `otel` extra: `pip install "agentrail-sdk[otel]"`.

    from agentrail.otel import configure
    configure(agent="support-bot")                  # AGENTRAIL_API_KEY / AGENTRAIL_URL, or pass them
    OpenAIInstrumentor().instrument()               # whichever instrumentation the app uses
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from agentrail.client import _base_url


def configure(
    api_key: str | None = None,
    base_url: str | None = None,
    *,
    agent: str | None = None,
    resource_attributes: Mapping[str, Any] | None = None,
    set_global: bool = True,
    batch: bool = True,
    compression: bool = True,
) -> Any:
    """Returns the `TracerProvider` (also made the global one unless `set_global=False`). `agent`: the agent's
    name (else `OTEL_SERVICE_NAME`, else "agent"). `batch=False` exports each span at its end (scripts, tests);
    call `provider.shutdown()` (or `force_flush()`) before exiting either way."""
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError('agentrail.otel needs the "otel" extra: pip install "agentrail-sdk[otel]"') from exc

    key = api_key or os.environ.get("AGENTRAIL_API_KEY")
    if not key:
        raise ValueError("an API key is needed: pass api_key or set AGENTRAIL_API_KEY")
    name = agent or os.environ.get("OTEL_SERVICE_NAME") or "agent"
    resource = Resource.create({**(resource_attributes or {}), "service.name": name})
    exporter = OTLPSpanExporter(
        endpoint=f"{_base_url(base_url)}/v1/traces",
        headers={"x-api-key": key},
        compression=Compression.Gzip if compression else Compression.NoCompression,
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
    if set_global:
        trace.set_tracer_provider(provider)
    return provider
