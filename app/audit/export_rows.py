"""The audit record as exports read it: the columns of a CSV row, a JSON record and a Parquet row, selected so
that PostgreSQL does the per-row formatting it does well (UTC timestamps in ISO 8601 with `Z`, JSON records)
and the exporting process only stitches batches together. Used with `service.stream_rows`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from app.audit.models import AuditLog

ISO_MS = 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'  # the same text as app.db.iso: UTC, milliseconds, `Z`


def iso_text(column: Any) -> Any:
    return sa.func.to_char(sa.func.timezone("UTC", column), ISO_MS)


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


def csv_parts(text_cell: Callable[[Any], Any]) -> list[Any]:
    """A CSV row in five parts: the cells up to governanceStatus (formatted and joined by PostgreSQL with
    `text_cell`), durationMs (a number), prompt and response (formatted and joined), metadata (JSON), checksum
    (formatted). The number and the JSON are left to the caller, which formats them as the API does."""
    return [
        sa.func.concat_ws(",", *[text_cell(column) for column in _CSV_HEAD]),
        AuditLog.duration_ms,
        sa.func.concat_ws(",", text_cell(AuditLog.prompt), text_cell(AuditLog.response)),
        AuditLog.metadata_,
        text_cell(AuditLog.checksum),
    ]


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
]
JSON_RECORD = [
    sa.func.json_build_object(
        *[part for name, column in _JSON_FIELDS for part in (sa.literal_column(f"'{name}'"), column)]
    ).cast(sa.Text)
]

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
]
PARQUET_COLUMNS = [column for _, _, column in PARQUET_FIELDS]
