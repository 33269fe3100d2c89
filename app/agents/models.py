"""Tables of the agents domain."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.db import TenantScoped, json_column, optional_timestamp_column, timestamp_column

NAME_UNIQUE_INDEX = "ux_agents_org_id_lower_name"


class Agent(SQLModel, TenantScoped, table=True):
    """An agent of the organisation. Deleting is soft (`deleted_at`): its audit records keep pointing at it,
    and its name becomes free again (the name is unique among the organisation's non-deleted agents)."""

    __tablename__ = "agents"
    __table_args__ = (
        sa.Index("ix_agents_org_id_created_at", "org_id", "created_at", "id"),
        sa.Index(
            NAME_UNIQUE_INDEX,
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
    metadata_: dict[str, Any] = json_column(sa_column_kwargs={"name": "metadata"})
    created_at: datetime = timestamp_column()
    updated_at: datetime = timestamp_column()
    deleted_at: datetime | None = optional_timestamp_column()
    last_seen_at: datetime | None = optional_timestamp_column()
