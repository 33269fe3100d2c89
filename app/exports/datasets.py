"""What can be exported: for each data set, its filter, how to count and stream it, and how one row looks in
every format (CSV row, JSON record, Parquet columns). Shared by the synchronous endpoints and the export job,
so both produce the same columns and records."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import pyarrow as pa

from app.activity import service as activity
from app.activity.models import ActivityEvent
from app.audit import service as audit
from app.audit.models import AuditRecord
from app.audit.routes import record_to_json
from app.db import AsyncSession, iso

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


def audit_csv_row(r: AuditRecord) -> list[Any]:
    return [
        r.id,
        iso(r.occurred_at),
        r.trace_id,
        r.parent_span_id,
        r.agent_id,
        r.action,
        r.status,
        r.verb,
        r.provider,
        r.risk_level,
        r.governance_status,
        r.duration_ms,
        r.prompt,
        r.response,
        r.metadata,
        r.checksum,
    ]


def activity_csv_row(e: ActivityEvent) -> list[Any]:
    return [
        e.id,
        e.org_id,
        e.actor_email or e.actor_name or e.actor_id,
        e.action,
        e.target_type,
        e.target_id,
        e.metadata_,
        iso(e.occurred_at),
        e.source_ip,
        e.checksum,
    ]


def activity_json(e: ActivityEvent) -> dict[str, Any]:
    return {
        "id": e.id,
        "orgId": e.org_id,
        "actor": {"type": e.actor_type, "id": e.actor_id, "name": e.actor_name, "email": e.actor_email},
        "action": e.action,
        "targetType": e.target_type,
        "targetId": e.target_id,
        "targetName": e.target_name,
        "metadata": e.metadata_,
        "occurredAt": iso(e.occurred_at),
        "sourceIp": e.source_ip,
        "userAgent": e.user_agent,
        "checksum": e.checksum,
    }


# --- Parquet: typed columns (timestamps, numbers, booleans); JSON values as JSON text -------------------
_TIMESTAMP = pa.timestamp("us", tz="UTC")


def _json_text(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


# (column name, arrow type, value of one item)
ParquetColumn = tuple[str, pa.DataType, Callable[[Any], Any]]

AUDIT_PARQUET: list[ParquetColumn] = [
    ("id", pa.string(), lambda r: r.id),
    ("traceId", pa.string(), lambda r: r.trace_id),
    ("spanId", pa.string(), lambda r: r.span_id),
    ("parentSpanId", pa.string(), lambda r: r.parent_span_id),
    ("agentId", pa.string(), lambda r: r.agent_id),
    ("action", pa.string(), lambda r: r.action),
    ("prompt", pa.string(), lambda r: r.prompt),
    ("response", pa.string(), lambda r: r.response),
    ("metadata", pa.string(), lambda r: _json_text(r.metadata)),
    ("args", pa.string(), lambda r: _json_text(r.args)),
    ("result", pa.string(), lambda r: _json_text(r.result)),
    ("occurredAt", _TIMESTAMP, lambda r: r.occurred_at),
    ("receivedAt", _TIMESTAMP, lambda r: r.received_at),
    ("durationMs", pa.float64(), lambda r: r.duration_ms),
    ("status", pa.string(), lambda r: r.status),
    ("idempotencyKey", pa.string(), lambda r: r.idempotency_key),
    ("executionId", pa.string(), lambda r: r.execution_id),
    ("verb", pa.string(), lambda r: r.verb),
    ("provider", pa.string(), lambda r: r.provider),
    ("riskLevel", pa.string(), lambda r: r.risk_level),
    ("governanceStatus", pa.string(), lambda r: r.governance_status),
    ("dryRun", pa.bool_(), lambda r: r.dry_run),
    ("idempotent", pa.bool_(), lambda r: r.idempotent),
    ("tenantId", pa.string(), lambda r: r.tenant_id),
    ("credentialMasked", pa.bool_(), lambda r: r.credential_masked),
    ("checksum", pa.string(), lambda r: r.checksum),
]
ACTIVITY_PARQUET: list[ParquetColumn] = [
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


@dataclass(frozen=True)
class Dataset:
    name: str  # AUDIT_LOGS | ACTIVITY
    kind: str  # the JSON envelope's `kind`
    file_prefix: str  # audit-log-{orgId}-{YYYYMMDD}
    query_type: type
    header: Sequence[str]
    csv_row: Callable[[Any], list[Any]]
    json_record: Callable[[Any], dict[str, Any]]
    parquet_columns: list[ParquetColumn]
    count: Callable[[AsyncSession, Any], Any]
    batches: Callable[..., AsyncIterator[list[Any]]]
    users_only: bool

    def parquet_schema(self) -> pa.Schema:
        return pa.schema([pa.field(name, kind) for name, kind, _ in self.parquet_columns])

    def parquet_batch(self, items: Sequence[Any]) -> pa.RecordBatch:
        arrays = [pa.array([get(item) for item in items], type=kind) for _, kind, get in self.parquet_columns]
        return pa.RecordBatch.from_arrays(arrays, schema=self.parquet_schema())

    def filename(self, org_id: str, when: datetime, extension: str) -> str:
        return f"{self.file_prefix}-{org_id}-{when:%Y%m%d}.{extension}"


AUDIT_LOGS = Dataset(
    name="AUDIT_LOGS",
    kind="AuditExport",
    file_prefix="audit-log",
    query_type=audit.AuditLogQuery,
    header=AUDIT_HEADER,
    csv_row=audit_csv_row,
    json_record=record_to_json,
    parquet_columns=AUDIT_PARQUET,
    count=audit.count_records,
    batches=audit.stream_record_batches,
    users_only=False,
)
ACTIVITY = Dataset(
    name="ACTIVITY",
    kind="ActivityExport",
    file_prefix="activity",
    query_type=activity.ActivityQuery,
    header=ACTIVITY_HEADER,
    csv_row=activity_csv_row,
    json_record=activity_json,
    parquet_columns=ACTIVITY_PARQUET,
    count=activity.count_activity,
    batches=activity.stream_activity_batches,
    users_only=True,
)
DATASETS = {d.name: d for d in (AUDIT_LOGS, ACTIVITY)}


def query_to_json(query: Any) -> dict[str, Any]:
    """A filter object (AuditLogQuery / ActivityQuery) as JSON for the job's row; only the conditions set."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(query):
        value = getattr(query, field.name)
        if value is None:
            continue
        out[field.name] = iso(value) if isinstance(value, datetime) else value
    return out


def query_from_json(dataset: Dataset, data: dict[str, Any]) -> Any:
    values = {
        k: datetime.fromisoformat(v.replace("Z", "+00:00")) if k in _TIME_FIELDS and v is not None else v
        for k, v in data.items()
    }
    return dataset.query_type(**values)
