"""OTLP log records → audit records: the GenAI content events instrumentations emit as logs.

GenAI instrumentations in `event_only` mode (opentelemetry-instrumentation-openai-v2 and the other
`-v2` ones, OpenLLMetry with `use_legacy_attributes=False`) send no prompt or completion on the span:
each message is a log record of the span's trace and span id, named `gen_ai.system.message`,
`gen_ai.user.message`, `gen_ai.assistant.message`, `gen_ai.tool.message`, `gen_ai.choice`, or
`gen_ai.client.inference.operation.details` (the event name in `event_name`, or the `event.name`
attribute of older SDKs; the message in the body, or in attributes).

Audit records are immutable, so the content cannot be written into a span's record after the fact. Each event
becomes a record of its own instead, a child of its span (`parentSpanId`): `action` `llm_content`, `prompt` an
input message (system, user, assistant, tool), `response` a choice (the details event: both), `occurredAt` the
event's time. A child may arrive before or after its span (as any span may): the trace tree links them either
way, so the stored result is the same whichever arrives first, and however the exporter batched the events.
Re-sent exports write nothing new (the idempotency key hashes the log record). Log records that are not GenAI
events are acknowledged and not stored; a GenAI event without the trace and span id of its span is rejected
(partial success).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from app.audit.validation import MAX_TEXT_BYTES
from app.otel.mapping import (
    DETAILS_EVENT,
    INPUT_MESSAGE_EVENTS,
    MAX_NAME_CHARS,
    Mapped,
    MappedSpan,
    Rejection,
    _content_text,
    _json_or_text,
    _time,
    any_value,
    attributes,
    bounded_object,
    clean_text,
    message_text,
    messages_text,
    service_name_of,
    truncate_bytes,
    truncate_chars,
)

CONTENT_ACTION = "llm_content"
LEGACY_EVENTS = {"gen_ai.content.prompt": "gen_ai.prompt", "gen_ai.content.completion": "gen_ai.completion"}
GENAI_EVENTS = frozenset((*INPUT_MESSAGE_EVENTS, "gen_ai.choice", DETAILS_EVENT, *LEGACY_EVENTS))
_CONTENT_KEYS = frozenset(
    ("content", "message", "role", "gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions")
)
MAX_ATTRIBUTES_BYTES = 16 * 1024


def _event_name(record: LogRecord, attrs: dict[str, Any]) -> str:
    name = record.event_name or attrs.get("event.name") or ""
    return name if isinstance(name, str) else ""


def _message(name: str, body: Any, attrs: dict[str, Any]) -> str:
    """One per-message event as "role: text" (the role from the body, else from the event name)."""
    body = _json_or_text(body)
    if body is None:
        body = attrs.get("content", attrs.get("message"))
        body = _json_or_text(body)
    role = attrs.get("role")
    if role is None and name != "gen_ai.choice":
        role = name.removeprefix("gen_ai.").removesuffix(".message")
    if isinstance(body, dict):
        if role and "role" not in body and "message" not in body:
            body = {**body, "role": role}
        return message_text(body)
    text = _content_text(body)
    return f"{role}: {text}" if role and text else text


def content_of(name: str, body: Any, attrs: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(prompt lines, response lines) of one GenAI event."""
    if name == DETAILS_EVENT:
        prompt = []
        if attrs.get("gen_ai.system_instructions") is not None:
            prompt.append(f"system: {_content_text(_json_or_text(attrs['gen_ai.system_instructions']))}")
        if attrs.get("gen_ai.input.messages") is not None:
            prompt.append(messages_text(attrs["gen_ai.input.messages"]))
        output = attrs.get("gen_ai.output.messages")
        return prompt, [messages_text(output)] if output is not None else []
    if name in LEGACY_EVENTS:
        value = attrs.get(LEGACY_EVENTS[name], body)
        text = messages_text(value) if value is not None else ""
        lines = [text] if text else []
        return (lines, []) if name == "gen_ai.content.prompt" else ([], lines)
    text = _message(name, body, attrs)
    if not text:
        return [], []
    return ([], [text]) if name == "gen_ai.choice" else ([text], [])


@dataclass(slots=True)
class _Group:
    """One GenAI event (the shape allows several; each log record is its own today)."""

    trace_id: str
    span_id: str
    service_name: str | None
    scope: str | None
    first_nanos: int = 0
    names: list[str] = field(default_factory=list)
    prompt: list[str] = field(default_factory=list)
    response: list[str] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)
    digest: Any = field(default_factory=hashlib.sha256)


def _label(trace_id: str, span_id: str, name: str) -> str:
    return f"log record of span {span_id or '?'} of trace {trace_id or '?'} ({truncate_chars(name, 80)[0]!r})"


def _occurred_at(nanos: int) -> datetime | None:
    try:
        return _time(nanos) if nanos else None
    except OverflowError:
        return None


def _record(group: _Group) -> MappedSpan:
    key = group.digest.hexdigest()
    otel: dict[str, Any] = {"signal": "logs", "eventName": group.names[0]}
    if group.scope:
        otel["scope"] = {"name": group.scope}
    metadata: dict[str, Any] = {"otel": otel, "attributes": group.attributes}
    record: dict[str, Any] = {
        "action": CONTENT_ACTION,
        "traceId": group.trace_id,
        "spanId": f"{group.span_id}:log:{key[:12]}",
        "parentSpanId": group.span_id,
        "occurredAt": _occurred_at(group.first_nanos),
        "status": "ok",
        "idempotencyKey": f"otlp-log:{group.trace_id}:{group.span_id}:{key[:32]}",
        "metadata": metadata,
    }
    truncated = []
    for name, lines in (("prompt", group.prompt), ("response", group.response)):
        if lines:
            text, cut = truncate_bytes(clean_text("\n".join(lines)), MAX_TEXT_BYTES)
            record[name] = text
            if cut:
                truncated.append(name)
    if truncated:
        otel["truncatedFields"] = truncated
    # `label` reads metadata.otel.name
    otel["name"] = truncate_chars(group.names[0] if group.names else CONTENT_ACTION, MAX_NAME_CHARS)[0]
    return MappedSpan(record=record, service_name=group.service_name)


def map_logs_request(request: ExportLogsServiceRequest) -> tuple[Mapped, int]:
    """The GenAI events of the export as records, one each; and how many log records it held."""
    out = Mapped()
    groups: list[_Group] = []
    received = 0
    for resource_logs in request.resource_logs:
        service_name = service_name_of(attributes(resource_logs.resource.attributes))
        for scope_logs in resource_logs.scope_logs:
            scope = clean_text(scope_logs.scope.name) if scope_logs.scope.name else None
            for log in scope_logs.log_records:
                received += 1
                attrs = attributes(log.attributes)
                name = clean_text(_event_name(log, attrs))
                if name not in GENAI_EVENTS:
                    continue  # an application log: acknowledged, not an audit record
                trace_id, span_id = log.trace_id.hex(), log.span_id.hex()
                if len(log.trace_id) != 16 or not any(log.trace_id) or len(log.span_id) != 8 or not any(log.span_id):
                    out.rejections.append(
                        Rejection(
                            _label(trace_id, span_id, name),
                            "a GenAI event needs the trace_id (16 bytes) and span_id (8 bytes) of its span",
                        )
                    )
                    continue
                body = any_value(log.body) if log.HasField("body") else None
                group = _Group(trace_id, span_id, service_name, scope)
                groups.append(group)
                nanos = log.time_unix_nano or log.observed_time_unix_nano
                if nanos and (not group.first_nanos or nanos < group.first_nanos):
                    group.first_nanos = nanos
                group.names.append(name)
                group.digest.update(log.SerializeToString(deterministic=True))
                prompt, response = content_of(name, body, attrs)
                group.prompt.extend(prompt)
                group.response.extend(response)
                for key, value in attrs.items():
                    if key not in _CONTENT_KEYS and key != "event.name":
                        group.attributes.setdefault(key, value)
    for group in groups:
        group.attributes = bounded_object(group.attributes, MAX_ATTRIBUTES_BYTES)[0]
        out.spans.append(_record(group))
    return out, received
