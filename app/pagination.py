"""Relay cursor connections: `edges { cursor node }`, `pageInfo { hasNextPage hasPreviousPage startCursor
endCursor }`, `first`/`after` and `last`/`before` on every connection.

Cursors are opaque base64 of a row's sort key (e.g. [occurredAt, id]), so a page is `WHERE (sort, id) < (after)
AND (sort, id) > (before)` over an index, in list order for `first` and in reverse for `last` (then turned
around): stable while new rows arrive, no OFFSET scans. `hasNextPage` (with `first`) and `hasPreviousPage`
(with `last`) come from one extra row; the other direction is `true` when the page was bounded by a cursor on
that side (the row at the cursor precedes or follows it), as the Relay specification allows.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

import orjson
import sqlalchemy as sa
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


First = Annotated[int | None, strawberry.argument(description="Page size from the start (after `after`), at most 500.")]
After = Annotated[str | None, strawberry.argument(description="Cursor of the previous page's last item.")]
Last = Annotated[int | None, strawberry.argument(description="Page size from the end (before `before`), at most 500.")]
Before = Annotated[str | None, strawberry.argument(description="Cursor of the next page's first item.")]


def page_size(first: int | None, name: str = "first") -> int:
    if first is None:
        return DEFAULT_PAGE_SIZE
    if first < 1 or first > MAX_PAGE_SIZE:
        raise BadUserInput(f"{name} must be between 1 and {MAX_PAGE_SIZE}", field=name)
    return first


@dataclass(frozen=True)
class PageRequest:
    """One page of a list: `size` rows after `after` / before `before` (sort-key positions), from the start of
    that range, or from its end when `backward` (`last`)."""

    size: int
    after: tuple[Any, ...] | None = None
    before: tuple[Any, ...] | None = None
    backward: bool = False

    def positions(self, convert: Callable[[tuple[Any, ...]], tuple[Any, ...]]) -> PageRequest:
        """The same page with its cursor positions converted (e.g. an alert id to its sequence number)."""
        return PageRequest(
            self.size,
            convert(self.after) if self.after is not None else None,
            convert(self.before) if self.before is not None else None,
            self.backward,
        )

    def apply(self, stmt: Any, *columns: Any, descending: bool = True) -> Any:
        """`stmt` restricted to the page's range, ordered and limited (one extra row): the one keyset query of
        every connection. `columns` are the sort key, in list order (`descending`: newest first)."""
        key = sa.tuple_(*columns)
        if self.after is not None:
            after = sa.tuple_(*self.after)
            stmt = stmt.where(key < after if descending else key > after)
        if self.before is not None:
            before = sa.tuple_(*self.before)
            stmt = stmt.where(key > before if descending else key < before)
        newest_first = descending != self.backward
        return stmt.order_by(*(c.desc() if newest_first else c.asc() for c in columns)).limit(self.size + 1)


def page_request(
    first: int | None,
    after: str | None,
    last: int | None = None,
    before: str | None = None,
    *,
    types: Sequence[type],
) -> PageRequest:
    """The page the arguments ask for; BAD_USER_INPUT for sizes out of range, bad cursors, or `first` with
    `last`."""
    if first is not None and last is not None:
        raise BadUserInput("first and last cannot be combined: page forward with first/after, back with last/before")
    after_position = decode_cursor(after, types)
    before_position = decode_cursor(before, types, name="before")
    return PageRequest(
        size=page_size(last, "last") if last is not None else page_size(first),
        after=tuple(after_position) if after_position is not None else None,
        before=tuple(before_position) if before_position is not None else None,
        backward=last is not None,
    )


def encode_cursor(values: Sequence[Any]) -> str:
    plain = [v.isoformat() if isinstance(v, datetime) else v for v in values]
    return base64.urlsafe_b64encode(orjson.dumps(plain)).decode().rstrip("=")


def decode_cursor(cursor: str | None, types: Sequence[type], name: str = "after") -> list[Any] | None:
    """Decodes a cursor made by `encode_cursor`; BAD_USER_INPUT for anything else."""
    if cursor is None:
        return None
    try:
        raw = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(raw, list) or len(raw) != len(types):
            raise ValueError
        return [datetime.fromisoformat(v) if t is datetime else t(v) for v, t in zip(raw, types, strict=True)]
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise BadUserInput(f"{name} is not a valid cursor", field=name) from None


def build_connection(
    rows: Sequence[Any],
    *,
    page: PageRequest,
    to_node: Callable[[Any], Any],
    sort_key: Callable[[Any], Sequence[Any]],
    total_count: int | None = None,
) -> Connection[Any]:
    """`rows` as `page.apply` returned them: up to `page.size + 1`, the extra one only telling that more follow
    (precede, when backward); backward rows come nearest-the-end first and are put back in list order."""
    more = len(rows) > page.size
    kept = list(rows[: page.size])
    if page.backward:
        kept.reverse()
    edges = [Edge(cursor=encode_cursor(sort_key(row)), node=to_node(row)) for row in kept]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=page.before is not None if page.backward else more,
            has_previous_page=more if page.backward else page.after is not None,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
        total_count=total_count,
    )


def cursor_page(size: int, cursor: str | None, types: Sequence[type], *, name: str = "cursor") -> PageRequest:
    """A REST page: `size` rows after `cursor` (a `nextCursor` this list gave); BAD_USER_INPUT for a bad one."""
    position = decode_cursor(cursor, types, name=name)
    return PageRequest(size, after=tuple(position) if position is not None else None)


def next_page(
    rows: Sequence[Any], page: PageRequest, sort_key: Callable[[Any], Sequence[Any]]
) -> tuple[list[Any], str | None]:
    """The page's rows (`page.apply` fetched one extra) and the cursor of the next page, None on the last."""
    kept = list(rows[: page.size])
    return kept, encode_cursor(sort_key(kept[-1])) if len(rows) > page.size and kept else None
