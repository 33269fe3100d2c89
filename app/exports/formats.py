"""Export formats: CSV rows (quoted, formula-injection guarded) and the JSON envelope, produced as chunks."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from typing import Any

import orjson

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
ROWS_PER_CHUNK = 500


def csv_cell(value: Any) -> str:
    """A value as a CSV cell. Text that a spreadsheet would run as a formula gets a leading apostrophe."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = orjson.dumps(value).decode() if isinstance(value, dict | list) else str(value)
    if text.startswith(FORMULA_PREFIXES):
        text = "'" + text
    return text


async def csv_stream(header: Sequence[str], rows: AsyncIterable[Sequence[Any]]) -> AsyncIterator[bytes]:
    """The header, then the rows in chunks; RFC 4180 quoting (commas, quotes, newlines), UTF-8."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    count = 0
    async for row in rows:
        writer.writerow([csv_cell(v) for v in row])
        count += 1
        if count % ROWS_PER_CHUNK == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


async def json_envelope_stream(
    kind: str, metadata: dict[str, Any], records: AsyncIterable[dict[str, Any]]
) -> AsyncIterator[bytes]:
    """`{apiVersion, kind, metadata, records: [...]}`, written record by record."""
    head = orjson.dumps({"apiVersion": "agentrail/v1", "kind": kind, "metadata": metadata})
    yield head[:-1] + b',"records":['
    first = True
    async for record in records:
        yield (b"" if first else b",") + orjson.dumps(record)
        first = False
    yield b"]}"


async def from_iterable(items: Iterable[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item
