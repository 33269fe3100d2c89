"""Tables of the sso domain."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.db import TenantScoped, optional_timestamp_column, timestamp_column


class SsoProvider(SQLModel, TenantScoped, table=True):
    """An organisation's OpenID provider. The client secret is stored sealed (AES-GCM, bound to the organisation)."""

    __tablename__ = "sso_providers"

    org_id: str = Field(primary_key=True, foreign_key="organizations.id", max_length=40)
    issuer: str = Field(max_length=2048)
    client_id: str = Field(max_length=500)
    client_secret_sealed: str = Field(max_length=2000)
    default_role: str = Field(default="member", max_length=20)
    enabled: bool = True
    created_at: datetime = timestamp_column()
    updated_at: datetime = timestamp_column()


class SsoDomain(SQLModel, TenantScoped, table=True):
    """An email domain an organisation claims: once verified (a token served at the domain's well-known URL),
    a new person with an address there who signs in through the provider joins with the default role."""

    __tablename__ = "sso_domains"
    __table_args__ = (sa.UniqueConstraint("org_id", "domain", name="uq_sso_domains_org_domain"),)

    id: str = Field(primary_key=True, max_length=40)
    org_id: str = Field(foreign_key="organizations.id", max_length=40)
    domain: str = Field(max_length=253)
    verification_token: str = Field(max_length=100)
    verified_at: datetime | None = optional_timestamp_column()
    created_at: datetime = timestamp_column()


class SsoLogin(SQLModel, table=True):
    """One sign-in in flight: its state (stored hashed), nonce and PKCE verifier; used once, 10 minutes.
    Not a tenant table: the callback finds it by its state before anything else is known."""

    __tablename__ = "sso_logins"

    id: str = Field(primary_key=True, max_length=40)
    state_hash: str = Field(max_length=64, sa_column_kwargs={"unique": True})
    org_id: str = Field(foreign_key="organizations.id", max_length=40)
    nonce: str = Field(max_length=100)
    code_verifier: str = Field(max_length=200)
    redirect_uri: str = Field(max_length=2048)
    created_at: datetime = timestamp_column()
    expires_at: datetime = timestamp_column()
    used_at: datetime | None = optional_timestamp_column()
