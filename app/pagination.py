"""Relay-style cursor connections: `edges { cursor node }`, `pageInfo { hasNextPage endCursor }`.

Cursors are opaque base64 of the sort key of the last row (e.g. [occurredAt, id]), so a page is
`WHERE (sort, id) < (cursor)` over an index: stable while new rows arrive, no OFFSET scans.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar

import orjson
import strawberry

from app.errors import BadUserInput


def selects_any(selections: Any, names: frozenset[str]) -> bool:
    """True if any field named in `names` appears anywhere in a selection (`info.selected_fields`, fragments
    included). Errs on the side of yes: a field of that name on any type counts."""
    for selection in selections:
        if getattr(selection, "name", None) in names:
            return True
        if selects_any(getattr(selection, "selections", None) or (), names):
            return True
    return False


TOTAL_COUNT = frozenset({"totalCount"})

MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 50

NodeType = TypeVar("NodeType")


@strawberry.type(description="Where a page starts and ends, and whether more pages follow or precede it (Relay).")
class PageInfo:
    has_next_page: bool = strawberry.field(description="True when another page follows this one.")
    end_cursor: str | None = strawberry.field(description="Pass as `after` to fetch the next page.")
    has_previous_page: bool = strawberry.field(default=False, description="True when another page precedes this one.")
    start_cursor: str | None = strawberry.field(
        default=None, description="Pass as `before` to fetch the previous page."
    )


@strawberry.type(description="A node and the cursor that points at it.")
class Edge(Generic[NodeType]):
    cursor: str = strawberry.field(description="Opaque position of this node in the list.")
    node: NodeType = strawberry.field(description="The item.")


@strawberry.type(description="A page of a list.")
class Connection(Generic[NodeType]):
    edges: list[Edge[NodeType]] = strawberry.field(description="The items of this page, with their cursors.")
    page_info: PageInfo = strawberry.field(description="Pagination state.")
    total_count: int | None = strawberry.field(
        default=None, description="How many items match in all, where that is cheap to know."
    )


def page_size(first: int | None) -> int:
    if first is None:
        return DEFAULT_PAGE_SIZE
    if first < 1 or first > MAX_PAGE_SIZE:
        raise BadUserInput(f"first must be between 1 and {MAX_PAGE_SIZE}", field="first")
    return first


def encode_cursor(values: Sequence[Any]) -> str:
    plain = [v.isoformat() if isinstance(v, datetime) else v for v in values]
    return base64.urlsafe_b64encode(orjson.dumps(plain)).decode().rstrip("=")


def decode_cursor(cursor: str | None, types: Sequence[type]) -> list[Any] | None:
    """Decodes a cursor made by `encode_cursor`; BAD_USER_INPUT for anything else."""
    if cursor is None:
        return None
    try:
        raw = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(raw, list) or len(raw) != len(types):
            raise ValueError
        return [datetime.fromisoformat(v) if t is datetime else t(v) for v, t in zip(raw, types, strict=True)]
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise BadUserInput("after is not a valid cursor", field="after") from None


def build_connection(
    rows: Sequence[Any],
    *,
    limit: int,
    to_node: Callable[[Any], Any],
    sort_key: Callable[[Any], Sequence[Any]],
    total_count: int | None = None,
) -> Connection[Any]:
    """`rows` must hold up to `limit + 1` rows: the extra one only tells that a next page exists."""
    has_next = len(rows) > limit
    page = rows[:limit]
    edges = [Edge(cursor=encode_cursor(sort_key(row)), node=to_node(row)) for row in page]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=has_next,
            end_cursor=edges[-1].cursor if edges else None,
            start_cursor=edges[0].cursor if edges else None,
        ),
        total_count=total_count,
    )
