"""Query parameters of the REST routes, declared once per endpoint and checked for every route in one place.

An endpoint says what it accepts with `@accepts(...)`; the route guard (`app.api.permissions.guard_routes`)
parses the query string before the endpoint runs and puts the typed values on `request.state.query`
(`query_of(request)`). What the declaration does not name is refused, never ignored: an unknown parameter, an
enum value outside its set, a malformed time or boolean, or a single-valued parameter given twice is 400
BAD_USER_INPUT naming what is accepted. A route without a declaration accepts no query parameter at all.

Enum values match case-insensitively and come out in the spelling the database stores (`status=ERROR`, `error`
and `Error` are the same filter); lists are repeated parameters or comma-separated.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from starlette.requests import Request

from app.errors import BadUserInput

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


@dataclass(frozen=True)
class Param:
    name: str
    accepted: str  # what the answer to a bad value says is accepted
    convert: Callable[[str, str], Any]  # (name, one raw value) -> value; raises BadUserInput
    many: bool = False  # repeated or comma-separated; the value is a list
    default: Any = None
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})  # for the OpenAPI document


def _refuse(name: str, value: str, accepted: str) -> BadUserInput:
    shown = value if len(value) <= 64 else value[:64] + "…"
    return BadUserInput(f"{name}={shown!r} is not accepted: {name} takes {accepted}", field=name, accepted=accepted)


def text(name: str, *, many: bool = False, max_length: int = 1000) -> Param:
    def convert(param: str, value: str) -> str:
        if len(value) > max_length:
            raise _refuse(param, value, f"a string of at most {max_length} characters")
        return value

    return Param(
        name,
        f"a string of at most {max_length} characters",
        convert,
        many,
        schema={"type": "string", "maxLength": max_length},
    )


def choice(name: str, values: Mapping[str, str], *, many: bool = False, default: str | None = None) -> Param:
    """One of `values` ({public spelling: stored value}), matched case-insensitively."""
    by_lower = {public.lower(): stored for public, stored in values.items()}
    by_lower.update({stored.lower(): stored for stored in values.values()})
    listed = ", ".join(values)
    accepted = f"any of {listed} (any case, comma-separated)" if many else f"one of {listed} (any case)"

    def convert(param: str, value: str) -> str:
        stored = by_lower.get(value.strip().lower())
        if stored is None:
            raise _refuse(param, value, accepted)
        return stored

    schema: dict[str, Any] = {"type": "string"} if many else {"type": "string", "enum": list(values)}
    return Param(name, accepted, convert, many, default, schema)


def pattern(name: str, regex: str, description: str, *, many: bool = False) -> Param:
    """An open vocabulary stored lower-case (e.g. governance decisions): matched case-insensitively."""
    compiled = re.compile(regex)
    accepted = description + (" (any case, comma-separated)" if many else " (any case)")

    def convert(param: str, value: str) -> str:
        lowered = value.strip().lower()
        if not compiled.fullmatch(lowered):
            raise _refuse(param, value, accepted)
        return lowered

    return Param(name, accepted, convert, many)


def timestamp(name: str, *, through_day: bool = False) -> Param:
    """`through_day`: an end bound, where a date alone (2025-12-31) means until the end of that day."""
    accepted = "an ISO 8601 date or date-time (UTC when it has no offset), e.g. 2026-01-31T12:00:00Z"

    def convert(param: str, value: str) -> datetime:
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise _refuse(param, value, accepted) from None
        if through_day and len(text) == 10:
            parsed += timedelta(days=1)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

    return Param(name, accepted, convert, schema={"type": "string", "format": "date-time"})


def refused(name: str, why: str) -> Param:
    """A parameter a document names for something Agentrail does not have: given at all, it is a 400 that says
    so (never silently ignored)."""

    def convert(param: str, value: str) -> Any:
        raise BadUserInput(f"{param} is not supported: {why}", field=param)

    return Param(name, f"nothing: {why}", convert, schema={"type": "string", "maxLength": 0, "description": why})


def boolean(name: str) -> Param:
    accepted = "true or false"

    def convert(param: str, value: str) -> bool:
        lowered = value.strip().lower()
        if lowered not in ("true", "false"):
            raise _refuse(param, value, accepted)
        return lowered == "true"

    return Param(name, accepted, convert, schema={"type": "string", "enum": ["true", "false"]})


def integer(name: str, *, minimum: int, maximum: int, default: int | None = None) -> Param:
    accepted = f"an integer from {minimum} to {maximum}"

    def convert(param: str, value: str) -> int:
        stripped = value.strip()
        if not stripped.lstrip("-").isdigit() or len(stripped) > 20 or not minimum <= int(stripped) <= maximum:
            raise _refuse(param, value, accepted)
        return int(stripped)

    return Param(
        name, accepted, convert, default=default, schema={"type": "integer", "minimum": minimum, "maximum": maximum}
    )


@dataclass(frozen=True)
class QueryParameters:
    params: tuple[Param, ...] = ()

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def parse(self, query: Any) -> dict[str, Any]:
        """`query`: Starlette's QueryParams (a multi-dict)."""
        declared = {p.name: p for p in self.params}
        unknown = sorted({key for key in query if key not in declared})
        if unknown:
            names = ", ".join(unknown)
            accepted = ", ".join(self.names) if self.params else "no query parameters"
            raise BadUserInput(
                f"unknown query parameter{'s' if len(unknown) > 1 else ''} {names}: this route accepts {accepted}",
                field=unknown[0],
                accepted=self.names,
            )
        values: dict[str, Any] = {}
        for param in self.params:
            raw: Sequence[str] = query.getlist(param.name)
            if any("\x00" in value for value in raw):  # PostgreSQL stores no NUL: no filter can hold one
                raise BadUserInput(f"{param.name} must not contain NUL characters", field=param.name)
            if not raw:
                values[param.name] = param.default
                continue
            if param.many:
                items = [item.strip() for value in raw for item in value.split(",") if item.strip()]
                values[param.name] = [param.convert(param.name, item) for item in items] or None
                continue
            if len(raw) > 1:
                raise BadUserInput(f"{param.name} may be given once", field=param.name)
            values[param.name] = param.convert(param.name, raw[0])
        return values


NO_PARAMETERS = QueryParameters()


def accepts(*params: Param) -> Callable[[Endpoint], Endpoint]:
    """Declares an endpoint's query parameters (checked by the route guard before it runs)."""

    def declare(endpoint: Endpoint) -> Endpoint:
        endpoint.query_parameters = QueryParameters(params)  # type: ignore[attr-defined]
        return endpoint

    return declare


def declared_parameters(endpoint: Any) -> QueryParameters:
    return getattr(endpoint, "query_parameters", NO_PARAMETERS)


def query_of(request: Request) -> dict[str, Any]:
    """The route's parsed query parameters (set by the route guard)."""
    parsed: dict[str, Any] | None = getattr(request.state, "query", None)
    if parsed is None:
        raise RuntimeError("the route was not built by app.api.permissions.guard_routes")
    return parsed
