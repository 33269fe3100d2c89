"""Tables of the metrics domain: hourly rollups of audit records and each organisation's rollup watermark."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlmodel import Field, SQLModel

from app.db import TenantScoped, optional_timestamp_column, timestamp_column


class MetricRollup(SQLModel, TenantScoped, table=True):
    """Audit records of one organisation, hour and (agent, action, status, governance status, verb, provider,
    tenant).

    Absent agent, governance status, verb, provider and tenant are stored as '' so that they take part in the
    primary key.
    `duration_buckets` counts durations in fixed log-spaced buckets (see `app.metrics.histogram`): arrays
    of different rows add up element by element, so percentiles can be read after merging any rows.
    """

    __tablename__ = "metric_rollups"

    org_id: str = Field(primary_key=True, foreign_key="organizations.id", max_length=40)
    hour: datetime = Field(primary_key=True, sa_type=sa.DateTime(timezone=True))
    agent_id: str = Field(primary_key=True, max_length=40)
    action: str = Field(primary_key=True, max_length=128)
    status: str = Field(primary_key=True, max_length=16)
    governance_status: str = Field(primary_key=True, max_length=32)
    verb: str = Field(primary_key=True, max_length=255)
    provider: str = Field(primary_key=True, max_length=255)
    tenant_id: str = Field(primary_key=True, max_length=255)
    count: int = Field(sa_type=sa.BigInteger)
    errors: int = Field(sa_type=sa.BigInteger)
    blocked: int = Field(sa_type=sa.BigInteger)  # governance status "blocked" or status "blocked"
    idempotent: int = Field(sa_type=sa.BigInteger)  # sent with idempotent: true
    alerts: int = Field(sa_type=sa.BigInteger)
    tokens: float = Field(sa_type=sa.Double)
    duration_count: int = Field(sa_type=sa.BigInteger)
    duration_sum: float = Field(sa_type=sa.Double)
    duration_min: float | None = Field(default=None, sa_type=sa.Double)
    duration_max: float | None = Field(default=None, sa_type=sa.Double)
    duration_buckets: list[int] = Field(sa_column=sa.Column(ARRAY(sa.Integer), nullable=False))


class MetricRollupState(SQLModel, TenantScoped, table=True):
    """How far an organisation's rollups reach.

    Invariant: the rollups hold exactly the records with `seq <= rolled_seq` that occurred before
    `rolled_until` (an hour boundary). Everything else is read from the raw records.
    """

    __tablename__ = "metric_rollup_state"

    org_id: str = Field(primary_key=True, foreign_key="organizations.id", max_length=40)
    rolled_seq: int = Field(default=0, sa_type=sa.BigInteger)
    rolled_until: datetime | None = optional_timestamp_column()
    updated_at: datetime = timestamp_column()
