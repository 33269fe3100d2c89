"""Tables of the policies domain: policies, their immutable versions, and attachments to agents."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from app.db import TenantScoped, optional_timestamp_column, timestamp_column


class Policy(SQLModel, TenantScoped, table=True):
    __tablename__ = "policies"
    __table_args__ = (
        sa.Index("ix_policies_org_created", "org_id", "created_at", "id"),
        sa.Index(
            "ux_policies_org_lower_name",
            "org_id",
            sa.text("lower(name)"),
            unique=True,
            postgresql_where=sa.text("deleted_at IS NULL"),
        ),
    )

    id: str = Field(primary_key=True, max_length=40)
    org_id: str = Field(foreign_key="organizations.id", max_length=40)
    name: str = Field(max_length=200)
    description: str = Field(default="", max_length=2000)
    current_version: int = 1
    created_at: datetime = timestamp_column()
    updated_at: datetime = timestamp_column()
    deleted_at: datetime | None = optional_timestamp_column()


class PolicyVersion(SQLModel, TenantScoped, table=True):
    """A snapshot of a policy's rules. Never changes (a trigger refuses UPDATE and DELETE)."""

    __tablename__ = "policy_versions"
    __table_args__ = (sa.UniqueConstraint("org_id", "policy_id", "number", name="uq_policy_versions_number"),)

    id: str = Field(primary_key=True, max_length=40)
    org_id: str = Field(foreign_key="organizations.id", max_length=40)
    policy_id: str = Field(foreign_key="policies.id", max_length=40)
    number: int
    rules: list[dict[str, Any]] = Field(default_factory=list, sa_column=sa.Column(JSONB, nullable=False))
    note: str = Field(default="", max_length=2000)
    created_by: str | None = Field(default=None, max_length=40)
    created_at: datetime = timestamp_column()


class PolicyAttachmentInterval(SQLModel, TenantScoped, table=True):
    """When a policy was attached to an agent: from `attached_at` until `detached_at` (open while attached).
    The records an agent sent in an interval are the ones the policy evaluated (`Policy.analytics`)."""

    __tablename__ = "policy_attachment_intervals"
    __table_args__ = (sa.Index("ix_policy_attachment_intervals_policy", "org_id", "policy_id", "agent_id"),)

    id: str = Field(primary_key=True, max_length=40)
    org_id: str = Field(foreign_key="organizations.id", max_length=40)
    policy_id: str = Field(foreign_key="policies.id", max_length=40)
    agent_id: str = Field(foreign_key="agents.id", max_length=40)
    attached_at: datetime = timestamp_column()
    detached_at: datetime | None = optional_timestamp_column()


class PolicyAttachment(SQLModel, TenantScoped, table=True):
    __tablename__ = "policy_attachments"
    __table_args__ = (sa.Index("ix_policy_attachments_org_agent", "org_id", "agent_id"),)

    org_id: str = Field(primary_key=True, foreign_key="organizations.id", max_length=40)
    policy_id: str = Field(primary_key=True, foreign_key="policies.id", max_length=40)
    agent_id: str = Field(primary_key=True, foreign_key="agents.id", max_length=40)
    attached_at: datetime = timestamp_column()
    attached_by: str | None = Field(default=None, max_length=40)
