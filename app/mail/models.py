"""Tables of the mail domain."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.db import optional_timestamp_column, timestamp_column

# PENDING ─claim─▶ CLAIMED ─(just before the message is handed over)─▶ SENDING ─accepted─▶ SENT
#   ▲                 │ lease expired (the worker died before sending): claimable again
#   └─refused 4xx / server down, attempts left─┘          SENDING, lease expired: UNCERTAIN (never resent)
#                     refused 5xx, or no attempts left: FAILED
PENDING, CLAIMED, SENDING, SENT, FAILED, UNCERTAIN = "PENDING", "CLAIMED", "SENDING", "SENT", "FAILED", "UNCERTAIN"


class OutboxEmail(SQLModel, table=True):
    """One email to send. Not a tenant table: a password reset comes before any organisation is known; `org_id`
    says whose it is when there is one. The bodies (which carry single-use links) are cleared once sent."""

    __tablename__ = "email_outbox"
    __table_args__ = (
        sa.Index("ix_email_outbox_due", "status", "next_attempt_at"),
        sa.Index("ix_email_outbox_org_id", "org_id", "created_at"),
    )

    id: str = Field(primary_key=True, max_length=40)
    org_id: str | None = Field(default=None, max_length=40)
    user_id: str | None = Field(default=None, max_length=40)
    template: str = Field(max_length=40)
    to_address: str = Field(max_length=320)
    subject: str = Field(max_length=500)
    body_text: str | None = Field(default=None, sa_type=sa.Text)
    body_html: str | None = Field(default=None, sa_type=sa.Text)
    message_id: str = Field(max_length=200)  # the Message-ID header, the same on every attempt
    status: str = Field(default=PENDING, max_length=20)
    attempt_count: int = 0
    next_attempt_at: datetime = timestamp_column()
    lease_expires_at: datetime | None = optional_timestamp_column()
    claim_token: str | None = Field(default=None, max_length=40)
    last_error: str | None = Field(default=None, max_length=1000)
    created_at: datetime = timestamp_column()
    sent_at: datetime | None = optional_timestamp_column()
