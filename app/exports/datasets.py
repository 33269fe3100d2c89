"""What can be exported: for each data set, its filter, how to count and stream it, and how one row looks in
every format (CSV row, JSON record, Parquet columns). Shared by the synchronous endpoints and the export job,
so both produce the same columns and records."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from app.activity import export_rows as activity_rows
from app.activity import service as activity
from app.activity.models import ActivityEvent
from app.audit import export_rows
from app.audit import service as audit
from app.audit.streams import ACTIVITY as ACTIVITY_STREAM
from app.audit.streams import AUDIT as AUDIT_STREAM
from app.audit.streams import Stream
from app.db import AsyncSession, iso
from app.exports import layouts
from app.exports.formats import csv_text_sql, json_text
from app.runtime.copy_out import copy_lines

AUDIT_HEADER = (
    "id",
    "timestamp",
    "traceId",
    "parentSpanId",
    "agentId",
    "action",
    "status",
    "verb",
    "provider",
    "riskLevel",
    "governanceStatus",
    "durationMs",
    "prompt",
    "response",
    "metadata",
    "checksum",
    "erasedAt",
    "erasureId",
)
ACTIVITY_HEADER = (
    "id",
    "orgId",
    "actor",
    "action",
    "targetType",
    "targetId",
    "metadata",
    "occurredAt",
    "sourceIp",
    "checksum",
)
_TIME_FIELDS = ("occurred_from", "occurred_to")


# --- Parquet: typed columns (timestamps, numbers, booleans); JSON values as JSON text -------------------
_TIMESTAMP = pa.timestamp("us", tz="UTC")
_ARROW_TYPES = {
    "string": pa.string(),
    "json": pa.string(),
    "timestamp": _TIMESTAMP,
    "float": pa.float64(),
    "bool": pa.bool_(),
}
AUDIT_PARQUET_SCHEMA = pa.schema([pa.field(name, _ARROW_TYPES[kind]) for name, kind, _ in export_rows.PARQUET_FIELDS])


def _json_text(value: Any) -> str | None:
    return None if value is None else json_text(value)


# (column name, arrow type, value of one event)
ACTIVITY_PARQUET: list[tuple[str, pa.DataType, Callable[[ActivityEvent], Any]]] = [
    ("id", pa.string(), lambda e: e.id),
    ("orgId", pa.string(), lambda e: e.org_id),
    ("actorType", pa.string(), lambda e: e.actor_type),
    ("actorId", pa.string(), lambda e: e.actor_id),
    ("actorName", pa.string(), lambda e: e.actor_name),
    ("actorEmail", pa.string(), lambda e: e.actor_email),
    ("action", pa.string(), lambda e: e.action),
    ("targetType", pa.string(), lambda e: e.target_type),
    ("targetId", pa.string(), lambda e: e.target_id),
    ("targetName", pa.string(), lambda e: e.target_name),
    ("metadata", pa.string(), lambda e: _json_text(e.metadata_)),
    ("occurredAt", _TIMESTAMP, lambda e: e.occurred_at),
    ("sourceIp", pa.string(), lambda e: e.source_ip),
    ("userAgent", pa.string(), lambda e: e.user_agent),
    ("checksum", pa.string(), lambda e: e.checksum),
]
ACTIVITY_PARQUET_SCHEMA = pa.schema([pa.field(name, kind) for name, kind, _ in ACTIVITY_PARQUET])


# --- reading a data set in batches, shaped for each format ---------------------------------------------
# Every reader gives the rows newest first. CSV and JSON: (session, query, *, limit=None) -> (rows, lines),
# streamed with COPY as PostgreSQL sends them. Parquet: (session, query, *, batch_size, limit=None) -> Arrow
# record batches, through a server-side cursor. The generators are handed
# out as they are (not wrapped in another), so closing the reader closes the COPY before its session ends.


def copy_reader(
    export_statement: Callable[..., Any], columns: list[Any], *, line_end: bytes = b"\n"
) -> Callable[..., AsyncGenerator[tuple[int, bytes], None]]:
    """A reader of (rows, lines) that streams the data set's `export_statement` over `columns` with COPY."""

    def read(session: AsyncSession, query: Any, *, limit: int | None = None) -> AsyncGenerator[tuple[int, bytes], None]:
        return copy_lines(session, export_statement(query, columns, limit=limit), line_end=line_end)

    return read


_audit_csv = copy_reader(audit.export_statement, [export_rows.csv_line(csv_text_sql)], line_end=b"\r\n")
_audit_json = copy_reader(audit.export_statement, export_rows.JSON_RECORD)
_activity_csv = copy_reader(activity.export_statement, [activity_rows.csv_line(csv_text_sql)], line_end=b"\r\n")
_activity_json = copy_reader(activity.export_statement, activity_rows.JSON_RECORD)


async def _audit_parquet(
    session: AsyncSession, query: Any, *, batch_size: int, limit: int | None = None
) -> AsyncGenerator[pa.RecordBatch, None]:
    fields = export_rows.PARQUET_FIELDS
    async for rows in audit.stream_rows(
        session, query, export_rows.PARQUET_COLUMNS, batch_size=batch_size, limit=limit
    ):
        arrays = []
        for (_, kind, _), values in zip(fields, zip(*rows, strict=True), strict=True):
            if kind == "timestamp":
                arrays.append(pa.array(values, type=pa.int64()).cast(_TIMESTAMP))
            else:
                arrays.append(pa.array(values, type=_ARROW_TYPES[kind]))
        yield pa.RecordBatch.from_arrays(arrays, schema=AUDIT_PARQUET_SCHEMA)


async def _activity_parquet(session: AsyncSession, query: Any, **options: Any) -> AsyncGenerator[pa.RecordBatch, None]:
    async for events in activity.stream_activity_batches(session, query, **options):
        arrays = [pa.array([get(e) for e in events], type=kind) for _, kind, get in ACTIVITY_PARQUET]
        yield pa.RecordBatch.from_arrays(arrays, schema=ACTIVITY_PARQUET_SCHEMA)


@dataclass(frozen=True)
class Dataset:
    name: str  # AUDIT_LOGS | ACTIVITY
    kind: str  # the JSON envelope's `kind`
    file_prefix: str  # audit-log-{orgId}-{YYYYMMDD}
    query_type: type[audit.AuditLogQuery] | type[activity.ActivityQuery]
    header: Sequence[str]
    count: Callable[[AsyncSession, Any], Any]
    csv_rows: Callable[..., AsyncGenerator[tuple[int, bytes], None]]  # (rows, their CSV lines), piece by piece
    json_lines: Callable[..., AsyncGenerator[tuple[int, bytes], None]]  # (rows, their records as JSON lines)
    parquet_schema: pa.Schema
    parquet_batches: Callable[..., AsyncGenerator[pa.RecordBatch, None]]
    users_only: bool
    proof_stream: Stream  # the chained stream whose proof bundle an export with include_proofs writes
    api_version: str = "agentrail/v1"  # the JSON envelope's `apiVersion`
    filename_format: str = "{prefix}-{org_id}-{when:%Y%m%d}.{extension}"

    def filename(self, org_id: str, when: datetime, extension: str) -> str:
        return self.filename_format.format(prefix=self.file_prefix, org_id=org_id, when=when, extension=extension)


AUDIT_LOGS = Dataset(
    name="AUDIT_LOGS",
    kind="AuditExport",
    file_prefix="audit-log",
    query_type=audit.AuditLogQuery,
    header=AUDIT_HEADER,
    count=audit.count_records,
    csv_rows=_audit_csv,
    json_lines=_audit_json,
    parquet_schema=AUDIT_PARQUET_SCHEMA,
    parquet_batches=_audit_parquet,
    users_only=False,
    proof_stream=AUDIT_STREAM,
)
ACTIVITY = Dataset(
    name="ACTIVITY",
    kind="ActivityExport",
    file_prefix="activity",
    query_type=activity.ActivityQuery,
    header=ACTIVITY_HEADER,
    count=activity.count_activity,
    csv_rows=_activity_csv,
    json_lines=_activity_json,
    parquet_schema=ACTIVITY_PARQUET_SCHEMA,
    parquet_batches=_activity_parquet,
    users_only=True,
    proof_stream=ACTIVITY_STREAM,
)


def _activity_layout(name: str, header: Sequence[str], csv_line: Any, json_record: Any, **extra: Any) -> Dataset:
    """The activity trail in another layout (app/exports/layouts.py): its events, filter and Parquet columns."""
    return dataclasses.replace(
        ACTIVITY,
        name=name,
        header=header,
        csv_rows=copy_reader(activity.export_statement, [csv_line], line_end=b"\r\n"),
        json_lines=copy_reader(activity.export_statement, [json_record]),
        **extra,
    )


# seed 000's POST /v1/audit/export and seed 001's organisation export: synchronous only
GATEWAY = _activity_layout("GATEWAY", layouts.GATEWAY_HEADER, layouts.GATEWAY_CSV, layouts.GATEWAY_JSON)
ORGANIZATION_AUDIT_LOG = _activity_layout(
    "ORGANIZATION_AUDIT_LOG",
    layouts.ORGANIZATION_HEADER,
    layouts.ORGANIZATION_CSV,
    sa.null(),  # CSV only
    file_prefix="audit-log",
    filename_format="{prefix}-{org_id}-{when:%Y-%m-%d}.{extension}",
)
# seed 003's GET /api/v1/audit/export, also as an export job (above 10,000 records)
OPERATIONS_AUDIT = _activity_layout(
    "OPERATIONS_AUDIT",
    layouts.OPERATIONS_HEADER,
    layouts.OPERATIONS_CSV,
    layouts.OPERATIONS_JSON,
    kind="AuditExport",
    file_prefix="audit-export",
    api_version="v1",
    filename_format="{prefix}-{when:%Y%m%d}.{extension}",
)
DATASETS = {d.name: d for d in (AUDIT_LOGS, ACTIVITY, OPERATIONS_AUDIT)}


def beyond_window(query: Any) -> str | None:
    """The first condition of a filter other than its window (from, to), as clients name it; None when there is
    none. A proof bundle holds the whole chain of a window: other conditions would cut it."""
    for field in dataclasses.fields(query):
        if field.name not in _TIME_FIELDS and getattr(query, field.name) not in (None, [], ""):
            return _PUBLIC_NAMES.get(field.name, field.name)
    return None


def query_to_json(query: Any) -> dict[str, Any]:
    """A filter object (AuditLogQuery / ActivityQuery) as JSON for the job's row; only the conditions set."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(query):
        value = getattr(query, field.name)
        if value is None:
            continue
        out[field.name] = iso(value) if isinstance(value, datetime) else value
    return out


# the filter as clients name it (GraphQL filter fields, the synchronous endpoints' query parameters)
_PUBLIC_NAMES = {
    "agent_ids": "agentId",
    "actions": "action",
    "trace_id": "traceId",
    "statuses": "status",
    "risk_levels": "riskLevel",
    "governance_statuses": "governanceStatus",
    "providers": "provider",
    "verbs": "verb",
    "tenant_ids": "tenantId",
    "execution_id": "executionId",
    "occurred_from": "from",
    "occurred_to": "to",
    "search": "search",
    "has_alerts": "hasAlerts",
    "target_types": "targetType",
    "actor_id": "actorId",
    "target_id": "targetId",
    "action_verbs": "actionType",
    "actor": "user",
}


def envelope_metadata(
    dataset: Dataset, *, exported_at: datetime, query: Any, total: int, fmt: str, filters: dict[str, Any]
) -> dict[str, Any]:
    """The JSON envelope's `metadata`. Agentrail's own envelope (`agentrail/v1`) adds the filters; the seeds'
    (`v1`, seed 003) is exactly {exportedAt, from, to, totalRecords, format}, `to` defaulting to now."""
    metadata: dict[str, Any] = {
        "exportedAt": iso(exported_at),
        "from": iso(query.occurred_from),
        "to": iso(query.occurred_to),
        "totalRecords": total,
        "format": fmt.lower(),
    }
    if dataset.api_version == "v1":
        metadata["to"] = metadata["to"] or metadata["exportedAt"]
    else:
        metadata["filters"] = filters
    return metadata


def public_filter(data: dict[str, Any]) -> dict[str, Any]:
    """A stored filter (`query_to_json`) with the names clients use, for the JSON envelope's metadata."""
    return {_PUBLIC_NAMES.get(k, k): v for k, v in data.items()}


def query_from_json(dataset: Dataset, data: dict[str, Any]) -> Any:
    values: dict[str, Any] = {
        k: datetime.fromisoformat(v.replace("Z", "+00:00")) if k in _TIME_FIELDS and v is not None else v
        for k, v in data.items()
    }
    return dataset.query_type(**values)
