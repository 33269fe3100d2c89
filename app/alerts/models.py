"""Tables of the alerts domain: what rules raised."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.db import TenantScoped, optional_timestamp_column, timestamp_column


class Alert(SQLModel, TenantScoped, table=True):
    """A rule matched a record. Keeps where and a redacted excerpt, never the matched text itself.

    The rule's name, kind and severity are copied in: alerts outlive rule edits and deletions.
    `seq` orders alerts for cursors and live replay.
    """

    __tablename__ = "alerts"
    __table_args__ = (
        sa.Index("ix_alerts_org_seq", "org_id", "seq"),
        sa.Index("ix_alerts_org_log", "org_id", "audit_log_id"),
        sa.Index("ix_alerts_org_trace", "org_id", "trace_id"),
        sa.Index("ix_alerts_org_agent", "org_id", "agent_id", "seq"),
        sa.Index("ix_alerts_org_rule", "org_id", "rule_id", "seq"),
    )

    id: str = Field(primary_key=True, max_length=40)
    org_id: str = Field(foreign_key="organizations.id", max_length=40)
    seq: int | None = Field(
        default=None, sa_column=sa.Column(sa.BigInteger, sa.Identity(always=True), nullable=False, unique=True)
    )
    rule_id: str = Field(max_length=40)
    rule_name: str = Field(max_length=200)
    rule_kind: str = Field(max_length=32)
    policy_id: str | None = Field(default=None, max_length=40)
    policy_version: int | None = None
    severity: str = Field(max_length=16)
    action: str = Field(max_length=16)
    message: str = Field(max_length=500)
    field: str = Field(max_length=32)
    excerpt: str = Field(max_length=200)
    start_offset: int | None = None
    end_offset: int | None = None
    audit_log_id: str = Field(max_length=40)  # no foreign key (audit_logs is partitioned): retention removes both
    trace_id: str = Field(max_length=64)
    agent_id: str | None = Field(default=None, max_length=40)
    created_at: datetime = timestamp_column()
    resolved_at: datetime | None = optional_timestamp_column()
    resolved_by: str | None = Field(default=None, max_length=40)
    resolution_note: str | None = Field(default=None, max_length=2000)


class AlertNotificationState(SQLModel, TenantScoped, table=True):
    """How far one member's alert emails have gone in one organisation: the last alert covered (`last_seq`) and
    when the last email went (digests wait `digestMinutes` after it)."""

    __tablename__ = "alert_notification_states"

    org_id: str = Field(primary_key=True, foreign_key="organizations.id", max_length=40)
    user_id: str = Field(primary_key=True, foreign_key="users.id", max_length=40)
    last_seq: int = Field(default=0, sa_column=sa.Column(sa.BigInteger, nullable=False))
    last_sent_at: datetime | None = optional_timestamp_column()
    emails_sent: int = 0
