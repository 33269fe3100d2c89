"""GraphQL over HTTP (the GraphQL-over-HTTP specification): which media type answers a request, and with which
status a response that carries a request error goes out.

- `Accept` is negotiated: `application/graphql-response+json` when the client asks for it (by quality, then by
  order), `application/json` for `application/json`, `application/*`, `*/*` or no `Accept` at all; anything else
  is 406. With `application/graphql-response+json`, a request error (the document does not parse or validate,
  the variables do not coerce, a limit refused it before execution) is a 4xx; with `application/json` it is 200,
  as legacy clients expect.
- A request error carries no `data` entry (execution never began), whichever the media type.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
JSON = "application/json"

# a request error's status under application/graphql-response+json, by the first error's code (else 400)
REQUEST_ERROR_STATUS = {
    "UNAUTHENTICATED": 401,
    "QUOTA_EXCEEDED": 402,
    "FORBIDDEN": 403,
    "RATE_LIMITED": 429,
    "UNAVAILABLE": 503,
}


def negotiate(accept: str | None, *, streaming: tuple[str, ...] = ()) -> str | None:
    """The media type to answer with, or None when nothing the client accepts can be served (406).
    `streaming` are media types a subscription transport serves (they are answered by that transport)."""
    if accept is None or not accept.strip():
        return JSON
    ranges: list[tuple[float, int, str]] = []
    for index, part in enumerate(accept.split(",")):
        media, *params = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = 0.0
        if media and quality > 0:
            ranges.append((-quality, index, media.lower()))
    for _quality, _index, media in sorted(ranges):
        if media == GRAPHQL_RESPONSE_JSON:
            return GRAPHQL_RESPONSE_JSON
        if media in (JSON, "application/*", "*/*"):
            return JSON
        if media in streaming:
            return media
    return None


def is_request_error(response: Mapping[str, Any]) -> bool:
    """Errors and no data: refused before execution (a field error inside execution always has a path)."""
    errors = response.get("errors")
    if not errors or response.get("data") is not None:
        return False
    return all(isinstance(error, Mapping) and not error.get("path") for error in errors)


def request_error_status(response: Mapping[str, Any]) -> int:
    first = (response.get("errors") or [{}])[0]
    code = (first.get("extensions") or {}).get("code") if isinstance(first, Mapping) else None
    return REQUEST_ERROR_STATUS.get(code or "", 400)
