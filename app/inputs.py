"""Checks of user-supplied values that several domains share, each ending in a clear BAD_USER_INPUT."""

from __future__ import annotations

import json
from typing import Any

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
    if _contains_nul(value):
        raise BadUserInput(f"{field} must not contain NUL characters", field=field)  # jsonb refuses them
    return value


def _contains_nul(value: Any) -> bool:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False
