"""Tables of the file store: `stored_files` (the index and the truth for every file) and, for the
`postgres` backend, `stored_file_chunks` (its bytes)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.db import TenantScoped, optional_timestamp_column, timestamp_column

POSTGRES = "postgres"
S3 = "s3"


class StoredFile(SQLModel, TenantScoped, table=True):
    """One stored file: what it is, whether it is whole, and where its bytes are (`storage`)."""

    __tablename__ = "stored_files"

    id: str = Field(primary_key=True, max_length=40)
    org_id: str = Field(foreign_key="organizations.id", index=True, max_length=40)
    filename: str = Field(max_length=255)
    content_type: str = Field(max_length=128)
    size_bytes: int = Field(default=0, sa_type=sa.BigInteger)
    chunk_count: int = 0  # chunk rows (postgres) or parts uploaded (s3)
    sha256: str | None = Field(default=None, max_length=64)
    complete: bool = False
    created_at: datetime = timestamp_column()
    expires_at: datetime | None = optional_timestamp_column(index=True)
    storage: str = Field(default=POSTGRES, max_length=16)
    object_key: str | None = Field(default=None, max_length=1024)


class StoredFileChunk(SQLModel, TenantScoped, table=True):
    __tablename__ = "stored_file_chunks"

    file_id: str = Field(
        sa_column=sa.Column(
            sa.String(40), sa.ForeignKey("stored_files.id", ondelete="CASCADE"), primary_key=True, nullable=False
        )
    )
    seq: int = Field(primary_key=True)
    org_id: str = Field(foreign_key="organizations.id", max_length=40)
    data: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))
