"""Tables of the billing domain."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.db import timestamp_column


class StripeEvent(SQLModel, table=True):
    """Each Stripe event id, stored when it is processed: a replayed delivery is acknowledged and skipped.

    Not tenant-scoped: events arrive before an organisation is known (and some never map to one);
    `org_id` records the organisation it was applied to, if any.
    """

    __tablename__ = "stripe_events"

    id: str = Field(primary_key=True, max_length=255)
    type: str = Field(max_length=100)
    created: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False)  # the event's own time
    org_id: str | None = Field(default=None, max_length=40)
    outcome: str = Field(default="received", max_length=32)  # applied | stale | ignored | unknown_org
    received_at: datetime = timestamp_column()
