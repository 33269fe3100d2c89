"""Rows of a query as PostgreSQL writes them with `COPY … TO STDOUT`, for exports of millions of rows.

A query whose every row is one finished line of text (a CSV row, a JSON record, built by PostgreSQL) is
streamed with COPY instead of a cursor: PostgreSQL sends the lines without per-row protocol overhead (half
the server's CPU of a FETCH loop) and this process never decodes a row, it only passes text through.

The statement runs on the session's own connection, inside its transaction (an export reads its count and
its rows in one snapshot), scoped to the session's organisation by the same criteria as every ORM
statement (`app.db.tenant_scoped`). COPY's text format escapes backslashes and control characters in the
data, so a raw newline only ever ends a row: `CopyTextLines` splits the stream into whole rows, gives them
the line ending the caller wants, and undoes the escapes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from app.db import SYSTEM, AsyncSession, TenancyError, is_raw_sql, session_org, tenant_scoped

ISO_MS = 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'  # the same text as app.db.iso: UTC, milliseconds, `Z`


# --- rows as text, built by PostgreSQL ---------------------------------------------------------------
def iso_text(column: Any) -> Any:
    """A timestamp as the API writes it (`app.db.iso`)."""
    return sa.func.to_char(sa.func.timezone("UTC", column), ISO_MS)


@dataclass(frozen=True)
class JsonText:
    """A value that is JSON text already (a nested `json_object_text`): put in as it is, not quoted."""

    expression: Any


def json_object_text(fields: Sequence[tuple[str, Any]]) -> Any:
    """`{"name":value,…}` as one compact JSON text, keys in the given order: each value `null` or as
    PostgreSQL writes it in JSON (escaped text, exact numbers, jsonb as stored: `{"k": [1, 2]}`)."""
    parts: list[Any] = []
    for n, (name, value) in enumerate(fields):
        parts.append(sa.literal(("{" if n == 0 else ",") + f'"{name}":', sa.Text))
        text = value.expression if isinstance(value, JsonText) else sa.cast(sa.func.to_json(value), sa.Text)
        parts.append(sa.func.coalesce(text, "null"))
    parts.append(sa.literal("}", sa.Text))
    return sa.func.concat(*parts)


# --- COPY --------------------------------------------------------------------------------------------

# COPY's text format escapes, in the order that undoes them: the escaped backslash first (to a byte that
# PostgreSQL text never holds), then the control characters, then the backslash back
_PLACEHOLDER = b"\x00"
_UNESCAPES = (
    (b"\\n", b"\n"),
    (b"\\r", b"\r"),
    (b"\\t", b"\t"),
    (b"\\b", b"\b"),
    (b"\\f", b"\f"),
    (b"\\v", b"\v"),
)


def unescape_copy_text(data: bytes) -> bytes:
    if b"\\" not in data:
        return data
    data = data.replace(b"\\\\", _PLACEHOLDER)
    for escaped, raw in _UNESCAPES:
        data = data.replace(escaped, raw)
    return data.replace(_PLACEHOLDER, b"\\")


class CopyTextLines:
    """COPY text output of one text column → whole lines with `line_end`, however the stream was cut."""

    def __init__(self, line_end: bytes = b"\n") -> None:
        self.line_end = line_end
        self._partial = b""

    def feed(self, data: bytes) -> tuple[int, bytes]:
        """(rows, their text) for the rows completed by `data`; the unfinished rest waits for the next."""
        data = self._partial + data
        end = data.rfind(b"\n") + 1
        whole, self._partial = data[:end], data[end:]
        rows = whole.count(b"\n")
        if self.line_end != b"\n":
            whole = whole.replace(b"\n", self.line_end)  # the data's own newlines are still escaped here
        return rows, unescape_copy_text(whole)

    def close(self) -> None:
        if self._partial:
            raise ValueError("COPY output ended inside a row")


async def copy_lines(
    session: AsyncSession, statement: Any, *, line_end: bytes = b"\n", depth: int = 4
) -> AsyncGenerator[tuple[int, bytes], None]:
    """(rows, text) pieces of the rows of `statement` (one text column, never NULL), each row ending with
    `line_end`. PostgreSQL runs ahead of the consumer by at most `depth` pieces."""
    org_id = session_org(session)
    if org_id is None:
        raise TenancyError("COPY from a session without a declared organisation scope")
    if org_id != SYSTEM:
        if is_raw_sql(statement):  # runs on the driver's connection, past every check of raw SQL
            raise TenancyError("COPY of raw SQL from a tenant session")
        statement = tenant_scoped(statement, org_id)
    connection = await session.connection()
    compiled = statement.compile(dialect=connection.dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.construct_params()
    args = [params[name] for name in compiled.positiontup or ()]
    driver = (await connection.get_raw_connection()).driver_connection
    assert driver is not None  # asyncpg's connection: a checked-out connection has one
    queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(maxsize=depth)

    async def produce() -> None:
        try:
            await driver.copy_from_query(compiled.string, *args, output=queue.put)
        except Exception as exc:
            await queue.put(exc)
            return
        await queue.put(None)

    lines = CopyTextLines(line_end)
    producer = asyncio.create_task(produce())
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            rows, text = lines.feed(item)
            if rows:
                yield rows, text
        lines.close()
    finally:
        if not producer.done():
            # stopped mid-COPY (cancelled, or the consumer gave up): the server is still sending, and the
            # connection cannot run anything else (not even the rollback) until it stops. Closing it is
            # the one sure way: the pool replaces it.
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer
            await connection.invalidate()
