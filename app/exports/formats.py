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


# --- the file formats of export jobs -------------------------------------------------------------------
# format -> (file extension, Content-Type)
FILE_TYPES = {
    "CSV": ("csv", "text/csv; charset=utf-8"),
    "JSON": ("json", "application/json"),
    "NDJSON": ("ndjson", "application/x-ndjson"),
    "PARQUET": ("parquet", "application/vnd.apache.parquet"),
}


def csv_header(header: Sequence[str]) -> bytes:
    return csv_lines([list(header)], guard=False)


def csv_lines(rows: Iterable[Sequence[Any]], *, guard: bool = True) -> bytes:
    """Many rows at once, exactly as `csv_stream` writes them (same cells, quoting and line ends)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    if guard:
        writer.writerows([csv_cell(v) for v in row] for row in rows)
    else:
        writer.writerows(rows)
    return buffer.getvalue().encode()


def json_envelope_head(kind: str, metadata: dict[str, Any]) -> bytes:
    """`{"apiVersion", "kind", "metadata", "records": [` — the records and `]}` follow."""
    head = orjson.dumps({"apiVersion": "agentrail/v1", "kind": kind, "metadata": metadata})
    return head[:-1] + b',"records":['


def ndjson_lines(records: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE) for record in records)


class ParquetSink(io.RawIOBase):
    """A write-only file for pyarrow's ParquetWriter that keeps only what was written since the last `drain`,
    so a Parquet file of any size passes through at the memory of one row group."""

    def __init__(self) -> None:
        super().__init__()
        self._pending = bytearray()
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._pending += view
        self._position += len(view)
        return len(view)

    def tell(self) -> int:
        return self._position

    def drain(self) -> bytes:
        data = bytes(self._pending)
        self._pending.clear()
        return data
