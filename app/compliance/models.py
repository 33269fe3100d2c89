"""Tables of the compliance domain: rules, installed packs and the organisation's compliance settings."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from app.db import TenantScoped, json_column, timestamp_column


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


class ComplianceSettings(SQLModel, TenantScoped, table=True):
    """An organisation's defaults for its rules; no row means every default (nothing redacted by default)."""

    __tablename__ = "compliance_settings"

    org_id: str = Field(primary_key=True, foreign_key="organizations.id", max_length=40)
    redact_pii: bool = False
    updated_at: datetime = timestamp_column()
    updated_by: str | None = Field(default=None, max_length=40)
