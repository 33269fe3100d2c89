"""Scalars: DateTime as UTC ISO 8601 with `Z`; JSON for free-form objects."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Any, cast

from strawberry.types.scalar import scalar

from app.db import iso
from app.errors import BadUserInput

if TYPE_CHECKING:
    JSON = Any  # any JSON value; Strawberry's NewType of `object` would refuse the dicts and lists we give it
else:
    from strawberry.scalars import JSON


def _parse_datetime(value: object) -> datetime:
    if not isinstance(value, str):
        raise BadUserInput("DateTime must be an ISO 8601 string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        raise BadUserInput(f"not an ISO 8601 date-time: {value[:64]!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)  # a time without offset is taken as UTC
    return parsed.astimezone(UTC)


DateTime = scalar(
    name="DateTime",
    description="Date and time in UTC, ISO 8601 with `Z` (e.g. 2026-11-23T18:00:00.000Z).",
    # the GraphQL Scalars date-time specification (RFC 3339 with an offset; ours is always `Z`)
    specified_by_url="https://scalars.graphql.org/andimarek/date-time",
    serialize=iso,
    parse_value=_parse_datetime,
)


def stored(member: Enum) -> str:
    """The stored spelling of a GraphQL enum member (its value); members declared with `strawberry.enum_value`
    (to carry a description) are typed as value definitions, though their value is the string."""
    return cast(str, member.value)


__all__ = ["JSON", "DateTime", "stored"]
