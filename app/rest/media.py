"""Media types of request bodies, read one way for every path (GraphQL, REST, OTLP): the type without its
parameters, lower-cased, since media types are case-insensitive (RFC 9110 8.3.1)."""

from __future__ import annotations


def media_type(content_type: str | None) -> str:
    """`APPLICATION/JSON; charset=utf-8` -> `application/json`; '' when there is none."""
    return (content_type or "").partition(";")[0].strip().lower()


def lowered(content_type: str | None) -> str | None:
    """The header with its media type lower-cased and its parameters as sent (strawberry compares the type
    case-sensitively)."""
    if not content_type:
        return content_type
    _, sep, parameters = content_type.partition(";")
    return media_type(content_type) + sep + parameters


def is_json(content_type: str | None) -> bool:
    """A JSON body: `application/json` or a `+json` type; no Content-Type at all counts as JSON."""
    media = media_type(content_type)
    return not media or media == "application/json" or media.endswith("+json")
