"""Tables of the exports domain: one row per asynchronous export job (the job's state lives here, not in Redis)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.db import TenantScoped, json_column, optional_timestamp_column, timestamp_column


class ExportJob(SQLModel, TenantScoped, table=True):
    """An export of the audit record or the activity trail to a stored file.

    `claim_token` names the attempt that currently owns the job (set when a worker claims it); only that
    attempt may report progress or finish it, so a worker that lost the job (it stalled, another one took
    over) can never mark it done. Each attempt writes its own file (`file_id`), from the start.
    """

    __tablename__ = "export_jobs"
    __table_args__ = (
        sa.Index("ix_export_jobs_org_created", "org_id", sa.text("created_at DESC"), sa.text("id DESC")),
        # the sweeper's and the expiry cron's scans: only unfinished or downloadable jobs
        sa.Index(
            "ix_export_jobs_open",
            "status",
            "heartbeat_at",
            postgresql_where=sa.text("status IN ('PENDING', 'RUNNING', 'READY')"),
        ),
    )

    id: str = Field(primary_key=True, max_length=40)
    org_id: str = Field(foreign_key="organizations.id", max_length=40)
    dataset: str = Field(max_length=20)  # AUDIT_LOGS | ACTIVITY
    format: str = Field(max_length=10)  # CSV | JSON | NDJSON | PARQUET
    filter: dict[str, Any] = json_column()
    # the file is the proof bundle of the filter's window (records, digests, keys) for the offline verifier
    include_proofs: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    status: str = Field(default="PENDING", max_length=12)
    row_count: int = Field(default=0, sa_type=sa.BigInteger)
    progress: float = 0.0
    size_bytes: int | None = Field(default=None, sa_type=sa.BigInteger)
    file_id: str | None = Field(default=None, max_length=48)
    error: str | None = Field(default=None, max_length=500)
    attempts: int = 0
    claim_token: str | None = Field(default=None, max_length=40)
    queue_job_id: str | None = Field(default=None, max_length=120)
    requested_by_type: str = Field(max_length=20)  # user | api_key
    requested_by_id: str = Field(max_length=40)
    requested_by_name: str | None = Field(default=None, max_length=200)
    requested_by_email: str | None = Field(default=None, max_length=320)
    created_at: datetime = timestamp_column()
    enqueued_at: datetime | None = optional_timestamp_column()
    started_at: datetime | None = optional_timestamp_column()
    heartbeat_at: datetime | None = optional_timestamp_column()
    completed_at: datetime | None = optional_timestamp_column()
    expires_at: datetime | None = optional_timestamp_column()
