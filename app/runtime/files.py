"""File storage for generated exports and reports, reachable from every API node.

Files live in PostgreSQL by default, split into chunks of `chunk_size` bytes (one row each), so a file
of any size is written and served at constant memory and needs no shared disk. A writer inserts each
chunk in its own short transaction and marks the file complete at the end; a file that is not complete
is never served. Writing the same file id again starts it over (a job retried after a crash).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import datetime
from types import TracebackType

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.db import Database, TenantScoped, optional_timestamp_column, timestamp_column, utcnow

DEFAULT_CHUNK_SIZE = 1024 * 1024


class StoredFile(SQLModel, TenantScoped, table=True):
    """One stored file: what it is and whether it is whole. Its bytes are in `stored_file_chunks`."""

    __tablename__ = "stored_files"

    id: str = Field(primary_key=True, max_length=40)
    org_id: str = Field(foreign_key="organizations.id", index=True, max_length=40)
    filename: str = Field(max_length=255)
    content_type: str = Field(max_length=128)
    size_bytes: int = Field(default=0, sa_type=sa.BigInteger)
    chunk_count: int = 0
    sha256: str | None = Field(default=None, max_length=64)
    complete: bool = False
    created_at: datetime = timestamp_column()
    expires_at: datetime | None = optional_timestamp_column(index=True)


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


class FileWriter:
    """`async with store.writer(...) as writer: await writer.write(data)`; `writer.file` afterwards.

    Buffers at most one chunk. Leaving the block with an exception deletes what was written.
    """

    def __init__(
        self,
        store: FileStore,
        org_id: str,
        file_id: str,
        *,
        filename: str,
        content_type: str,
        expires_at: datetime | None,
    ) -> None:
        self._store = store
        self._org_id = org_id
        self._buffer = bytearray()
        self._digest = hashlib.sha256()
        self.file = StoredFile(
            id=file_id, org_id=org_id, filename=filename, content_type=content_type, expires_at=expires_at
        )

    @property
    def bytes_written(self) -> int:
        return self.file.size_bytes + len(self._buffer)

    async def __aenter__(self) -> FileWriter:
        async with self._store.db.tenant_session(self._org_id) as session:
            # a rewrite (the job runs again after a crash) starts from nothing
            await session.execute(sa.delete(StoredFile).where(StoredFile.id == self.file.id))
            session.add(self.file)
            await session.commit()
        return self

    async def write(self, data: bytes) -> None:
        self._buffer += data
        size = self._store.chunk_size
        while len(self._buffer) >= size:
            chunk = bytes(self._buffer[:size])
            del self._buffer[:size]
            await self._flush(chunk)

    async def _flush(self, chunk: bytes) -> None:
        self._digest.update(chunk)
        async with self._store.db.tenant_session(self._org_id) as session:
            await session.execute(
                sa.insert(StoredFileChunk).values(
                    file_id=self.file.id, seq=self.file.chunk_count, org_id=self._org_id, data=chunk
                )
            )
            await session.commit()
        self.file.chunk_count += 1
        self.file.size_bytes += len(chunk)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            await self._store.delete(self._org_id, self.file.id)
            return
        if self._buffer or self.file.chunk_count == 0:
            await self._flush(bytes(self._buffer))
            self._buffer.clear()
        self.file.sha256 = self._digest.hexdigest()
        self.file.complete = True
        async with self._store.db.tenant_session(self._org_id) as session:
            await session.execute(
                sa.update(StoredFile)
                .where(StoredFile.id == self.file.id)
                .values(
                    size_bytes=self.file.size_bytes,
                    chunk_count=self.file.chunk_count,
                    sha256=self.file.sha256,
                    complete=True,
                )
            )
            await session.commit()


class FileStore:
    def __init__(self, db: Database, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self.db = db
        self.chunk_size = chunk_size

    def writer(
        self,
        org_id: str,
        file_id: str,
        *,
        filename: str,
        content_type: str,
        expires_at: datetime | None = None,
    ) -> FileWriter:
        return FileWriter(self, org_id, file_id, filename=filename, content_type=content_type, expires_at=expires_at)

    async def get(self, org_id: str, file_id: str) -> StoredFile | None:
        """The file if it is complete and not expired; None otherwise (also for another organisation's id)."""
        async with self.db.tenant_session(org_id) as session:
            file = await session.get(StoredFile, file_id)
        if file is None or not file.complete:
            return None
        if file.expires_at is not None and file.expires_at <= utcnow():
            return None
        return file

    async def chunks(self, file: StoredFile) -> AsyncIterator[bytes]:
        """The file's bytes, one chunk (one short query) at a time."""
        for seq in range(file.chunk_count):
            async with self.db.tenant_session(file.org_id) as session:
                data = (
                    await session.execute(
                        sa.select(StoredFileChunk.data).where(
                            StoredFileChunk.file_id == file.id, StoredFileChunk.seq == seq
                        )
                    )
                ).scalar_one()
            yield data

    async def delete(self, org_id: str, file_id: str) -> None:
        async with self.db.tenant_session(org_id) as session:
            await session.execute(sa.delete(StoredFile).where(StoredFile.id == file_id))
            await session.commit()

    async def delete_expired(self, now: datetime | None = None) -> int:
        """Removes every organisation's expired files (their chunks go with them). Returns how many."""
        async with self.db.system_session() as session:
            result = await session.execute(
                sa.delete(StoredFile).where(StoredFile.expires_at <= (now or utcnow())).returning(StoredFile.id)
            )
            removed = len(result.all())
            await session.commit()
        return removed
