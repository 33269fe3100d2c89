"""OTLP/HTTP wire formats: content types, decompression with a hard cap, protobuf and OTLP JSON decoding,
and the encoded responses (ExportTraceServiceResponse, google.rpc.Status) in the request's encoding.

OTLP JSON is protobuf's JSON mapping with one exception that `json_format` does not know: trace and span
ids are hex strings, not base64. Ids are rewritten to base64 before `ParseDict`, and nothing else is
hand-written: the messages are those of `opentelemetry-proto` and `googleapis-common-protos`.
"""

from __future__ import annotations

import base64
import zlib
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import DecodeError, Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from app.rest.media import media_type

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_CONTENT_TYPES = {"application/x-protobuf": PROTOBUF, "application/protobuf": PROTOBUF, "application/json": JSON}
_ENCODINGS = {"": None, "identity": None, "gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": 0}

# HTTP status -> the gRPC code a google.rpc.Status carries
GRPC_CODES = {
    400: code_pb2.INVALID_ARGUMENT,
    401: code_pb2.UNAUTHENTICATED,
    402: code_pb2.RESOURCE_EXHAUSTED,
    403: code_pb2.PERMISSION_DENIED,
    404: code_pb2.NOT_FOUND,
    409: code_pb2.ABORTED,
    413: code_pb2.RESOURCE_EXHAUSTED,
    415: code_pb2.INVALID_ARGUMENT,
    429: code_pb2.RESOURCE_EXHAUSTED,
    500: code_pb2.INTERNAL,
    503: code_pb2.UNAVAILABLE,
}


class WireError(Exception):
    """The request cannot be read: carries the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def content_type(header: str | None) -> str:
    """The request's encoding (PROTOBUF or JSON); 415 for anything else."""
    media = media_type(header)
    found = _CONTENT_TYPES.get(media)
    if found is None:
        raise WireError(415, f"unsupported content type {media or '(none)'!r}: send {PROTOBUF} or {JSON}")
    return found


def decompress(body: bytes, encoding_header: str | None, *, max_bytes: int) -> bytes:
    """The body as sent before compression. Never inflates past `max_bytes` (413): a gzip bomb costs
    at most `max_bytes` of memory. 415 for an unknown Content-Encoding, 400 for a corrupt stream."""
    encoding = (encoding_header or "").strip().lower()
    if encoding not in _ENCODINGS:
        raise WireError(415, f"unsupported content encoding {encoding!r}: send gzip, deflate or none")
    wbits = _ENCODINGS[encoding]
    if wbits is None:
        return body
    out = bytearray()
    data = body
    try:
        while data:
            inflater = zlib.decompressobj(wbits)
            out += inflater.decompress(data, max_bytes + 1 - len(out))
            if len(out) > max_bytes or inflater.unconsumed_tail:
                raise WireError(413, f"the decompressed body exceeds {max_bytes} bytes")
            if not inflater.eof:
                raise WireError(400, f"the {encoding} stream is truncated")
            data = inflater.unused_data  # gzip allows several members one after another
            if data and wbits != 16 + zlib.MAX_WBITS:
                raise WireError(400, f"trailing bytes after the {encoding} stream")
    except zlib.error as exc:
        raise WireError(400, f"the body is not valid {encoding}: {exc}") from None
    return bytes(out)


_M = TypeVar("_M", bound=Message)


def _decode(payload: bytes, encoding: str, message: _M, rewrite_ids: Any) -> _M:
    name = type(message).__name__
    if encoding == PROTOBUF:
        try:
            message.ParseFromString(payload)
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise WireError(400, f"the body is not a valid {name}: {exc}") from None
        return message
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise WireError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise WireError(400, f"the body must be a JSON object ({name})")
    rewrite_ids(document)
    try:
        return json_format.ParseDict(document, message, ignore_unknown_fields=True)
    except (json_format.ParseError, TypeError, ValueError, RecursionError) as exc:
        raise WireError(400, f"the body is not a valid OTLP JSON {name}: {exc}") from None


def decode_request(payload: bytes, encoding: str) -> ExportTraceServiceRequest:
    return _decode(payload, encoding, ExportTraceServiceRequest(), _hex_ids_to_base64)


def decode_logs_request(payload: bytes, encoding: str) -> ExportLogsServiceRequest:
    return _decode(payload, encoding, ExportLogsServiceRequest(), _hex_log_ids_to_base64)


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _get(node: dict[str, Any], camel: str, snake: str) -> Any:
    return node.get(camel, node.get(snake))


def _children(document: dict[str, Any], *levels: tuple[str, str]) -> list[dict[str, Any]]:
    """The objects found by descending the named lists (camelCase or snake_case, as OTLP JSON allows),
    level by level; anything that is not an object is passed over (it fails later, alone)."""
    nodes = [document]
    for camel, snake in levels:
        nodes = [child for node in nodes for child in _items(_get(node, camel, snake)) if isinstance(child, dict)]
    return nodes


_IDS = ("traceId", "trace_id", "spanId", "span_id")


def _hex_ids_to_base64(document: dict[str, Any]) -> None:
    """OTLP JSON ids are hex; protobuf's JSON mapping expects base64. Rewritten in place. An id that
    is not hex becomes empty, so that span is rejected on its own instead of failing the request."""
    levels = (("resourceSpans", "resource_spans"), ("scopeSpans", "scope_spans"), ("spans", "spans"))
    for span in _children(document, *levels):
        _rewrite_ids(span, (*_IDS, "parentSpanId", "parent_span_id"))
        for link in _children(span, ("links", "links")):
            _rewrite_ids(link, _IDS)


def _hex_log_ids_to_base64(document: dict[str, Any]) -> None:
    """The same for an ExportLogsServiceRequest's log records."""
    levels = (("resourceLogs", "resource_logs"), ("scopeLogs", "scope_logs"), ("logRecords", "log_records"))
    for record in _children(document, *levels):
        _rewrite_ids(record, _IDS)


def _rewrite_ids(node: dict[str, Any], names: tuple[str, ...]) -> None:
    for name in names:
        value = node.get(name)
        if value is None:
            continue
        try:
            raw = bytes.fromhex(value) if isinstance(value, str) else b""
        except ValueError:
            raw = b""
        node[name] = base64.b64encode(raw).decode()


# --- responses --------------------------------------------------------------------------------
@dataclass(slots=True)
class Encoded:
    body: bytes
    media_type: str


def _encode(message: Message, encoding: str) -> Encoded:
    if encoding == PROTOBUF:
        return Encoded(message.SerializeToString(), PROTOBUF)
    return Encoded(orjson.dumps(json_format.MessageToDict(message)), JSON)


def export_response(rejected: int, error_message: str, encoding: str) -> Encoded:
    response = ExportTraceServiceResponse()
    if rejected or error_message:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = error_message
    return _encode(response, encoding)


def logs_response(rejected: int, error_message: str, encoding: str) -> Encoded:
    response = ExportLogsServiceResponse()
    if rejected or error_message:
        response.partial_success.rejected_log_records = rejected
        response.partial_success.error_message = error_message
    return _encode(response, encoding)


def status_body(http_status: int, message: str, encoding: str, *, retry_after: int | None = None) -> Encoded:
    """A google.rpc.Status, as the OTLP/HTTP specification asks of every 4xx/5xx answer; a RetryInfo
    detail repeats Retry-After for clients that read it there."""
    status = status_pb2.Status(code=GRPC_CODES.get(http_status, code_pb2.UNKNOWN), message=message)
    if retry_after is not None:
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=Duration(seconds=retry_after)))
    return _encode(status, encoding)
