"""Turning a `log()` call into the JSON of one audit record, on the caller's thread and cheaply.

The record is serialised at the call (a snapshot: the caller may change its dicts afterwards, and a value that
cannot be serialised is seen at the call, not later in the background). Only records larger than the smallest
server limit take the slow path that checks each field against the limits the server documents (README, "Audit
records and traces"): `action` 1–128 characters, `prompt`/`response` ≤ 1 MB, `metadata`/`args`/`result`
≤ 256 KB serialised, short fields ≤ 255 characters.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import enum
import json
import math
import pathlib
import time
import uuid
from collections.abc import Mapping
from typing import Any, Literal

MAX_ACTION = 128
MAX_TEXT_BYTES = 1024 * 1024  # prompt, response (UTF-8 bytes)
MAX_JSON_BYTES = 256 * 1024  # metadata, args, result (serialised)
MAX_SHORT = 255  # executionId, verb, provider, tenantId, idempotencyKey
TEXT_FIELDS = ("prompt", "response")
JSON_FIELDS = ("metadata", "args", "result")
SHORT_FIELDS = ("executionId", "verb", "provider", "tenantId", "idempotencyKey")
TRUNCATED_KEY = "agentrail.truncated"  # metadata entry naming what was cut, and the original sizes
PREVIEW_CHARS = 8192

Oversize = Literal["truncate", "error"]


class RecordTooLarge(ValueError):
    """Raised by `log()` (with `oversize="error"`) when a field exceeds the server's documented limit."""

    def __init__(self, field: str, size: int, limit: int) -> None:
        super().__init__(f"{field} is {size} bytes; the server's limit is {limit}")
        self.field, self.size, self.limit = field, size, limit


def _default(value: Any) -> Any:
    """What the standard encoder cannot serialise: common types by value, anything else by its repr."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            return value.isoformat() + "Z"
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    dump = getattr(value, "model_dump", None)  # pydantic models
    if callable(dump):
        try:
            return dump(mode="json")
        except Exception:  # noqa: S110 - fall through to the repr
            pass
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, uuid.UUID | decimal.Decimal | pathlib.PurePath):
        return str(value)
    text = repr(value) if not isinstance(value, str | int | float) else str(value)
    return text[:PREVIEW_CHARS]


# the standard library's C encoder; ASCII output is its fastest (non-ASCII goes as \u escapes, which the server reads
# the same)
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=_default, allow_nan=False)
encode = _ENCODER.encode

try:  # an optional accelerator (`pip install "agentrail-sdk[fast]"`): about 10x faster on realistic records
    import orjson as _orjson

    _ORJSON_OPTIONS = _orjson.OPT_NON_STR_KEYS | _orjson.OPT_NAIVE_UTC | _orjson.OPT_UTC_Z
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None  # type: ignore[assignment]


def _finite(value: Any) -> Any:
    """NaN and infinities are not JSON: they become null (the slow path, only after the encoder refused)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def dumps(record: dict[str, Any]) -> bytes:
    if _orjson is not None:
        try:
            return _orjson.dumps(record, default=_default, option=_ORJSON_OPTIONS)
        except (TypeError, _orjson.JSONEncodeError):  # integers beyond 64 bits and the like: the standard way
            pass
    try:
        return encode(record).encode()
    except ValueError:  # out-of-range floats
        return encode(_finite(json.loads(json.dumps(record, default=_default)))).encode()


def _text_bytes(value: str) -> int:
    # characters bound bytes at 4x: exact only near the limit (as the server checks)
    return len(value.encode()) if len(value) > MAX_TEXT_BYTES // 4 else len(value)


def _cut_text(value: str, limit: int) -> str:
    return value.encode()[:limit].decode(errors="ignore")


def fit(record: dict[str, Any], oversize: Oversize) -> tuple[dict[str, Any], dict[str, int]]:
    """The record within the server's limits: fields over them cut (`truncate`, noted in
    `metadata["agentrail.truncated"]` with the original sizes) or refused (`error`). Returns the record and
    {field: original size} of what was cut."""
    cut: dict[str, int] = {}
    out = dict(record)
    action = out.get("action")
    if isinstance(action, str) and len(action) > MAX_ACTION:
        if oversize == "error":
            raise RecordTooLarge("action", len(action), MAX_ACTION)
        out["action"], cut["action"] = action[:MAX_ACTION], len(action)
    for name in SHORT_FIELDS:
        value = out.get(name)
        if isinstance(value, str) and len(value) > MAX_SHORT:
            if oversize == "error":
                raise RecordTooLarge(name, len(value), MAX_SHORT)
            out[name], cut[name] = value[:MAX_SHORT], len(value)
    for name in TEXT_FIELDS:
        value = out.get(name)
        if isinstance(value, str) and _text_bytes(value) > MAX_TEXT_BYTES:
            size = len(value.encode())
            if oversize == "error":
                raise RecordTooLarge(name, size, MAX_TEXT_BYTES)
            out[name], cut[name] = _cut_text(value, MAX_TEXT_BYTES), size
    for name in JSON_FIELDS:
        if out.get(name) is None:
            continue
        text = dumps({"v": out[name]})[5:-1]
        if len(text) > MAX_JSON_BYTES:
            if oversize == "error":
                raise RecordTooLarge(name, len(text), MAX_JSON_BYTES)
            preview = text[:PREVIEW_CHARS].decode(errors="ignore")
            out[name] = {TRUNCATED_KEY: True, "bytes": len(text), "preview": preview}
            cut[name] = len(text)
    if cut:
        metadata = out.get("metadata")
        metadata = dict(metadata) if isinstance(metadata, dict) else {}
        metadata[TRUNCATED_KEY] = cut
        out["metadata"] = metadata
    return out, cut


def iso_utc(ts: float) -> str:
    """`time.time()` as ISO 8601 UTC with microseconds and `Z` (the background thread formats it)."""
    whole = int(ts)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((ts - whole) * 1e6):06d}Z"


def iso_value(value: dt.datetime | str) -> str:
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def parse_ids(body: Any) -> list[str | None] | None:
    """The ids the batch endpoint answered, in input order. Accepts the current answer
    (`{"records": [{"id": …}, …], "count": n}`) and a plain array of ids (or of records)."""
    items: Any = body.get("records", body.get("ids")) if isinstance(body, dict) else body
    if not isinstance(items, list):
        return None
    ids: list[str | None] = []
    for item in items:
        if isinstance(item, str):
            ids.append(item)
        elif isinstance(item, dict):
            value = item.get("id")
            ids.append(value if isinstance(value, str) else None)
        else:
            ids.append(None)
    return ids
