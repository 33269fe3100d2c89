"""The audit record as exports read it: a whole CSV row and a whole JSON record built by PostgreSQL (read with
COPY, `app.runtime.copy_out`), and the columns of a Parquet row (read with `service.stream_rows`). PostgreSQL
does the per-row formatting (UTC timestamps in ISO 8601 with `Z`, quoting, JSON escapes); the exporting
process only passes text through."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from app.audit.models import AuditLog
from app.runtime.copy_out import iso_text, json_object_text


def epoch_micros(column: Any) -> Any:
    return sa.cast(sa.func.extract("epoch", column) * 1_000_000, sa.BigInteger)


_CSV_HEAD = [
    AuditLog.id,
    iso_text(AuditLog.occurred_at),
    AuditLog.trace_id,
    AuditLog.parent_span_id,
    AuditLog.agent_id,
    AuditLog.action,
    AuditLog.status,
    AuditLog.verb,
    AuditLog.provider,
    AuditLog.risk_level,
    AuditLog.governance_status,
]


def csv_line(text_cell: Callable[[Any], Any]) -> Any:
    """A whole CSV row (without its line end) as one text, every cell formatted by PostgreSQL with `text_cell`:
    durationMs as PostgreSQL writes the number (`300`, `12.25`), metadata as its JSON text."""
    cells = [
        *_CSV_HEAD,
        sa.cast(AuditLog.duration_ms, sa.Text),
        AuditLog.prompt,
        AuditLog.response,
        sa.cast(AuditLog.metadata_, sa.Text),
        AuditLog.checksum,
        iso_text(AuditLog.erased_at),
        AuditLog.erasure_id,
    ]
    return sa.func.concat_ws(",", *[text_cell(cell) for cell in cells])


# one record as the REST API shows it (app.audit.routes.record_to_json), keys in the same order
_JSON_FIELDS: list[tuple[str, Any]] = [
    ("id", AuditLog.id),
    ("traceId", AuditLog.trace_id),
    ("spanId", AuditLog.span_id),
    ("parentSpanId", AuditLog.parent_span_id),
    ("agentId", AuditLog.agent_id),
    ("action", AuditLog.action),
    ("prompt", AuditLog.prompt),
    ("response", AuditLog.response),
    ("metadata", AuditLog.metadata_),
    ("args", AuditLog.args),
    ("result", AuditLog.result),
    ("occurredAt", iso_text(AuditLog.occurred_at)),
    ("receivedAt", iso_text(AuditLog.received_at)),
    ("durationMs", AuditLog.duration_ms),
    ("status", AuditLog.status),
    ("idempotencyKey", AuditLog.idempotency_key),
    ("executionId", AuditLog.execution_id),
    ("verb", AuditLog.verb),
    ("provider", AuditLog.provider),
    ("riskLevel", AuditLog.risk_level),
    ("governanceStatus", AuditLog.governance_status),
    ("dryRun", AuditLog.dry_run),
    ("idempotent", AuditLog.idempotent),
    ("tenantId", AuditLog.tenant_id),
    ("credentialMasked", AuditLog.credential_masked),
    ("checksum", AuditLog.checksum),
    ("erasedAt", iso_text(AuditLog.erased_at)),
    ("erasureId", AuditLog.erasure_id),
]


# the whole record as one compact JSON text
JSON_RECORD = [json_object_text(_JSON_FIELDS)]

# Parquet: (name, kind, column); kind "timestamp" is read as microseconds since the epoch, "json" as JSON text
PARQUET_FIELDS: list[tuple[str, str, Any]] = [
    ("id", "string", AuditLog.id),
    ("traceId", "string", AuditLog.trace_id),
    ("spanId", "string", AuditLog.span_id),
    ("parentSpanId", "string", AuditLog.parent_span_id),
    ("agentId", "string", AuditLog.agent_id),
    ("action", "string", AuditLog.action),
    ("prompt", "string", AuditLog.prompt),
    ("response", "string", AuditLog.response),
    ("metadata", "json", sa.cast(AuditLog.metadata_, sa.Text)),
    ("args", "json", sa.cast(AuditLog.args, sa.Text)),
    ("result", "json", sa.cast(AuditLog.result, sa.Text)),
    ("occurredAt", "timestamp", epoch_micros(AuditLog.occurred_at)),
    ("receivedAt", "timestamp", epoch_micros(AuditLog.received_at)),
    ("durationMs", "float", AuditLog.duration_ms),
    ("status", "string", AuditLog.status),
    ("idempotencyKey", "string", AuditLog.idempotency_key),
    ("executionId", "string", AuditLog.execution_id),
    ("verb", "string", AuditLog.verb),
    ("provider", "string", AuditLog.provider),
    ("riskLevel", "string", AuditLog.risk_level),
    ("governanceStatus", "string", AuditLog.governance_status),
    ("dryRun", "bool", AuditLog.dry_run),
    ("idempotent", "bool", AuditLog.idempotent),
    ("tenantId", "string", AuditLog.tenant_id),
    ("credentialMasked", "bool", AuditLog.credential_masked),
    ("checksum", "string", AuditLog.checksum),
    ("erasedAt", "timestamp", epoch_micros(AuditLog.erased_at)),
    ("erasureId", "string", AuditLog.erasure_id),
]
PARQUET_COLUMNS = [column for _, _, column in PARQUET_FIELDS]
