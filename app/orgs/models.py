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
    sso_required: bool = False  # members sign in through the organisation's identity provider (owners may still)


class User(SQLModel, table=True):
    """A person, who may belong to several organisations (`Membership`). Not a tenant table: a person is nobody's
    row alone. Email is unique across the service because sign-in is by email alone."""

    __tablename__ = "users"

    id: str = Field(primary_key=True, max_length=40)
    email: str = Field(max_length=320, sa_column_kwargs={"unique": True})
    name: str = Field(max_length=200)
    password_hash: str = Field(max_length=512)
    notification_preferences: dict[str, Any] = json_column()
    created_at: datetime = timestamp_column()
    updated_at: datetime = timestamp_column()
    last_org_id: str | None = Field(default=None, max_length=40)  # where sign-in lands
    email_verified_at: datetime | None = optional_timestamp_column()


class Membership(SQLModel, TenantScoped, table=True):
    """A person in an organisation, with their role there."""

    __tablename__ = "memberships"
    __table_args__ = (
        sa.UniqueConstraint("org_id", "user_id", name="uq_memberships_org_user"),
        sa.Index("ix_memberships_user_id", "user_id"),
    )

    id: str = Field(primary_key=True, max_length=40)
    org_id: str = Field(foreign_key="organizations.id", max_length=40)
    user_id: str = Field(foreign_key="users.id", max_length=40)
    role: str = Field(default=Role.MEMBER.value, max_length=20)
    joined_at: datetime = timestamp_column()
    last_active_at: datetime | None = optional_timestamp_column()


class Invitation(SQLModel, TenantScoped, table=True):
    """An invitation to join an organisation: only the SHA-256 of its single-use token is stored."""

    __tablename__ = "invitations"
    __table_args__ = (sa.Index("ix_invitations_org_id_created_at", "org_id", "created_at"),)

    id: str = Field(primary_key=True, max_length=40)
    org_id: str = Field(foreign_key="organizations.id", max_length=40)
    email: str = Field(max_length=320)
    role: str = Field(max_length=20)
    token_hash: str = Field(max_length=64, sa_column_kwargs={"unique": True})
    invited_by: str | None = Field(default=None, foreign_key="users.id", max_length=40)
    created_at: datetime = timestamp_column()
    expires_at: datetime = timestamp_column()
    accepted_at: datetime | None = optional_timestamp_column()
    accepted_by: str | None = Field(default=None, max_length=40)
    revoked_at: datetime | None = optional_timestamp_column()


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


class SignInSession(SQLModel, table=True):
    """A signed-in browser or script: its refresh tokens rotate (`generation`), each access token names it
    (`sid`), and ending it ends them all. Reusing an old refresh token ends it too (the family is revoked).
    A person's, not a tenant's: `org_id` is the organisation it is signed in to."""

    __tablename__ = "sign_in_sessions"
    __table_args__ = (sa.Index("ix_sign_in_sessions_user_id", "user_id", "created_at"),)

    id: str = Field(primary_key=True, max_length=40)
    user_id: str = Field(foreign_key="users.id", max_length=40)
    org_id: str = Field(foreign_key="organizations.id", max_length=40)
    salt: str = Field(max_length=64)  # refresh tokens are MACs over (id, generation, salt)
    generation: int = 0
    created_at: datetime = timestamp_column()
    last_used_at: datetime = timestamp_column()
    expires_at: datetime = timestamp_column()
    revoked_at: datetime | None = optional_timestamp_column()
    revoked_reason: str | None = Field(default=None, max_length=100)
    user_agent: str | None = Field(default=None, max_length=500)
    ip_address: str | None = Field(default=None, max_length=100)
    method: str = Field(default="password", max_length=20)  # password | invitation | sso | reset


class UserToken(SQLModel, table=True):
    """A single-use token sent by email (password reset, email verification): only its SHA-256 is stored."""

    __tablename__ = "user_tokens"
    __table_args__ = (sa.Index("ix_user_tokens_user_id", "user_id", "purpose"),)

    id: str = Field(primary_key=True, max_length=40)
    user_id: str = Field(foreign_key="users.id", max_length=40)
    purpose: str = Field(max_length=20)  # reset | verify
    token_hash: str = Field(max_length=64, sa_column_kwargs={"unique": True})
    created_at: datetime = timestamp_column()
    expires_at: datetime = timestamp_column()
    used_at: datetime | None = optional_timestamp_column()
