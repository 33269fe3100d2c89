"""Export formats: CSV rows (quoted, formula-injection guarded) and the JSON envelope, produced as chunks."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

# Arrow's default allocator keeps the pages it freed; exports allocate and free per batch, so the system
# allocator keeps a long export's resident memory flat
pa.set_memory_pool(pa.system_memory_pool())

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
ROWS_PER_CHUNK = 500


def json_text(value: Any) -> str:
    """Compact JSON (orjson); the standard library for integers beyond 64 bits, which orjson cannot write."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def csv_cell(value: Any) -> str:
    """A value as a CSV cell. Text that a spreadsheet would run as a formula gets a leading apostrophe."""
    if type(value) is str:  # the common case first
        return "'" + value if value.startswith(FORMULA_PREFIXES) else value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = json_text(value) if isinstance(value, dict | list) else str(value)
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
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(header)
    return buffer.getvalue().encode()


def _text(value: Any) -> str | None:
    """`csv_cell` without the formula guard (applied to whole columns in `csv_batch`)."""
    if value is None or type(value) is str:
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json_text(value)
    return str(value)


_FORMULA_PATTERN = r"^([=+\-@\t\r])"  # FORMULA_PREFIXES, as a regular expression
_NEEDS_QUOTES = '[",\r\n]'


def csv_batch(rows: Sequence[Sequence[Any]]) -> bytes:
    """Many rows at once, byte for byte what `csv_stream` writes for them (csv_cell's values and formula guard,
    the csv module's minimal quoting, CRLF), computed column by column with Arrow instead of cell by cell in
    Python: several times faster on large exports."""
    if not rows:
        return b""
    cells = []
    for values in zip(*rows, strict=True):
        try:
            column = pa.array(values, type=pa.string())  # text columns: no per-value Python work
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            column = pa.array([_text(v) for v in values], type=pa.string())
        column = pc.fill_null(column, "")
        column = pc.replace_substring_regex(column, pattern=_FORMULA_PATTERN, replacement="'\\1", max_replacements=1)
        needs_quotes = pc.match_substring_regex(column, _NEEDS_QUOTES)
        if pc.any(needs_quotes).as_py():
            quoted = pc.binary_join_element_wise('"', pc.replace_substring(column, '"', '""'), '"', "")
            column = pc.if_else(needs_quotes, quoted, column)
        cells.append(column)
    lines = pc.binary_join_element_wise(pc.binary_join_element_wise(*cells, ","), "\r\n", "")
    whole = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, len(lines)], pa.int32()), lines), "")
    return whole[0].as_buffer().to_pybytes()


def csv_text_sql(column: Any) -> Any:
    """SQL for one CSV cell of a text column, exactly as `csv_cell` and the csv module write it: NULL as empty,
    the formula guard, then quotes (inner quotes doubled) when the text holds a comma, quote, CR or LF.
    Lets PostgreSQL format most of a row while this process only joins it."""
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


def json_envelope_head(kind: str, metadata: dict[str, Any]) -> bytes:
    """`{"apiVersion", "kind", "metadata", "records": [` — the records and `]}` follow."""
    head = orjson.dumps({"apiVersion": "agentrail/v1", "kind": kind, "metadata": metadata})
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
