"""File storage for generated exports and reports, reachable from every API node.

`stored_files` in PostgreSQL is the index and the truth for every file, whatever holds its bytes: which
organisation owns it, whether it is whole (a file that is not complete is never served) and when it
expires. The bytes go to one of two backends, named in the row's `storage` column:

- `postgres` (the default, `PostgresChunks`): chunks of `chunk_size` bytes, one row each in
  `stored_file_chunks`, each inserted in its own short transaction;
- `s3` (`S3Objects`, when a bucket is configured): one object per file, key `{prefix}{org_id}/{file_id}`,
  written by multipart upload and read by a streamed GET.

Either way a file of any size is written and served at constant memory and needs no shared disk. The
`FileWriter` buffers one part at a time and hands it to its backend's upload; leaving the block with an
exception deletes what was written. Writing the same file id again starts it over (a job retried after
a crash). Bytes are always removed before the row that points to them, so a failure leaves a row to retry
from, never an object that nothing points to.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import sqlalchemy as sa
import structlog
from sqlmodel import col

from app.db import SYSTEM, Database, utcnow
from app.files.models import POSTGRES, S3, StoredFile, StoredFileChunk
from app.unit_of_work import transaction

if TYPE_CHECKING:
    from app.settings import Settings

log = structlog.get_logger(__name__)

DEFAULT_CHUNK_SIZE = 1024 * 1024
S3_MIN_PART_SIZE = 5 * 1024 * 1024  # S3's minimum for every part of a multipart upload but the last
DEFAULT_S3_PART_SIZE = 8 * 1024 * 1024
S3_DELETE_BATCH = 1000  # DeleteObjects takes at most 1,000 keys
EXPIRED_BATCH = 1000  # expired rows handled per round of delete_expired

T = TypeVar("T")


async def expire_made_before(session: Any, before: datetime) -> int:
    """Marks the files of the session's organisation made before `before` as expired now (the file cron removes
    their bytes and rows): audit retention, once every record such a file can hold (an export, a report: records
    received before the file was made) is past the organisation's retention. Returns how many."""
    now = utcnow()
    result = await session.execute(
        sa.update(StoredFile)
        .where(
            col(StoredFile.created_at) < before,
            sa.or_(col(StoredFile.expires_at).is_(None), col(StoredFile.expires_at) > now),
        )
        .values(expires_at=now)
        .returning(col(StoredFile.id))
    )
    return len(result.all())


class StorageNotConfigured(RuntimeError):
    """A file's bytes are in a backend this process has no settings for (e.g. S3 files, no bucket)."""


# --- backends ------------------------------------------------------------------------------------
class Upload(Protocol):
    """The bytes of one file on their way into a backend: parts in order, then `finish` or `abort`."""

    async def part(self, data: bytes) -> None:
        """A full part (exactly the backend's `part_size` bytes)."""

    async def finish(self, data: bytes) -> None:
        """The last part (any size, possibly empty), after which the bytes are stored whole."""

    async def abort(self) -> None:
        """Give up: nothing of this upload stays behind."""


class Backend(Protocol):
    name: str
    part_size: int

    def prepare(self, file: StoredFile) -> None:
        """Fill in where the new file's bytes will go (`storage`, `object_key`) before its row is written."""

    def upload(self, file: StoredFile) -> Upload: ...

    def read(self, file: StoredFile) -> AsyncIterator[bytes]: ...

    async def remove(self, files: Sequence[StoredFile]) -> set[str]:
        """Remove the files' bytes (the rows stay for the caller); returns the ids whose bytes could not
        be removed, which must keep their rows."""


class PostgresChunks:
    """Bytes as rows of `stored_file_chunks`; they go with their `stored_files` row (ON DELETE CASCADE)."""

    name = POSTGRES

    def __init__(self, db: Database, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self.db = db
        self.part_size = chunk_size

    def prepare(self, file: StoredFile) -> None:
        file.storage = POSTGRES
        file.object_key = None

    def upload(self, file: StoredFile) -> _ChunkUpload:
        return _ChunkUpload(self.db, file)

    async def read(self, file: StoredFile) -> AsyncIterator[bytes]:
        """One chunk (one short query) at a time."""
        for seq in range(file.chunk_count):
            async with self.db.tenant_session(file.org_id) as session:
                data = (
                    await session.execute(
                        sa.select(col(StoredFileChunk.data)).where(
                            col(StoredFileChunk.file_id) == file.id, col(StoredFileChunk.seq) == seq
                        )
                    )
                ).scalar_one()
            yield data

    async def remove(self, files: Sequence[StoredFile]) -> set[str]:
        return set()  # the chunks are deleted with the row


class _ChunkUpload:
    def __init__(self, db: Database, file: StoredFile) -> None:
        self._db = db
        self._file = file
        self._seq = 0

    async def part(self, data: bytes) -> None:
        async with transaction(self._db, self._file.org_id) as session:
            await session.execute(
                sa.insert(StoredFileChunk).values(
                    file_id=self._file.id, seq=self._seq, org_id=self._file.org_id, data=data
                )
            )
        self._seq += 1

    async def finish(self, data: bytes) -> None:
        if data or self._seq == 0:  # an empty file is one empty chunk
            await self.part(data)

    async def abort(self) -> None:
        """Nothing to do: the writer deletes the row, and the chunks with it."""


class S3Objects:
    """Bytes as one object per file in an S3-compatible bucket (AWS S3, MinIO, R2, …).

    boto3 is synchronous; its calls run on a thread pool of this backend's own (botocore clients are
    thread-safe), sized like the client's connection pool, so a slow bucket never starves the event
    loop's default executor. The client is created on first use, in that pool: resolving credentials
    through the standard chain may wait on the network.
    """

    name = S3

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        addressing_style: str = "auto",
        part_size: int = DEFAULT_S3_PART_SIZE,
        read_size: int = DEFAULT_CHUNK_SIZE,
        max_concurrency: int = 16,
    ) -> None:
        if part_size < 1:
            raise ValueError("part_size must be positive")
        self.bucket = bucket
        self.prefix = prefix
        self.part_size = part_size
        self.read_size = read_size
        self._client_options: dict[str, Any] = {
            "endpoint_url": endpoint_url,
            "region_name": region,
            "aws_access_key_id": access_key_id,
            "aws_secret_access_key": secret_access_key,
        }
        self._addressing_style = addressing_style
        self._max_concurrency = max_concurrency
        self._executor = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="files-s3")
        self._client: Any = None
        self._client_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Objects:
        assert settings.files_s3_bucket is not None
        key_id, secret = settings.files_s3_access_key_id, settings.files_s3_secret_access_key
        return cls(
            bucket=settings.files_s3_bucket,
            prefix=settings.files_s3_prefix,
            endpoint_url=settings.files_s3_endpoint_url,
            region=settings.files_s3_region,
            access_key_id=key_id.get_secret_value() if key_id else None,
            secret_access_key=secret.get_secret_value() if secret else None,
            addressing_style=settings.files_s3_addressing_style,
            part_size=settings.files_s3_part_size,
            max_concurrency=settings.files_s3_max_concurrency,
        )

    def key(self, org_id: str, file_id: str) -> str:
        return f"{self.prefix}{org_id}/{file_id}"

    def _get_client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                config = Config(
                    max_pool_connections=self._max_concurrency,
                    retries={"mode": "standard", "max_attempts": 5},
                    s3={"addressing_style": self._addressing_style},
                )
                self._client = boto3.session.Session().client("s3", config=config, **self._client_options)
            return self._client

    async def call(self, method: str, **params: Any) -> Any:
        """One S3 API call (`put_object`, `get_object`, …) on this backend's threads."""
        return await self._run(lambda: getattr(self._get_client(), method)(**params))

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def prepare(self, file: StoredFile) -> None:
        file.storage = S3
        file.object_key = self.key(file.org_id, file.id)

    def upload(self, file: StoredFile) -> _MultipartUpload:
        assert file.object_key is not None
        return _MultipartUpload(self, file.object_key, file.content_type)

    async def read(self, file: StoredFile) -> AsyncIterator[bytes]:
        """The object streamed in pieces of `read_size` bytes: one GET, constant memory."""
        if file.size_bytes == 0:
            return
        response = await self.call("get_object", Bucket=self.bucket, Key=file.object_key)
        body = response["Body"]
        try:
            if response.get("ContentLength") != file.size_bytes:
                # the download's Content-Length is already promised: better a broken download than wrong bytes
                raise OSError(
                    f"stored file {file.id}: object is {response.get('ContentLength')} bytes, "
                    f"expected {file.size_bytes}"
                )
            while True:
                data = await self._run(lambda: body.read(self.read_size))
                if not data:
                    return
                yield data
        finally:
            body.close()

    async def remove(self, files: Sequence[StoredFile]) -> set[str]:
        by_key = {file.object_key: file.id for file in files if file.object_key}
        keys = list(by_key)
        failed: set[str] = set()
        for start in range(0, len(keys), S3_DELETE_BATCH):
            batch = keys[start : start + S3_DELETE_BATCH]
            response = await self.call(
                "delete_objects",
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
            )
            for error in response.get("Errors", []):
                log.warning("stored file object not deleted", key=error.get("Key"), code=error.get("Code"))
                if error.get("Key") in by_key:
                    failed.add(by_key[error["Key"]])
        return failed

    async def close(self) -> None:
        await asyncio.to_thread(self._executor.shutdown, wait=True)
        if self._client is not None:
            self._client.close()


class _MultipartUpload:
    """A file small enough for one part is one PutObject; a larger one a multipart upload, started with
    its first full part. Completing either replaces whatever object had the key."""

    def __init__(self, backend: S3Objects, key: str, content_type: str) -> None:
        self._s3 = backend
        self._key = key
        self._content_type = content_type
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    async def part(self, data: bytes) -> None:
        s3 = self._s3
        if self._upload_id is None:
            # declared up front, so the bucket checks each part's CRC32 and the complete request can name them
            response = await s3.call(
                "create_multipart_upload",
                Bucket=s3.bucket,
                Key=self._key,
                ContentType=self._content_type,
                ChecksumAlgorithm="CRC32",
            )
            self._upload_id = response["UploadId"]
        number = len(self._parts) + 1
        response = await s3.call(
            "upload_part",
            Bucket=s3.bucket,
            Key=self._key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=data,
            ChecksumAlgorithm="CRC32",
        )
        part = {"PartNumber": number, "ETag": response["ETag"]}
        if response.get("ChecksumCRC32"):
            part["ChecksumCRC32"] = response["ChecksumCRC32"]
        self._parts.append(part)

    async def finish(self, data: bytes) -> None:
        s3 = self._s3
        if self._upload_id is None:
            await s3.call("put_object", Bucket=s3.bucket, Key=self._key, Body=data, ContentType=self._content_type)
            return
        if data:
            await self.part(data)
        await s3.call(
            "complete_multipart_upload",
            Bucket=s3.bucket,
            Key=self._key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
        )
        self._upload_id = None  # complete: nothing left to abort

    async def abort(self) -> None:
        """Drops the unfinished multipart upload's parts; an object under the key goes with the file's row
        (`FileStore.delete`)."""
        s3 = self._s3
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            await s3.call("abort_multipart_upload", Bucket=s3.bucket, Key=self._key, UploadId=upload_id)


# --- the store -----------------------------------------------------------------------------------
class FileWriter:
    """`async with store.writer(...) as writer: await writer.write(data)`; `writer.file` afterwards.

    Buffers at most one part (the backend's `part_size`) beyond the data handed to one `write`, plus one
    part on its way to the backend: that upload (and the part's SHA-256, on a thread) runs while the caller
    produces the next part, so writing the file overlaps making it. Leaving the block with an exception
    deletes what was written.
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
        self._backend = store.backend
        self._org_id = org_id
        self._buffer = bytearray()
        self._digest = hashlib.sha256()
        self.file = StoredFile(
            id=file_id, org_id=org_id, filename=filename, content_type=content_type, expires_at=expires_at
        )
        self._backend.prepare(self.file)
        self._upload: Upload | None = None
        self._in_flight: asyncio.Task[None] | None = None  # the part being uploaded, at most one

    @property
    def bytes_written(self) -> int:
        return self.file.size_bytes + len(self._buffer)

    async def __aenter__(self) -> FileWriter:
        # a rewrite (the job runs again after a crash) starts from nothing: the old bytes, then the old row
        await self._store.delete(self._org_id, self.file.id)
        async with transaction(self._store.db, self._org_id) as session:
            session.add(self.file)
        self._upload = self._backend.upload(self.file)
        return self

    async def write(self, data: bytes) -> None:
        assert self._upload is not None, "use the writer as `async with`"
        self._buffer += data
        size = self._backend.part_size
        # strictly more than a part: the last part is never empty unless the whole file is
        while len(self._buffer) > size:
            part = bytes(self._buffer[:size])
            del self._buffer[:size]
            await self._settle()  # the previous part is stored (or its error raised) before the next starts
            self._count(part)
            self._in_flight = asyncio.create_task(self._send(part))

    async def _send(self, part: bytes) -> None:
        assert self._upload is not None
        await asyncio.gather(self._upload.part(part), asyncio.to_thread(self._digest.update, part))

    async def _settle(self) -> None:
        if self._in_flight is not None:
            in_flight, self._in_flight = self._in_flight, None
            await in_flight

    def _count(self, part: bytes) -> None:
        self.file.chunk_count += 1
        self.file.size_bytes += len(part)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            await self._discard()
            return
        try:
            await self._complete()
        except BaseException:
            await self._discard()
            raise

    async def _complete(self) -> None:
        assert self._upload is not None
        await self._settle()
        last = bytes(self._buffer)
        self._buffer.clear()
        await self._upload.finish(last)
        if last or self.file.chunk_count == 0:
            self._count(last)
            self._digest.update(last)
        self.file.sha256 = self._digest.hexdigest()
        self.file.complete = True
        async with transaction(self._store.db, self._org_id) as session:
            await session.execute(
                sa.update(StoredFile)
                .where(col(StoredFile.id) == self.file.id)
                .values(
                    size_bytes=self.file.size_bytes,
                    chunk_count=self.file.chunk_count,
                    sha256=self.file.sha256,
                    complete=True,
                )
            )

    async def _discard(self) -> None:
        assert self._upload is not None
        if self._in_flight is not None:
            self._in_flight.cancel()
            with contextlib.suppress(BaseException):
                await self._in_flight
            self._in_flight = None
        try:
            await self._upload.abort()
        finally:
            await self._store.delete(self._org_id, self.file.id)


class FileStore:
    """Writes new files to `backend`; reads and deletes each file through the backend its row names."""

    def __init__(self, db: Database, *, chunk_size: int = DEFAULT_CHUNK_SIZE, s3: S3Objects | None = None) -> None:
        self.db = db
        self.backends: dict[str, Backend] = {POSTGRES: PostgresChunks(db, chunk_size)}
        if s3 is not None:
            self.backends[S3] = s3
        self.backend: Backend = self.backends[S3 if s3 is not None else POSTGRES]

    @classmethod
    def from_settings(cls, db: Database, settings: Settings) -> FileStore:
        """PostgreSQL chunks, or an S3-compatible bucket when `files_s3_bucket` is set."""
        return cls(db, s3=S3Objects.from_settings(settings) if settings.files_s3_bucket else None)

    def _backend_of(self, file: StoredFile) -> Backend:
        backend = self.backends.get(file.storage)
        if backend is None:
            raise StorageNotConfigured(f"stored file {file.id} is in {file.storage!r} storage, which is not configured")
        return backend

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

    def chunks(self, file: StoredFile) -> AsyncIterator[bytes]:
        """The file's bytes, a piece at a time, from wherever they are stored."""
        return self._backend_of(file).read(file)

    async def delete(self, org_id: str, file_id: str) -> None:
        async with self.db.tenant_session(org_id) as session:
            file = await session.get(StoredFile, file_id)
        if file is None:
            return
        if await self._backend_of(file).remove([file]):
            raise OSError(f"stored file {file_id}: its bytes could not be removed")
        async with transaction(self.db, org_id) as session:
            await session.execute(sa.delete(StoredFile).where(col(StoredFile.id) == file_id))

    async def delete_expired(self, now: datetime | None = None) -> int:
        """Removes every organisation's expired files, bytes first, then rows, a batch at a time. A file
        whose bytes could not be removed (or whose storage is not configured here) keeps its row for a
        later run. Returns how many were removed."""
        now = now or utcnow()
        removed = 0
        skipped: set[str] = set()
        while True:
            async with self.db.system_session() as session:
                query = sa.select(StoredFile).where(col(StoredFile.expires_at) <= now)
                if skipped:
                    query = query.where(col(StoredFile.id).not_in(skipped))
                files = list((await session.execute(query.order_by(StoredFile.id).limit(EXPIRED_BATCH))).scalars())
            if not files:
                return removed
            by_storage: dict[str, list[StoredFile]] = {}
            for file in files:
                by_storage.setdefault(file.storage, []).append(file)
            kept: set[str] = set()
            for storage, group in by_storage.items():
                backend = self.backends.get(storage)
                if backend is None:
                    log.warning("expired files kept: storage not configured", storage=storage, files=len(group))
                    kept.update(file.id for file in group)
                    continue
                kept |= await backend.remove(group)
            ids = [file.id for file in files if file.id not in kept]
            if ids:
                async with transaction(self.db, SYSTEM) as session:
                    result = await session.execute(
                        sa.delete(StoredFile)
                        .where(col(StoredFile.id).in_(ids), col(StoredFile.expires_at) <= now)
                        .returning(col(StoredFile.id))
                    )
                    removed += len(result.all())
            skipped |= kept
            if len(files) < EXPIRED_BATCH:
                return removed

    async def close(self) -> None:
        s3 = self.backends.get(S3)
        if isinstance(s3, S3Objects):
            await s3.close()
