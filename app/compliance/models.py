"""Tables of the compliance domain: rules, installed packs, and the alerts rules raise."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from app.db import TenantScoped, json_column, optional_timestamp_column, timestamp_column


class ComplianceRule(SQLModel, TenantScoped, table=True):
    """A rule of the organisation: custom, or a copy of a pack's rule (`pack_id`, `pack_rule_key`)."""

    __tablename__ = "compliance_rules"
    __table_args__ = (
        sa.Index("ix_compliance_rules_org_created", "org_id", "created_at", "id"),
        sa.Index(
            "uq_compliance_rules_org_pack_rule",
            "org_id",
            "pack_id",
            "pack_rule_key",
            unique=True,
            postgresql_where=sa.text("pack_id IS NOT NULL"),
        ),
    )

    id: str = Field(primary_key=True, max_length=40)
    org_id: str = Field(foreign_key="organizations.id", max_length=40)
    name: str = Field(max_length=200)
    description: str = Field(default="", max_length=2000)
    kind: str = Field(max_length=32)
    config: dict[str, Any] = json_column()
    severity: str = Field(max_length=16)
    enabled: bool = True
    applies_to: list[str] = Field(default_factory=list, sa_column=sa.Column(JSONB, nullable=False))
    action: str = Field(default="alert", max_length=16)
    pack_id: str | None = Field(default=None, max_length=40)
    pack_rule_key: str | None = Field(default=None, max_length=80)
    created_at: datetime = timestamp_column()
    updated_at: datetime = timestamp_column()


class InstalledPack(SQLModel, TenantScoped, table=True):
    __tablename__ = "installed_compliance_packs"

    org_id: str = Field(primary_key=True, foreign_key="organizations.id", max_length=40)
    pack_id: str = Field(primary_key=True, max_length=40)
    installed_at: datetime = timestamp_column()
    installed_by: str | None = Field(default=None, max_length=40)


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
    audit_log_id: str = Field(foreign_key="audit_logs.id", max_length=40)
    trace_id: str = Field(max_length=64)
    agent_id: str | None = Field(default=None, max_length=40)
    created_at: datetime = timestamp_column()
    resolved_at: datetime | None = optional_timestamp_column()
    resolved_by: str | None = Field(default=None, max_length=40)
    resolution_note: str | None = Field(default=None, max_length=2000)
