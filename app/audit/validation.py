"""Checking incoming audit records (GraphQL and REST alike) before anything is written.

A batch is checked whole: every problem is reported with the record's index and the field, and one bad
record rejects the batch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from app.db import json_value_problem
from app.errors import BadUserInput, PayloadTooLarge

MAX_ACTION_LENGTH = 128
MAX_TEXT_BYTES = 1024 * 1024  # prompt, response
MAX_JSON_BYTES = 256 * 1024  # metadata, args, result (serialised)
MAX_DEPTH = 32
MAX_SHORT = 255  # executionId, verb, provider, tenantId, idempotencyKey
MAX_FUTURE = timedelta(hours=1)
# earliest occurredAt accepted: older is a client bug (0001-01-01 is stored as -infinity), not an event
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
STATUSES = ("ok", "error", "blocked")
RISK_LEVELS = ("LOW", "MEDIUM", "HIGH", "CRITICAL")
GOVERNANCE_STATUS = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
SPAN_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")

FIELDS = {
    "action",
    "prompt",
    "response",
    "agentId",
    "traceId",
    "spanId",
    "parentSpanId",
    "metadata",
    "occurredAt",
    "durationMs",
    "status",
    "idempotencyKey",
    "executionId",
    "verb",
    "provider",
    "riskLevel",
    "governanceStatus",
    "dryRun",
    "idempotent",
    "args",
    "result",
    "tenantId",
}


@dataclass(slots=True)
class AuditLogDraft:
    """A checked record, not yet masked, numbered or written. Names are the columns'."""

    action: str
    prompt: str | None = None
    response: str | None = None
    agent_id: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    parent_span_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    occurred_at: datetime | None = None
    duration_ms: float | None = None
    status: str = "ok"
    idempotency_key: str | None = None
    execution_id: str | None = None
    verb: str | None = None
    provider: str | None = None
    risk_level: str | None = None
    governance_status: str | None = None
    dry_run: bool | None = None
    idempotent: bool | None = None
    args: Any = None
    result: Any = None
    tenant_id: str | None = None


class _Problems:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, index: int | None, field_name: str, message: str) -> None:
        self.items.append({"index": index, "field": field_name, "message": message})


def _depth(value: Any, limit: int) -> bool:
    """True when `value` nests deeper than `limit` (iterative: hostile input cannot blow the stack)."""
    if not isinstance(value, dict | list):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        values = item.values() if isinstance(item, dict) else item
        # only containers go on the stack: strings and numbers cannot nest
        stack.extend((v, depth + 1) for v in values if isinstance(v, dict | list))
    return False


def _string(raw: dict[str, Any], key: str, problems: _Problems, index: int | None, *, max_length: int) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        problems.add(index, key, "must be a string")
        return None
    if len(value) > max_length:
        problems.add(index, key, f"must be at most {max_length} characters")
        return None
    if "\x00" in value:
        problems.add(index, key, "must not contain NUL characters")
        return None
    return value


def _json(raw: dict[str, Any], key: str, problems: _Problems, index: int | None, *, object_only: bool) -> Any:
    value = raw.get(key)
    if value is None:
        return None
    if object_only and not isinstance(value, dict):
        problems.add(index, key, "must be a JSON object")
        return None
    if _depth(value, MAX_DEPTH):
        problems.add(index, key, f"nests deeper than {MAX_DEPTH} levels")
        return None
    # what jsonb stores and gives back as the same value: the record verifies for good
    problem = json_value_problem(value)
    if problem is not None:
        problems.add(index, key, problem)
        return None
    try:
        size = len(orjson.dumps(value))
    except (TypeError, orjson.JSONEncodeError):
        problems.add(index, key, "is not JSON-serialisable")
        return None
    if size > MAX_JSON_BYTES:
        problems.add(index, key, f"is {size} bytes serialised; the limit is {MAX_JSON_BYTES}")
        return None
    return value


def _text(raw: dict[str, Any], key: str, problems: _Problems, index: int | None) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        problems.add(index, key, "must be a string")
        return None
    # len() in characters bounds bytes at 4x: check cheaply first, exactly only near the limit
    if len(value) > MAX_TEXT_BYTES // 4 and len(value.encode()) > MAX_TEXT_BYTES:
        problems.add(index, key, f"exceeds {MAX_TEXT_BYTES} bytes")
        return None
    if "\x00" in value:
        problems.add(index, key, "must not contain NUL characters")
        return None
    return value


def _timestamp(raw: dict[str, Any], problems: _Problems, index: int | None, now: datetime) -> datetime | None:
    value = raw.get("occurredAt")
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
        except ValueError:
            problems.add(index, "occurredAt", "must be an ISO 8601 date-time")
            return None
    if not isinstance(value, datetime):
        problems.add(index, "occurredAt", "must be an ISO 8601 date-time")
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if value > now + MAX_FUTURE:
        problems.add(index, "occurredAt", "is more than an hour in the future")
        return None
    if value < EARLIEST:
        problems.add(index, "occurredAt", "is before 2000-01-01")
        return None
    return value.astimezone(UTC)


def _check_one(raw: Any, index: int | None, problems: _Problems, now: datetime) -> AuditLogDraft | None:
    if isinstance(raw, AuditLogDraft):  # checked already
        return raw
    if not isinstance(raw, dict):
        problems.add(index, "", "each record must be a JSON object")
        return None
    before = len(problems.items)
    for unknown in sorted(set(raw) - FIELDS):
        problems.add(index, unknown, "is not a field of an audit record")

    action = raw.get("action")
    if not isinstance(action, str) or not action.strip():
        problems.add(index, "action", "is required (1–128 characters)")
    elif len(action) > MAX_ACTION_LENGTH:
        problems.add(index, "action", f"must be at most {MAX_ACTION_LENGTH} characters")
    elif "\x00" in action:
        problems.add(index, "action", "must not contain NUL characters")

    ids = {}
    for key in ("traceId", "spanId", "parentSpanId"):
        value = raw.get(key)
        if value is not None and (not isinstance(value, str) or not SPAN_ID.match(value)):
            problems.add(index, key, "must be 1–64 characters of letters, digits, _ - . :")
        ids[key] = value

    agent_id = _string(raw, "agentId", problems, index, max_length=40)

    duration = raw.get("durationMs")
    valid_number = isinstance(duration, int | float) and not isinstance(duration, bool)
    if duration is not None and (not valid_number or not 0 <= duration < 10**12):
        problems.add(index, "durationMs", "must be a non-negative number of milliseconds")
        duration = None

    status = raw.get("status", "ok") or "ok"
    if isinstance(status, str):
        status = status.lower()
    if status not in STATUSES:
        problems.add(index, "status", f"must be one of {', '.join(STATUSES)}")

    risk = raw.get("riskLevel")
    if isinstance(risk, str):
        risk = risk.upper()
    if risk is not None and risk not in RISK_LEVELS:
        problems.add(index, "riskLevel", f"must be one of {', '.join(RISK_LEVELS)}")

    governance = raw.get("governanceStatus")
    if isinstance(governance, str):
        governance = governance.lower()
    if governance is not None and (not isinstance(governance, str) or not GOVERNANCE_STATUS.match(governance)):
        problems.add(index, "governanceStatus", "must be a lower-case word such as approved, blocked, pending")

    flags = {}
    for key in ("dryRun", "idempotent"):
        value = raw.get(key)
        if value is not None and not isinstance(value, bool):
            problems.add(index, key, "must be true or false")
        flags[key] = value

    draft = AuditLogDraft(
        action=action.strip() if isinstance(action, str) else "",
        prompt=_text(raw, "prompt", problems, index),
        response=_text(raw, "response", problems, index),
        agent_id=agent_id,
        trace_id=ids["traceId"],
        span_id=ids["spanId"],
        parent_span_id=ids["parentSpanId"],
        metadata=_json(raw, "metadata", problems, index, object_only=True) or {},
        occurred_at=_timestamp(raw, problems, index, now),
        duration_ms=float(duration) if duration is not None else None,
        status=status,
        idempotency_key=_string(raw, "idempotencyKey", problems, index, max_length=MAX_SHORT),
        execution_id=_string(raw, "executionId", problems, index, max_length=MAX_SHORT),
        verb=_string(raw, "verb", problems, index, max_length=MAX_SHORT),
        provider=_string(raw, "provider", problems, index, max_length=MAX_SHORT),
        risk_level=risk,
        governance_status=governance,
        dry_run=flags["dryRun"],
        idempotent=flags["idempotent"],
        args=_json(raw, "args", problems, index, object_only=False),
        result=_json(raw, "result", problems, index, object_only=False),
        tenant_id=_string(raw, "tenantId", problems, index, max_length=MAX_SHORT),
    )
    return draft if len(problems.items) == before else None


def check_records(raws: list[Any], *, max_batch: int, batch: bool) -> list[AuditLogDraft]:
    """Checks every record; raises BAD_USER_INPUT listing all problems, or returns the drafts."""
    if batch and len(raws) > max_batch:
        raise PayloadTooLarge(f"a batch holds at most {max_batch} records; got {len(raws)}", field="input")
    if batch and not raws:
        raise BadUserInput("a batch needs at least one record", field="input")
    now = datetime.now(UTC)
    problems = _Problems()
    drafts = [_check_one(raw, i if batch else None, problems, now) for i, raw in enumerate(raws)]
    if problems.items:
        first = problems.items[0]
        where = f"record {first['index']}: " if first["index"] is not None else ""
        more = f" (and {len(problems.items) - 1} more problems)" if len(problems.items) > 1 else ""
        raise BadUserInput(f"{where}{first['field'] or 'record'} {first['message']}{more}", problems=problems.items)
    return [d for d in drafts if d is not None]
