"""Export formats: CSV cells as SQL (quoted, formula-injection guarded), the CSV header, the JSON envelope and
its items, and the Parquet sink."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

import orjson
import pyarrow as pa
import sqlalchemy as sa

# Arrow's default allocator keeps the pages it freed; exports allocate and free per batch, so the system
# allocator keeps a long export's resident memory flat
pa.set_memory_pool(pa.system_memory_pool())

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def json_text(value: Any) -> str:
    """Compact JSON (orjson); the standard library for integers beyond 64 bits, which orjson cannot write."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# --- the file formats of export jobs -------------------------------------------------------------------
# format -> (file extension, Content-Type)
FILE_TYPES = {
    "CSV": ("csv", "text/csv; charset=utf-8"),
    "JSON": ("json", "application/json"),
    "NDJSON": ("ndjson", "application/x-ndjson"),
    "PARQUET": ("parquet", "application/vnd.apache.parquet"),
}
# the formats a proof bundle is written in (includeProofs); CSV cannot hold one
PROOF_FORMATS = ("JSON", "NDJSON", "PARQUET")


def csv_header(header: Sequence[str]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(header)
    return buffer.getvalue().encode()


def csv_text_sql(column: Any) -> Any:
    """SQL for one CSV cell of a text column, exactly as the csv module writes it (minimal quoting): NULL as
    empty, the formula guard (a leading apostrophe on text a spreadsheet would run as a formula), then quotes
    (inner quotes doubled) when the text holds a comma, quote, CR or LF. PostgreSQL formats whole rows with it."""
    # each sub-expression over the column itself: PostgreSQL does not share repeated sub-expressions. The guard's
    # apostrophe never needs quoting, so whether to quote is decided on the column; strpos, not a regular
    # expression (PostgreSQL's regex engine first widens the whole text)
    guard = sa.case((sa.func.left(column, 1).in_(FORMULA_PREFIXES), "'"), else_="")
    needs_quotes = sa.or_(*[sa.func.strpos(column, character) > 0 for character in ('"', ",", "\n", "\r")])
    quoted = sa.case(
        (needs_quotes, sa.func.concat('"', guard, sa.func.replace(column, '"', '""'), '"')),
        else_=sa.func.concat(guard, column),
    )
    return sa.func.coalesce(quoted, "")


class JsonArrayItems:
    """JSON lines (one record per line, each ending with a newline, none inside: JSON escapes it) → the items
    of a JSON array, comma-separated across however many pieces they come in."""

    def __init__(self) -> None:
        self._more = False

    def convert(self, lines: bytes) -> bytes:
        if not lines:
            return b""
        items = lines[:-1].replace(b"\n", b",")
        if self._more:
            items = b"," + items
        self._more = True
        return items


def json_envelope_head(kind: str, metadata: dict[str, Any], api_version: str = "agentrail/v1") -> bytes:
    """`{"apiVersion", "kind", "metadata", "records": [` — the records and `]}` follow."""
    head = orjson.dumps({"apiVersion": api_version, "kind": kind, "metadata": metadata})
    return head[:-1] + b',"records":['


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
