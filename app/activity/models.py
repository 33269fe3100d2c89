"""Tables of the activity domain."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.db import TenantScoped, json_column, timestamp_column


class ActivityEvent(SQLModel, TenantScoped, table=True):
    """One change a person or key made to the organisation. Immutable (a trigger refuses UPDATE and
    DELETE) and checksummed like audit records; the actor's name and email are kept as they were."""

    __tablename__ = "activity_events"
    __table_args__ = (
        sa.Index("ix_activity_events_org_id_occurred_at", "org_id", "occurred_at", "id"),
        sa.Index("ix_activity_events_org_target", "org_id", "target_type", "target_id"),
        sa.Index("ix_activity_events_org_actor", "org_id", "actor_id", "occurred_at"),
        sa.Index("uq_activity_events_org_chain", "org_id", "chain_index", unique=True),
    )

    id: str = Field(primary_key=True, max_length=40)
    org_id: str = Field(foreign_key="organizations.id", max_length=40)
    actor_type: str = Field(max_length=20)  # user | api_key | system
    actor_id: str | None = Field(default=None, max_length=40)
    actor_name: str | None = Field(default=None, max_length=200)
    actor_email: str | None = Field(default=None, max_length=320)
    action: str = Field(max_length=80)  # e.g. api_key.created
    target_type: str | None = Field(default=None, max_length=40)
    target_id: str | None = Field(default=None, max_length=80)
    target_name: str | None = Field(default=None, max_length=200)
    metadata_: dict[str, Any] = json_column(sa_column_kwargs={"name": "metadata"})
    occurred_at: datetime = timestamp_column()
    source_ip: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, max_length=300)
    checksum: str | None = Field(default=None, max_length=80)  # the record hash; a legacy checksum before the chain
    # the chain (app/activity/chain.py), set when the event is flushed, under the organisation's activity lock
    chain_index: int | None = Field(default=None, sa_type=sa.BigInteger, nullable=False)
    content_hash: bytes | None = Field(default=None, sa_type=sa.LargeBinary, nullable=False)
    entry_hash: bytes | None = Field(default=None, sa_type=sa.LargeBinary, nullable=False)
