"""OpenTelemetry spans → audit records: the one place that decides what each OTLP field becomes.

`map_request(request)` turns an ExportTraceServiceRequest into record dicts in the exact shape of the
REST body (camelCase, checked afterwards by `app.audit.validation.check_records`), one per span, plus
the `service.name` of each (the agent, resolved to an id by the caller). A span that cannot be a record
(invalid ids, timestamps out of range) is returned as a rejection with its reason instead.

Every mapped record fits the audit limits by construction: prompt/response are cut to 1 MB (never
rejected for size), JSON values are bounded in depth and size, NUL characters (which PostgreSQL cannot
store) become U+FFFD, and ids are lower-case hex. The README's "OpenTelemetry ingest" section is the
table of this module; keep the two together.

Sources, first found wins:
    agent     resource service.name; openinference.project.name when service.name is the SDK's default
    action    gen_ai.operation.name → OPERATION_ACTIONS; openinference.span.kind → SPAN_KIND_ACTIONS;
              gen_ai.tool.name present → tool_use; else the span name (control characters removed,
              secrets masked, ≤ 128 characters)
    prompt    gen_ai.input.messages (+ gen_ai.system_instructions); gen_ai.prompt or gen_ai.prompt.N.*;
              llm.input_messages.N.message.*; input.value; span events (gen_ai.content.prompt,
              gen_ai.system/user/assistant/tool.message, gen_ai.client.inference.operation.details)
    response  gen_ai.output.messages; gen_ai.completion or gen_ai.completion.N.*;
              llm.output_messages.N.message.*; output.value; span events (gen_ai.content.completion,
              gen_ai.choice, gen_ai.client.inference.operation.details)
"""

from __future__ import annotations

import base64
import math
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from app.audit.validation import MAX_ACTION_LENGTH, MAX_SHORT, MAX_TEXT_BYTES
from app.masking import mask_text

# --- the table --------------------------------------------------------------------------------
OPERATION_ACTIONS = {  # gen_ai.operation.name
    "chat": "llm_call",
    "text_completion": "llm_call",
    "generate_content": "llm_call",
    "completion": "llm_call",
    "execute_tool": "tool_use",
    "invoke_agent": "agent_invoke",
    "create_agent": "agent_invoke",
    "embeddings": "embedding",
    "embedding": "embedding",
    "retrieval": "retrieval",
}
SPAN_KIND_ACTIONS = {  # openinference.span.kind
    "LLM": "llm_call",
    "TOOL": "tool_use",
    "AGENT": "agent_invoke",
    "CHAIN": "chain",
    "RETRIEVER": "retrieval",
    "EMBEDDING": "embedding",
    "RERANKER": "rerank",
    "GUARDRAIL": "guardrail_check",
    "EVALUATOR": "evaluation",
    "PROMPT": "prompt",
}
OTEL_SPAN_KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}

INPUT_MESSAGE_EVENTS = (
    "gen_ai.system.message",
    "gen_ai.user.message",
    "gen_ai.assistant.message",
    "gen_ai.tool.message",
)
OUTPUT_MESSAGE_EVENTS = ("gen_ai.choice",)
DETAILS_EVENT = "gen_ai.client.inference.operation.details"
_SCALARS = (int, float, bool, type(None))
_INDEXED_PREFIXES = ("gen_ai.prompt.", "gen_ai.completion.", "llm.input_messages.", "llm.output_messages.")

# --- bounds -----------------------------------------------------------------------------------
MAX_ATTRIBUTES_BYTES = 64 * 1024  # metadata.attributes, serialised
MAX_RESOURCE_BYTES = 16 * 1024  # metadata.otel.resource
MAX_SCOPE_ATTRIBUTES_BYTES = 4 * 1024
MAX_EVENTS = 32
MAX_EVENTS_BYTES = 32 * 1024
MAX_EVENT_ATTRIBUTES_BYTES = 8 * 1024
MAX_EVENT_VALUE_CHARS = 4 * 1024
MAX_LINKS = 32
MAX_VALUE_CHARS = 8 * 1024  # one string inside metadata
MAX_LIST_ITEMS = 128
MAX_VALUE_DEPTH = 8
MAX_PARSED_DEPTH = 32  # JSON sent as text (messages, tool arguments) is parsed only up to this nesting
MAX_KEY_CHARS = 256
MAX_NAME_CHARS = 1024  # span name, status message kept under metadata.otel
MAX_ARGS_BYTES = 64 * 1024  # args / result (the audit limit is 256 KB)
MAX_AGENT_NAME = 200
TRUNCATED = "…[truncated]"
_TRUNCATED_BYTES = TRUNCATED.encode()

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(slots=True)
class MappedSpan:
    record: dict[str, Any]  # camelCase, as the REST body; `agentId` is set by the caller
    service_name: str | None

    @property
    def label(self) -> str:
        """ "span … of trace … ('name')", for rejection messages."""
        return _label(self.record["traceId"], self.record["spanId"], self.record["metadata"]["otel"]["name"])


@dataclass(slots=True)
class Rejection:
    label: str
    reason: str


@dataclass(slots=True)
class Mapped:
    spans: list[MappedSpan] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


# --- values -----------------------------------------------------------------------------------
def clean_text(value: str) -> str:
    """PostgreSQL stores no NUL in text or jsonb."""
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def truncate_chars(value: str, limit: int) -> tuple[str, bool]:
    if len(value) <= limit:
        return value, False
    return value[: max(0, limit - len(TRUNCATED))] + TRUNCATED, True


def truncate_bytes(value: str, limit: int) -> tuple[str, bool]:
    """At most `limit` bytes of UTF-8, cut on a character boundary, marked when cut."""
    if len(value) <= limit // 4:
        return value, False
    encoded = value.encode()
    if len(encoded) <= limit:
        return value, False
    head = encoded[: limit - len(_TRUNCATED_BYTES)].decode("utf-8", errors="ignore")
    return head + TRUNCATED, True


def any_value(value: AnyValue, depth: int = 0) -> Any:
    """An OTLP AnyValue as plain JSON: bytes as base64, NaN/Infinity as strings; deeper than
    MAX_VALUE_DEPTH becomes the string "[too deep]"."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return clean_text(value.string_value)
    if kind == "int_value":
        return value.int_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "double_value":
        number = value.double_value
        return number if math.isfinite(number) else str(number)
    if depth >= MAX_VALUE_DEPTH and kind in ("array_value", "kvlist_value"):
        return "[too deep]"
    if kind == "array_value":
        return [any_value(v, depth + 1) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {clean_text(kv.key): any_value(kv.value, depth + 1) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return None


def attributes(items: Iterable[KeyValue]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in items:  # the common scalar cases inline: this runs for every attribute of every span
        value = kv.value
        kind = value.WhichOneof("value")
        if kind == "string_value":
            item: Any = value.string_value
            if "\x00" in item:
                item = item.replace("\x00", "\ufffd")
        elif kind == "int_value":
            item = value.int_value
        else:
            item = any_value(value)
        key = kv.key
        out[key.replace("\x00", "\ufffd") if "\x00" in key else key] = item
    return out


def bounded(value: Any, depth: int = 0, max_chars: int = MAX_VALUE_CHARS) -> tuple[Any, bool]:
    """`value` with long strings cut, long lists shortened and deep nesting flattened; (value, cut)."""
    if isinstance(value, str):
        return truncate_chars(value, max_chars)
    if isinstance(value, list):
        cut = len(value) > MAX_LIST_ITEMS
        out = []
        for item in value[:MAX_LIST_ITEMS]:
            item, item_cut = bounded(item, depth + 1, max_chars)
            out.append(item)
            cut = cut or item_cut
        if depth >= MAX_VALUE_DEPTH:
            return truncate_chars(orjson.dumps(out).decode(), max_chars)[0], True
        return out, cut
    if isinstance(value, dict):
        cut = len(value) > MAX_LIST_ITEMS
        out_dict = {}
        for index, (key, item) in enumerate(value.items()):
            if index >= MAX_LIST_ITEMS:
                break
            item, item_cut = bounded(item, depth + 1, max_chars)
            out_dict[truncate_chars(str(key), MAX_KEY_CHARS)[0]] = item
            cut = cut or item_cut
        if depth >= MAX_VALUE_DEPTH:
            return truncate_chars(orjson.dumps(out_dict).decode(), max_chars)[0], True
        return out_dict, cut
    return value, False


def bounded_object(
    values: dict[str, Any], budget: int, max_chars: int = MAX_VALUE_CHARS
) -> tuple[dict[str, Any], int, int]:
    """Keeps entries in order while their serialised size fits `budget` (bytes of compact JSON), each
    value bounded first; (kept, dropped, truncated)."""
    flat = len(values) <= MAX_LIST_ITEMS and all(
        len(k) <= MAX_KEY_CHARS and ((type(v) is str and len(v) <= max_chars) or type(v) in _SCALARS)
        for k, v in values.items()
    )
    if flat and len(orjson.dumps(values)) <= budget:  # flat and small, the common case: kept as it is
        return values, 0, 0
    kept: dict[str, Any] = {}
    used = 2  # {}
    dropped = truncated = 0
    for key, value in values.items():
        key, key_cut = truncate_chars(key, MAX_KEY_CHARS)
        value, cut = bounded(value, 0, max_chars)
        size = len(orjson.dumps((key, value)))  # ["key",value] is as long as "key":value, plus one
        if used + size > budget:
            dropped += 1
            continue
        used += size
        kept[key] = value
        truncated += cut or key_cut
    return kept, dropped, truncated


def _nests_deeper(value: Any, limit: int) -> bool:
    """Iterative, so hostile nesting cannot exhaust the stack."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return False


def _json_or_text(value: Any) -> Any:
    """A JSON document sent as a string (common for message lists and tool arguments), parsed; kept as
    text when it is not JSON or nests deeper than MAX_PARSED_DEPTH."""
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
        return value if _nests_deeper(parsed, MAX_PARSED_DEPTH) else parsed
    return value


def _fit_json(value: Any) -> tuple[Any, bool]:
    """args/result: the value if it is small and shallow enough, else its JSON text cut to size;
    (value, cut)."""
    value = _json_or_text(value)
    if isinstance(value, str):
        return truncate_bytes(value, MAX_ARGS_BYTES)
    shaped, cut = bounded(value)
    if not cut and len(orjson.dumps(shaped)) <= MAX_ARGS_BYTES:
        return shaped, False
    return truncate_bytes(orjson.dumps(value).decode(), MAX_ARGS_BYTES)[0], True


# --- messages ---------------------------------------------------------------------------------
def _part_text(part: Any) -> str:
    if isinstance(part, str):
        return part
    if not isinstance(part, dict):
        return "" if part is None else orjson.dumps(part).decode()
    kind = part.get("type")
    if kind == "tool_call" or "function" in part:
        function: dict[Any, Any] = part["function"] if isinstance(part.get("function"), dict) else part
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            arguments = orjson.dumps(arguments).decode() if arguments is not None else ""
        return f"[tool call {function.get('name') or ''}({arguments})]"
    if kind == "tool_call_response":
        response = part.get("response", part.get("result"))
        return f"[tool result] {response if isinstance(response, str) else orjson.dumps(response).decode()}"
    for key in ("content", "text"):
        if isinstance(part.get(key), str):
            return part[key]
    return orjson.dumps(part).decode()


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, list):
        return "\n".join(t for t in (_part_text(p) for p in content) if t)
    return _part_text(content)


def message_text(message: Any) -> str:
    """One chat message as "role: text" (tool calls rendered inline)."""
    if not isinstance(message, dict):
        return _content_text(message)
    if "message" in message and isinstance(message["message"], dict) and "role" not in message:
        message = message["message"]  # gen_ai.choice: {"index", "finish_reason", "message": {...}}
    texts = []
    for key in ("parts", "content"):
        if message.get(key) is not None:
            texts.append(_content_text(message[key]))
            break
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        texts.append(_part_text(call))
    text = "\n".join(t for t in texts if t)
    role = message.get("role")
    return f"{role}: {text}" if isinstance(role, str) and role else text


def messages_text(messages: Any) -> str:
    messages = _json_or_text(messages)
    if isinstance(messages, list):
        return "\n".join(message_text(m) for m in messages)
    if isinstance(messages, dict):
        return message_text(messages)
    return messages if isinstance(messages, str) else orjson.dumps(messages).decode()


def _indexed_messages(attrs: dict[str, Any], prefix: str, inner: str, used: set[str]) -> str | None:
    """Flattened message lists: `llm.input_messages.0.message.role` (OpenInference, inner="message."),
    `gen_ai.prompt.0.content` (OpenLLMetry, inner=""). Reads role, content, contents.N text and tool
    calls; other fields (ids, finish reasons) stay in the attributes."""
    found: dict[int, dict[str, Any]] = {}
    for key, value in attrs.items():
        if not key.startswith(prefix):
            continue
        number, _, rest = key[len(prefix) :].partition(".")
        if not number.isdigit() or not rest.startswith(inner):
            continue
        name = rest[len(inner) :]
        fields = found.setdefault(int(number), {})
        if name in ("role", "content"):
            fields[name] = value
        elif name.startswith("contents.") and name.endswith(".message_content.text"):
            position = name.split(".", 2)[1]
            fields.setdefault("contents", {})[int(position) if position.isdigit() else 0] = value
        elif name.startswith("tool_calls.") and name.endswith(("function.name", ".name")):
            position = name.split(".", 2)[1]
            fields.setdefault("calls", {}).setdefault(position, {})["name"] = value
        elif name.startswith("tool_calls.") and name.endswith(("function.arguments", ".arguments")):
            position = name.split(".", 2)[1]
            fields.setdefault("calls", {}).setdefault(position, {})["arguments"] = value
        else:
            continue
        used.add(key)
    if not found:
        return None
    lines = []
    for index in sorted(found):
        fields = found[index]
        content = fields.get("content")
        if content is None and "contents" in fields:
            content = "\n".join(str(fields["contents"][i]) for i in sorted(fields["contents"]))
        calls = [{"type": "tool_call", **c} for _, c in sorted(fields.get("calls", {}).items())]
        lines.append(message_text({"role": fields.get("role"), "content": content, "tool_calls": calls}))
    return "\n".join(lines)


def _event_message(event: Span.Event, event_attrs: dict[str, Any]) -> str:
    """A per-message GenAI event: the message is in `content`/`message` attributes (span events carry
    no body), the role is in the event name unless given."""
    body = event_attrs.get("message", event_attrs.get("content", event_attrs.get("gen_ai.event.content")))
    body = _json_or_text(body)
    role = event_attrs.get("role")
    if role is None and event.name != "gen_ai.choice":
        role = event.name.removeprefix("gen_ai.").removesuffix(".message")
    if isinstance(body, dict):
        if role and "role" not in body and "message" not in body:
            body = {**body, "role": role}
        return message_text(body)
    text = _content_text(body)
    return f"{role}: {text}" if role else text


# --- one span ---------------------------------------------------------------------------------
@dataclass(slots=True)
class _Context:
    """What all spans of one resource and scope share, computed once."""

    service_name: str | None
    resource: dict[str, Any]
    scope: dict[str, Any]


def _time(nanos: int) -> datetime:
    return _EPOCH + timedelta(microseconds=nanos // 1000)


def _first(attrs: dict[str, Any], used: set[str], *keys: str) -> Any:
    for key in keys:
        value = attrs.get(key)
        if value is not None and value != "":
            used.add(key)
            return value
    return None


def _tokens(attrs: dict[str, Any], used: set[str], *keys: str) -> int | None:
    for key in keys:
        value = attrs.get(key)
        if isinstance(value, bool):
            continue
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if isinstance(value, int) and value >= 0:
            used.add(key)
            return value
    return None


def _printable(text: str) -> str:
    """Control and format characters as spaces, runs of white space as one space, trimmed."""
    if not text.isprintable():
        text = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in text)
    return " ".join(text.split())


def sanitise_action(name: str) -> str:
    cleaned = _printable(name)
    if cleaned:
        cleaned = mask_text(cleaned)[0]
    return cleaned[:MAX_ACTION_LENGTH].strip() or "span"


def _short(value: Any) -> str | None:
    if value is None:
        return None
    text = clean_text(value if isinstance(value, str) else str(value)).strip()
    return text[:MAX_SHORT] or None


def _action(attrs: dict[str, Any], span_name: str) -> str:
    operation = attrs.get("gen_ai.operation.name")
    if isinstance(operation, str) and operation.strip():
        return OPERATION_ACTIONS.get(operation.strip().lower()) or sanitise_action(operation)
    kind = attrs.get("openinference.span.kind")
    if isinstance(kind, str) and kind.strip():
        return SPAN_KIND_ACTIONS.get(kind.strip().upper()) or sanitise_action(kind.lower())
    if attrs.get("gen_ai.tool.name"):
        return "tool_use"
    return sanitise_action(span_name)


def _prompt(attrs: dict[str, Any], events: list[tuple[Span.Event, dict[str, Any]]], used: set[str]) -> str | None:
    if attrs.get("gen_ai.input.messages") is not None:
        used.add("gen_ai.input.messages")
        text: str | None = messages_text(attrs["gen_ai.input.messages"])
        if attrs.get("gen_ai.system_instructions") is not None:
            used.add("gen_ai.system_instructions")
            text = f"system: {_content_text(_json_or_text(attrs['gen_ai.system_instructions']))}\n{text}"
        return text
    if attrs.get("gen_ai.prompt") is not None:
        used.add("gen_ai.prompt")
        return messages_text(attrs["gen_ai.prompt"])
    indexed = [k for k in attrs if k.startswith(_INDEXED_PREFIXES)]  # usually none: one pass to know
    for prefix, inner in (("gen_ai.prompt.", ""), ("llm.input_messages.", "message.")) if indexed else ():
        text = _indexed_messages({k: attrs[k] for k in indexed}, prefix, inner, used)
        if text is not None:
            return text
    if attrs.get("input.value") is not None:
        used.add("input.value")
        value = attrs["input.value"]
        return value if isinstance(value, str) else orjson.dumps(value).decode()
    return _from_events(events, "gen_ai.input.messages", "gen_ai.prompt", INPUT_MESSAGE_EVENTS)


def _response(attrs: dict[str, Any], events: list[tuple[Span.Event, dict[str, Any]]], used: set[str]) -> str | None:
    if attrs.get("gen_ai.output.messages") is not None:
        used.add("gen_ai.output.messages")
        return messages_text(attrs["gen_ai.output.messages"])
    if attrs.get("gen_ai.completion") is not None:
        used.add("gen_ai.completion")
        return messages_text(attrs["gen_ai.completion"])
    indexed = [k for k in attrs if k.startswith(_INDEXED_PREFIXES)]  # usually none: one pass to know
    for prefix, inner in (("gen_ai.completion.", ""), ("llm.output_messages.", "message.")) if indexed else ():
        text = _indexed_messages({k: attrs[k] for k in indexed}, prefix, inner, used)
        if text is not None:
            return text
    if attrs.get("output.value") is not None:
        used.add("output.value")
        value = attrs["output.value"]
        return value if isinstance(value, str) else orjson.dumps(value).decode()
    return _from_events(events, "gen_ai.output.messages", "gen_ai.completion", OUTPUT_MESSAGE_EVENTS)


_TOOL_VALUE_KEYS = frozenset(("input.value", "output.value"))
_EMBEDDINGS = "embedding.embeddings."


def _embedding(attrs: dict[str, Any], used: set[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """An embedding span (OpenInference EMBEDDING, GenAI `embeddings`): the texts embedded
    (`embedding.embeddings.N.embedding.text`) are the prompt; vectors are never stored, only counted
    (`metadata.embeddings: {count, dimensions}`), and the raw `output.value` (the provider's answer, vectors
    and all) is dropped. Returns (the summary, the attributes the prompt and response are read from)."""
    texts: dict[int, str] = {}
    count = 0
    dimensions = None
    for key, value in attrs.items():
        if not key.startswith(_EMBEDDINGS):
            continue
        number, _, rest = key[len(_EMBEDDINGS) :].partition(".")
        if rest == "embedding.vector":
            used.add(key)
            count += 1
            if dimensions is None and isinstance(value, list):
                dimensions = len(value)
        elif rest == "embedding.text" and number.isdigit():
            used.add(key)
            texts[int(number)] = value if isinstance(value, str) else orjson.dumps(value).decode()
    view = {k: v for k, v in attrs.items() if k != "output.value"}
    if "output.value" in attrs:
        used.update(("output.value", "output.mime_type"))
        if not count:  # the vectors only in the raw answer: an OpenAI-style {"data": [{"embedding": [...]}]}
            parsed = _json_or_text(attrs["output.value"])
            data = parsed.get("data") if isinstance(parsed, dict) else None
            if isinstance(data, list):
                count = len(data)
                first = data[0].get("embedding") if data and isinstance(data[0], dict) else None
                dimensions = len(first) if isinstance(first, list) else dimensions
    if texts:
        view["input.value"] = "\n".join(texts[i] for i in sorted(texts))
        used.add("input.value")
    summary: dict[str, Any] = {"count": count} if count or texts else {}
    if dimensions is not None:
        summary["dimensions"] = dimensions
    if texts and not count:
        summary["count"] = len(texts)
    return summary, view


def _from_events(
    events: list[tuple[Span.Event, dict[str, Any]]], messages_key: str, legacy_key: str, per_message: tuple[str, ...]
) -> str | None:
    texts = []
    for event, event_attrs in events:
        if event_attrs.get(messages_key) is not None:  # gen_ai.client.inference.operation.details
            texts.append(messages_text(event_attrs[messages_key]))
        elif event_attrs.get(legacy_key) is not None:  # gen_ai.content.prompt / gen_ai.content.completion
            texts.append(messages_text(event_attrs[legacy_key]))
        elif event.name in per_message:
            texts.append(_event_message(event, event_attrs))
    return "\n".join(texts) if texts else None


def _is_content_event(event: Span.Event) -> bool:
    return (
        event.name in INPUT_MESSAGE_EVENTS
        or event.name in OUTPUT_MESSAGE_EVENTS
        or event.name in ("gen_ai.content.prompt", "gen_ai.content.completion", DETAILS_EVENT)
    )


def _events_metadata(events: list[tuple[Span.Event, dict[str, Any]]], dropped: int) -> tuple[list[dict[str, Any]], int]:
    out: list[dict[str, Any]] = []
    used = 2
    for event, event_attrs in events:
        if _is_content_event(event):
            continue  # their content is the record's prompt/response
        if len(out) >= MAX_EVENTS:
            dropped += 1
            continue
        kept, _, _ = bounded_object(event_attrs, MAX_EVENT_ATTRIBUTES_BYTES, MAX_EVENT_VALUE_CHARS)
        entry: dict[str, Any] = {"name": truncate_chars(clean_text(event.name), MAX_NAME_CHARS)[0]}
        if event.time_unix_nano:
            entry["time"] = _iso(event.time_unix_nano)
        if kept:
            entry["attributes"] = kept
        size = len(orjson.dumps(entry))
        if used + size > MAX_EVENTS_BYTES:
            dropped += 1
            continue
        used += size
        out.append(entry)
    return out, dropped


def _iso(nanos: int) -> str | None:
    try:
        return _time(nanos).isoformat().replace("+00:00", "Z")
    except OverflowError:
        return None


def _label(trace_id: str, span_id: str, name: str) -> str:
    return f"span {span_id or '?'} of trace {trace_id or '?'} ({truncate_chars(name, 80)[0]!r})"


def map_span(span: Span, context: _Context) -> MappedSpan | Rejection:
    trace_id = span.trace_id.hex()
    span_id = span.span_id.hex()
    name = clean_text(span.name)
    if len(span.trace_id) != 16 or not any(span.trace_id):
        return Rejection(_label(trace_id, span_id, name), "trace_id must be 16 bytes, not all zero")
    if len(span.span_id) != 8 or not any(span.span_id):
        return Rejection(_label(trace_id, span_id, name), "span_id must be 8 bytes, not all zero")
    parent_span_id = None
    parent = span.parent_span_id
    if parent:
        if len(parent) != 8:
            return Rejection(_label(trace_id, span_id, name), "parent_span_id must be empty or 8 bytes")
        if any(parent):
            parent_span_id = parent.hex()

    occurred_at = None
    duration_ms = None
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    if start:
        try:
            occurred_at = _time(start)
        except OverflowError:
            return Rejection(_label(trace_id, span_id, name), "start_time_unix_nano is out of range")
        if end >= start:
            duration = (end - start) / 1_000_000
            duration_ms = duration if duration < 10**12 else None

    attrs = attributes(span.attributes)
    events = [(event, attributes(event.attributes)) for event in span.events] if span.events else []
    used: set[str] = set()
    truncated_fields: list[str] = []

    action = _action(attrs, name)
    tool_values: tuple[Any, Any] | None = None
    embedding: dict[str, Any] | None = None
    text_attrs = attrs
    if action == "tool_use" and ("input.value" in attrs or "output.value" in attrs):
        # OpenInference TOOL spans carry the call's arguments and result as input/output.value
        tool_values = (attrs.get("input.value"), attrs.get("output.value"))
        used.update(("input.value", "output.value", "input.mime_type", "output.mime_type"))
        text_attrs = {k: v for k, v in attrs.items() if k not in _TOOL_VALUE_KEYS}
    elif action == "embedding":
        embedding, text_attrs = _embedding(attrs, used)
    prompt = _prompt(text_attrs, events, used)
    response = _response(text_attrs, events, used)
    if prompt is not None:
        prompt, cut = truncate_bytes(clean_text(prompt), MAX_TEXT_BYTES)
        if cut:
            truncated_fields.append("prompt")
    if response is not None:
        response, cut = truncate_bytes(clean_text(response), MAX_TEXT_BYTES)
        if cut:
            truncated_fields.append("response")

    metadata: dict[str, Any] = {}
    request_model = _first(attrs, used, "gen_ai.request.model")
    response_model = _first(attrs, used, "gen_ai.response.model")
    model = response_model or request_model or _first(attrs, used, "llm.model_name", "embedding.model_name")
    if model is not None:
        metadata["model"] = _short(model)  # the model that answered, else the one asked for
    if request_model is not None and response_model is not None and request_model != response_model:
        metadata["requestModel"] = _short(request_model)
    input_tokens = _tokens(
        attrs, used, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt"
    )
    output_tokens = _tokens(
        attrs, used, "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.token_count.completion"
    )
    total_tokens = _tokens(attrs, used, "gen_ai.usage.total_tokens", "llm.token_count.total")
    if input_tokens is not None:
        metadata["inputTokens"] = input_tokens
    if output_tokens is not None:
        metadata["outputTokens"] = output_tokens
    if total_tokens is None and (input_tokens is not None or output_tokens is not None):
        total_tokens = (input_tokens or 0) + (output_tokens or 0)
    if total_tokens is not None:
        metadata["tokens"] = total_tokens

    verb = _short(_first(attrs, used, "gen_ai.tool.name", "tool.name"))
    provider = _short(_first(attrs, used, "gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system"))
    args = result = None
    if tool_values is not None:
        for position, value in enumerate(tool_values):
            if value is None:
                continue
            fitted, cut = _fit_json(value)
            if position == 0:
                args = fitted
            else:
                result = fitted
            if cut:
                truncated_fields.append(("args", "result")[position])
    if embedding:
        metadata["embeddings"] = embedding
    if attrs.get("gen_ai.tool.call.arguments") is not None:
        used.add("gen_ai.tool.call.arguments")
        args, cut = _fit_json(attrs["gen_ai.tool.call.arguments"])
        if cut:
            truncated_fields.append("args")
    if attrs.get("gen_ai.tool.call.result") is not None:
        used.add("gen_ai.tool.call.result")
        result, cut = _fit_json(attrs["gen_ai.tool.call.result"])
        if cut:
            truncated_fields.append("result")

    rest = {k: v for k, v in attrs.items() if k not in used} if used else attrs
    kept, dropped, truncated = bounded_object(rest, MAX_ATTRIBUTES_BYTES)
    otel: dict[str, Any] = {
        "kind": OTEL_SPAN_KINDS.get(span.kind, str(span.kind)),
        "name": truncate_chars(name, MAX_NAME_CHARS)[0],
    }
    if context.scope:
        otel["scope"] = context.scope
    if context.resource:
        otel["resource"] = context.resource
    status = span.status
    if status.message:
        otel["statusMessage"] = truncate_chars(clean_text(status.message), MAX_NAME_CHARS)[0]
    if span.trace_state:
        otel["traceState"] = truncate_chars(clean_text(span.trace_state), MAX_NAME_CHARS)[0]
    dropped_events = span.dropped_events_count
    event_list, dropped_events = _events_metadata(events, dropped_events) if events else ([], dropped_events)
    if event_list:
        otel["events"] = event_list
    links = span.links
    if links:
        otel["links"] = [{"traceId": link.trace_id.hex(), "spanId": link.span_id.hex()} for link in links[:MAX_LINKS]]
    dropped_links = span.dropped_links_count + max(0, len(links) - MAX_LINKS)
    if dropped + span.dropped_attributes_count:
        otel["droppedAttributesCount"] = dropped + span.dropped_attributes_count
    if truncated:
        otel["truncatedAttributesCount"] = truncated
    if dropped_events:
        otel["droppedEventsCount"] = dropped_events
    if dropped_links:
        otel["droppedLinksCount"] = dropped_links
    if truncated_fields:
        otel["truncatedFields"] = truncated_fields
    metadata["otel"] = otel
    metadata["attributes"] = kept

    record: dict[str, Any] = {
        "action": action,
        "traceId": trace_id,
        "spanId": span_id,
        "parentSpanId": parent_span_id,
        "occurredAt": occurred_at,
        "durationMs": duration_ms,
        "status": "error" if status.code == Status.STATUS_CODE_ERROR else "ok",
        "idempotencyKey": f"otlp:{trace_id}:{span_id}",
        "metadata": metadata,
    }
    for key, value in (
        ("prompt", prompt),
        ("response", response),
        ("verb", verb),
        ("provider", provider),
        ("args", args),
        ("result", result),
    ):
        if value is not None:
            record[key] = value
    return MappedSpan(record=record, service_name=context.service_name)


# --- the request ------------------------------------------------------------------------------
def agent_name(value: Any) -> str | None:
    """`service.name` as an agent name: control characters removed, at most 200 characters."""
    if not isinstance(value, str):
        return None
    return _printable(value)[:MAX_AGENT_NAME].strip() or None


PROJECT_NAME_KEY = "openinference.project.name"  # arize-phoenix-otel's register(project_name=…)


def service_name_of(resource_attrs: dict[str, Any]) -> str | None:
    """The agent of a resource: `service.name`, unless it is missing or the SDK's default
    (`unknown_service`, `unknown_service:python`, …) and the resource names an OpenInference project."""
    name = resource_attrs.get("service.name")
    if not isinstance(name, str) or not name.strip() or name.startswith("unknown_service"):
        project = agent_name(resource_attrs.get(PROJECT_NAME_KEY))
        if project is not None:
            return project
    return agent_name(name)


def map_request(request: ExportTraceServiceRequest) -> Mapped:
    out = Mapped()
    for resource_spans in request.resource_spans:
        resource_attrs = attributes(resource_spans.resource.attributes)
        service_name = service_name_of(resource_attrs)
        resource, _, _ = bounded_object(resource_attrs, MAX_RESOURCE_BYTES)
        for scope_spans in resource_spans.scope_spans:
            scope: dict[str, Any] = {}
            if scope_spans.scope.name:
                scope["name"] = truncate_chars(clean_text(scope_spans.scope.name), MAX_NAME_CHARS)[0]
            if scope_spans.scope.version:
                scope["version"] = truncate_chars(clean_text(scope_spans.scope.version), MAX_NAME_CHARS)[0]
            if scope_spans.scope.attributes:
                scope["attributes"] = bounded_object(
                    attributes(scope_spans.scope.attributes), MAX_SCOPE_ATTRIBUTES_BYTES
                )[0]
            context = _Context(service_name=service_name, resource=resource, scope=scope)
            for span in scope_spans.spans:
                mapped = map_span(span, context)
                if isinstance(mapped, Rejection):
                    out.rejections.append(mapped)
                else:
                    out.spans.append(mapped)
    return out
