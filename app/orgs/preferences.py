"""The shape of `notificationPreferences` that the service reads (the rest stays free-form)."""

from __future__ import annotations

from typing import Any

SEVERITIES = ("LOW", "MEDIUM", "HIGH", "CRITICAL")


def check_preferences(raw: Any) -> str | None:
    """Why `alertEmails` is malformed (for updateProfile), None when it is fine or absent."""
    if not isinstance(raw, dict) or "alertEmails" not in raw:
        return None
    value = raw["alertEmails"]
    if not isinstance(value, dict):
        return "alertEmails must be an object"
    unknown = set(value) - {"enabled", "severities", "digestMinutes"}
    if unknown:
        return f"alertEmails: unknown field(s) {', '.join(sorted(unknown))}"
    if "enabled" in value and not isinstance(value["enabled"], bool):
        return "alertEmails.enabled must be true or false"
    severities = value.get("severities", [])
    if not isinstance(severities, list) or any(
        not isinstance(s, str) or s.upper() not in SEVERITIES for s in severities
    ):
        return "alertEmails.severities must be a list of LOW, MEDIUM, HIGH, CRITICAL"
    minutes = value.get("digestMinutes", 0)
    if not isinstance(minutes, int) or isinstance(minutes, bool) or not 0 <= minutes <= 1440:
        return "alertEmails.digestMinutes must be an integer from 0 (immediate) to 1440"
    return None
