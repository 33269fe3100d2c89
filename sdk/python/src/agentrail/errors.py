"""Errors the reading helpers raise (logging never raises for network or server trouble)."""

from __future__ import annotations

from typing import Any


class AgentrailError(Exception):
    """A request the client could not complete: `status` (HTTP) and `code` (the API's error code) when known."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code = status, code


class GraphQLError(AgentrailError):
    """The GraphQL answer carried errors: `errors` as sent, `code` the first one's `extensions.code`."""

    def __init__(self, errors: list[dict[str, Any]], data: Any = None) -> None:
        first = errors[0] if errors else {}
        code = (first.get("extensions") or {}).get("code")
        super().__init__(str(first.get("message", "GraphQL error")), code=code)
        self.errors, self.data = errors, data
