"""Checks of user-supplied values that several domains share, each ending in a clear BAD_USER_INPUT."""

from __future__ import annotations

import json
from typing import Any

from app.db import json_value_problem
from app.errors import BadUserInput


def check_json_object(value: Any, *, field: str, max_bytes: int) -> dict[str, Any]:
    """A JSON object of at most `max_bytes` as compact UTF-8 JSON, that PostgreSQL's jsonb can store: plain
    JSON (no NaN or Infinity) and no NUL characters."""
    if not isinstance(value, dict):
        raise BadUserInput(f"{field} must be a JSON object", field=field)
    try:
        serialised = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        raise BadUserInput(f"{field} must be plain JSON (no NaN or Infinity)", field=field) from None
    if len(serialised.encode()) > max_bytes:
        raise BadUserInput(f"{field} must be at most {max_bytes} bytes as JSON", field=field)
    problem = json_value_problem(value)  # NUL (jsonb refuses it), numbers jsonb would not give back the same
    if problem is not None:
        raise BadUserInput(f"{field} {problem}", field=field)
    return value
