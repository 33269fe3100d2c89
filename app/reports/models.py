"""Tables of the reports domain. A report's row is its job's state: the worker claims it, and a sweeper
picks up rows whose worker died or whose queue entry was lost."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from app.db import TenantScoped, json_column, optional_timestamp_column, timestamp_column


class Report(SQLModel, TenantScoped, table=True):
    __tablename__ = "reports"
    __table_args__ = (
        sa.Index("ix_reports_org_created", "org_id", "created_at", "id"),
        # the sweeper's scan: only unfinished rows are indexed
        sa.Index(
            "ix_reports_unfinished",
            "status",
            "claimed_at",
            postgresql_where=sa.text("status IN ('PENDING', 'RUNNING')"),
        ),
    )

    id: str = Field(primary_key=True, max_length=40)
    org_id: str = Field(foreign_key="organizations.id", max_length=40)
    type: str = Field(max_length=32)
    format: str = Field(max_length=8)
    status: str = Field(default="PENDING", max_length=16)
    window_from: datetime = Field(sa_type=sa.DateTime(timezone=True))
    window_to: datetime = Field(sa_type=sa.DateTime(timezone=True))
    agent_ids: list[str] | None = Field(default=None, sa_column=sa.Column(JSONB, nullable=True))
    requested_by: str = Field(max_length=40)
    created_at: datetime = timestamp_column()
    claimed_at: datetime | None = optional_timestamp_column()
    attempts: int = 0
    completed_at: datetime | None = optional_timestamp_column()
    expires_at: datetime | None = optional_timestamp_column()
    summary: dict[str, Any] = json_column()
    error: str | None = Field(default=None, max_length=2000)
    file_id: str | None = Field(default=None, max_length=40)
    size_bytes: int | None = Field(default=None, sa_type=sa.BigInteger)
