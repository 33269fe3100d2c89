"""Tables of plan usage: the plan each organisation is on (with the Stripe subscription state that sets it,
written by `app.billing`) and the records it wrote per month."""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.db import TenantScoped, optional_timestamp_column, timestamp_column


class BillingAccount(SQLModel, TenantScoped, table=True):
    """An organisation's plan and Stripe subscription state, as last told by a (newer) signed webhook.

    Created on first use (checkout, portal or a webhook); an organisation without a row is on the free plan.
    `subscription_event_at` / `invoice_event_at` are the `created` times of the newest events applied, so a
    late, older event never undoes a newer one.
    """

    __tablename__ = "billing_accounts"
    __table_args__ = (sa.Index("ix_billing_accounts_stripe_customer_id", "stripe_customer_id"),)

    org_id: str = Field(primary_key=True, foreign_key="organizations.id", max_length=40)
    plan: str = Field(default="free", max_length=20, sa_column_kwargs={"server_default": "free"})
    stripe_customer_id: str | None = Field(default=None, max_length=255)
    stripe_subscription_id: str | None = Field(default=None, max_length=255)
    stripe_price_id: str | None = Field(default=None, max_length=255)
    status: str | None = Field(default=None, max_length=32)  # Stripe's subscription status; None: never subscribed
    current_period_end: datetime | None = optional_timestamp_column()
    cancel_at_period_end: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    subscription_event_at: datetime | None = optional_timestamp_column()
    payment_failed: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    invoice_event_at: datetime | None = optional_timestamp_column()
    created_at: datetime = timestamp_column()
    updated_at: datetime = timestamp_column()


class UsageCounter(SQLModel, TenantScoped, table=True):
    """Records written per organisation and calendar month (UTC). Incremented in the same transaction as the
    records it counts, so it is exact: a rolled-back batch counts nothing, an idempotent replay counts nothing."""

    __tablename__ = "usage_counters"

    org_id: str = Field(primary_key=True, foreign_key="organizations.id", max_length=40)
    period_start: date = Field(primary_key=True)
    records: int = Field(default=0, sa_type=sa.BigInteger, nullable=False, sa_column_kwargs={"server_default": "0"})
    updated_at: datetime = timestamp_column()
