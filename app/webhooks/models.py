"""Tables of the webhooks domain: endpoints, deliveries (the outbox) and their attempts."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from app.db import TenantScoped, optional_timestamp_column, timestamp_column

PENDING = "PENDING"
SENDING = "SENDING"
DELIVERED = "DELIVERED"
FAILED = "FAILED"  # an attempt failed; another is scheduled (`next_attempt_at`)
DEAD_LETTERED = "DEAD_LETTERED"


class WebhookEndpoint(SQLModel, TenantScoped, table=True):
    """Where an organisation wants its events. The signing secret is stored encrypted (it must be usable to
    sign, so it cannot be hashed); during a rotation the previous secret signs too until it expires."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (sa.Index("ix_webhook_endpoints_org_created", "org_id", "created_at", "id"),)

    id: str = Field(primary_key=True, max_length=40)
    org_id: str = Field(foreign_key="organizations.id", max_length=40)
    url: str = Field(max_length=2048)
    description: str = Field(default="", max_length=500)
    events: list[str] = Field(default_factory=list, sa_column=sa.Column(JSONB, nullable=False))
    enabled: bool = Field(default=True)
    secret_encrypted: str = Field(sa_type=sa.Text)
    previous_secret_encrypted: str | None = Field(default=None, sa_type=sa.Text)
    previous_secret_expires_at: datetime | None = optional_timestamp_column()
    secret_rotated_at: datetime | None = optional_timestamp_column()
    failing_since: datetime | None = optional_timestamp_column()  # first failure after the last success
    disabled_reason: str | None = Field(default=None, max_length=200)
    created_by: str | None = Field(default=None, max_length=40)
    created_at: datetime = timestamp_column()
    updated_at: datetime = timestamp_column()


class WebhookDelivery(SQLModel, TenantScoped, table=True):
    """One event for one endpoint (or, for a test to a bare URL, one URL). The row is the truth: the queue only
    says "look now", and a sweeper finds what the queue forgot. `claim_token` fences a claim: only the worker
    holding the current token may record the outcome; a claim whose lease expired is retaken."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        sa.Index("ix_webhook_deliveries_org_created", "org_id", "created_at", "id"),
        sa.Index("ix_webhook_deliveries_org_endpoint", "org_id", "endpoint_id", "created_at"),
        sa.Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where=sa.text("status IN ('PENDING', 'FAILED')"),
        ),
        sa.Index("ix_webhook_deliveries_leased", "lease_expires_at", postgresql_where=sa.text("status = 'SENDING'")),
    )

    id: str = Field(primary_key=True, max_length=40)
    org_id: str = Field(foreign_key="organizations.id", max_length=40)
    endpoint_id: str | None = Field(
        default=None,
        sa_column=sa.Column(sa.String(40), sa.ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=True),
    )
    url: str | None = Field(default=None, max_length=2048)  # only for a test sent to a bare URL
    event_id: str = Field(max_length=40)
    event_type: str = Field(max_length=64)
    body: str = Field(sa_type=sa.Text)  # the exact bytes sent (and signed), the same on every attempt
    status: str = Field(default=PENDING, max_length=16)
    attempt_count: int = Field(default=0)  # attempts in the current cycle (a redelivery starts a new one)
    next_attempt_at: datetime | None = optional_timestamp_column()
    lease_expires_at: datetime | None = optional_timestamp_column()
    claim_token: str | None = Field(default=None, max_length=40)
    last_attempt_at: datetime | None = optional_timestamp_column()
    last_status_code: int | None = Field(default=None)
    last_error: str | None = Field(default=None, max_length=500)
    delivered_at: datetime | None = optional_timestamp_column()
    created_at: datetime = timestamp_column()

    @property
    def due_at(self) -> datetime | None:
        """When the next attempt is due: only a delivery still waiting (PENDING or FAILED) has one."""
        return self.next_attempt_at if self.status in (PENDING, FAILED) else None

    updated_at: datetime = timestamp_column()


class WebhookAttempt(SQLModel, TenantScoped, table=True):
    """One HTTP attempt of a delivery (or an attempt refused before sending, e.g. an unsafe address)."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (sa.Index("ix_webhook_attempts_org_delivery", "org_id", "delivery_id", "attempted_at"),)

    id: str = Field(primary_key=True, max_length=40)
    org_id: str = Field(foreign_key="organizations.id", max_length=40)
    delivery_id: str = Field(
        sa_column=sa.Column(sa.String(40), sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), nullable=False)
    )
    attempted_at: datetime = timestamp_column()
    succeeded: bool = Field(default=False)
    status_code: int | None = Field(default=None)
    latency_ms: int | None = Field(default=None)
    error: str | None = Field(default=None, max_length=500)
    response_body: str | None = Field(default=None, sa_type=sa.Text)  # the first 2 KB
