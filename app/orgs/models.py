"""Tables of the orgs domain."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.db import TenantScoped, json_column, optional_timestamp_column, timestamp_column
from app.principal import Role


class Organization(SQLModel, table=True):
    __tablename__ = "organizations"

    id: str = Field(primary_key=True, max_length=40)
    name: str = Field(max_length=200)
    created_at: datetime = timestamp_column()


class User(SQLModel, TenantScoped, table=True):
    """A person. Email is unique across the service because sign-in is by email alone."""

    __tablename__ = "users"
    __table_args__ = (sa.Index("ix_users_org_id", "org_id"),)

    id: str = Field(primary_key=True, max_length=40)
    org_id: str = Field(foreign_key="organizations.id", max_length=40)
    email: str = Field(max_length=320, sa_column_kwargs={"unique": True})
    name: str = Field(max_length=200)
    password_hash: str = Field(max_length=512)
    role: str = Field(default=Role.MEMBER.value, max_length=20)
    notification_preferences: dict[str, Any] = json_column()
    created_at: datetime = timestamp_column()
    updated_at: datetime = timestamp_column()


class ApiKey(SQLModel, TenantScoped, table=True):
    """An agent credential. Only the SHA-256 of the secret is stored; `prefix` is for display."""

    __tablename__ = "api_keys"
    __table_args__ = (sa.Index("ix_api_keys_org_id_created_at", "org_id", "created_at"),)

    id: str = Field(primary_key=True, max_length=40)
    org_id: str = Field(foreign_key="organizations.id", max_length=40)
    name: str = Field(max_length=200)
    prefix: str = Field(max_length=32)
    secret_hash: str = Field(max_length=64, sa_column_kwargs={"unique": True})
    created_by: str | None = Field(default=None, foreign_key="users.id", max_length=40)
    created_at: datetime = timestamp_column()
    last_used_at: datetime | None = optional_timestamp_column()
    revoked_at: datetime | None = optional_timestamp_column()
    # what the key may do (app.principal.Scope values) and, when set, the only agents it may write records for
    scopes: list[str] = Field(
        default_factory=lambda: ["full"], sa_column=sa.Column(sa.ARRAY(sa.String(20)), nullable=False)
    )
    agent_ids: list[str] | None = Field(default=None, sa_column=sa.Column(sa.ARRAY(sa.String(40)), nullable=True))
