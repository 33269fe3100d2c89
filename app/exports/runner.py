"""The export job itself: streams the data set from a server-side cursor, formats each batch and writes it to
the file store chunk by chunk, so memory stays flat whatever the size. Between batches it reports progress,
which also tells it whether the job was cancelled (or taken over) and it must stop.

The count and the rows are read in one REPEATABLE READ transaction: the file holds exactly the records that
existed when the export started, and `totalRecords` matches them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator
from datetime import timedelta
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import structlog

from app.audit import proofs
from app.db import utcnow
from app.exports import service
from app.exports.datasets import DATASETS, Dataset, envelope_metadata, public_filter, query_from_json
from app.exports.formats import FILE_TYPES, JsonArrayItems, ParquetSink, csv_header, json_envelope_head
from app.files.store import FileWriter
from app.runtime.resources import Runtime

log = structlog.get_logger(__name__)


class ExportStopped(Exception):
    """The job was cancelled, or another attempt took it over: this attempt stops and keeps nothing."""


class _Progress:
    """Heartbeat (which also notices a cancel or a takeover) and a live progress update, at most every
    `interval` seconds: one UPDATE and commit a second, not one per batch."""

    def __init__(self, runtime: Runtime, claim: service.Claim) -> None:
        self.runtime = runtime
        self.claim = claim
        self.rows = 0
        self.total: int | None = None
        self.interval = runtime.settings.export_progress_interval_seconds
        self._last_published = 0.0

    async def report(self, rows: int) -> None:
        self.rows += rows
        now = time.monotonic()
        if now - self._last_published >= self.interval:
            self._last_published = now
            if not await service.heartbeat(self.runtime.db, self.claim, row_count=self.rows, total=self.total):
                raise ExportStopped
            await service.publish(self.runtime, self.claim.job)  # RUNNING, with the progress just recorded


class _Format:
    """Turns the batches of one of the data set's readers into the bytes of one file format."""

    def __init__(self, dataset: Dataset, out: FileWriter, metadata: dict[str, Any], runtime: Runtime) -> None:
        self.dataset, self.out, self.metadata, self.settings = dataset, out, metadata, runtime.settings

    def batches(self, session: Any, query: Any, batch_size: int) -> AsyncGenerator[Any, None]:
        raise NotImplementedError

    @staticmethod
    def rows(batch: Any) -> int:
        """Rows in a batch: CSV and JSON readers give (rows, bytes)."""
        return int(batch[0])

    async def begin(self) -> None:
        return None

    async def write(self, batch: Any) -> None:
        raise NotImplementedError

    async def end(self) -> None:
        return None


class _Csv(_Format):
    def batches(self, session: Any, query: Any, batch_size: int) -> AsyncGenerator[Any, None]:
        return self.dataset.csv_rows(session, query)

    async def begin(self) -> None:
        await self.out.write(csv_header(self.dataset.header))

    async def write(self, batch: Any) -> None:
        await self.out.write(batch[1])


class _Json(_Format):
    """The envelope, its records as the items of `records`."""

    def batches(self, session: Any, query: Any, batch_size: int) -> AsyncGenerator[Any, None]:
        return self.dataset.json_lines(session, query)

    async def begin(self) -> None:
        self.items = JsonArrayItems()
        await self.out.write(json_envelope_head(self.dataset.kind, self.metadata, self.dataset.api_version))

    async def write(self, batch: Any) -> None:
        await self.out.write(self.items.convert(batch[1]))

    async def end(self) -> None:
        await self.out.write(b"]}")


class _Ndjson(_Json):
    async def begin(self) -> None:
        return None

    async def write(self, batch: Any) -> None:
        await self.out.write(batch[1])

    async def end(self) -> None:
        return None


class _Parquet(_Format):
    """Row groups of `export_parquet_row_group_rows`, built from Arrow batches (compact, not Python objects)
    and drained from the sink into the file store after each one."""

    @staticmethod
    def rows(batch: Any) -> int:
        return int(batch.num_rows)

    def batches(self, session: Any, query: Any, batch_size: int) -> AsyncGenerator[Any, None]:
        # a cursor waits for each FETCH: read ahead while this batch is encoded (COPY readers run ahead already)
        return _prefetched(self.dataset.parquet_batches(session, query, batch_size=batch_size))

    async def begin(self) -> None:
        self.sink = ParquetSink()
        self.schema = self.dataset.parquet_schema
        self.writer = pq.ParquetWriter(self.sink, self.schema, compression="zstd")
        self.pending: list[pa.RecordBatch] = []
        self.pending_rows = 0

    async def write(self, batch: Any) -> None:
        if batch.num_rows:
            self.pending.append(batch)
            self.pending_rows += batch.num_rows
        if self.pending_rows >= self.settings.export_parquet_row_group_rows:
            await self._flush()

    async def _flush(self) -> None:
        if self.pending:
            table = pa.Table.from_batches(self.pending, schema=self.schema)
            self.writer.write_table(table, row_group_size=max(self.pending_rows, 1))
            self.pending, self.pending_rows = [], 0
        await self.out.write(self.sink.drain())

    async def end(self) -> None:
        await self._flush()
        self.writer.close()
        await self.out.write(self.sink.drain())


async def _prefetched(batches: AsyncGenerator[Any, None], depth: int = 2) -> AsyncGenerator[Any, None]:
    """Reads the next batches while the current one is formatted and written: PostgreSQL works on the next
    FETCH (on another core) instead of waiting for this process. At most `depth` batches wait in memory."""
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=depth)
    done = object()

    async def produce() -> None:
        try:
            async with contextlib.aclosing(batches):
                async for batch in batches:
                    await queue.put(batch)
        except Exception as exc:
            await queue.put(exc)
            return
        await queue.put(done)

    producer = asyncio.create_task(produce())
    try:
        while (item := await queue.get()) is not done:
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        if not producer.done():
            producer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await producer


class _Bundle(_Format):
    """includeProofs: the proof bundle of the filter's window (app.audit.proofs.bundle_parts: its header, then the
    records of the chain in lists), in the job's format; `agentrail-verify` reads each of them."""

    def batches(self, session: Any, query: Any, batch_size: int) -> AsyncGenerator[Any, None]:
        return proofs.bundle_parts(
            session,
            occurred_from=query.occurred_from,
            occurred_to=query.occurred_to,
            stream=self.dataset.proof_stream,
        )

    @staticmethod
    def rows(batch: Any) -> int:
        return 0 if isinstance(batch, dict) else len(batch)


class _BundleNdjson(_Bundle):
    async def write(self, batch: Any) -> None:
        await self.out.write(proofs.bundle_ndjson(batch))


class _BundleJson(_Bundle):
    async def begin(self) -> None:
        self.json = proofs.BundleJson(self.dataset.kind, self.metadata)

    async def write(self, batch: Any) -> None:
        await self.out.write(self.json.convert(batch))

    async def end(self) -> None:
        await self.out.write(self.json.end())


class _BundleParquet(_Bundle, _Parquet):
    """A row per record (chain_index, header, content, sealed); the bundle's header as the file's key-value
    metadata `agentrail-proof-bundle` (JSON)."""

    async def begin(self) -> None:
        self.sink = ParquetSink()
        self.pending, self.pending_rows = [], 0

    async def write(self, batch: Any) -> None:
        if isinstance(batch, dict):
            self.schema = BUNDLE_PARQUET_SCHEMA.with_metadata({BUNDLE_PARQUET_KEY: orjson.dumps(batch)})
            self.writer = pq.ParquetWriter(self.sink, self.schema, compression="zstd")
            return
        columns = (
            [r.chain_index for r in batch],
            [r.header.decode() for r in batch],
            [r.content.decode() for r in batch],
            [r.sealed.decode() for r in batch],
        )
        await _Parquet.write(self, pa.RecordBatch.from_arrays([pa.array(c) for c in columns], schema=self.schema))


BUNDLE_PARQUET_KEY = b"agentrail-proof-bundle"
BUNDLE_PARQUET_SCHEMA = pa.schema(
    [("chain_index", pa.int64()), ("header", pa.string()), ("content", pa.string()), ("sealed", pa.string())]
)

FORMATS: dict[str, type[_Format]] = {"CSV": _Csv, "JSON": _Json, "NDJSON": _Ndjson, "PARQUET": _Parquet}
PROOF_WRITERS: dict[str, type[_Format]] = {"JSON": _BundleJson, "NDJSON": _BundleNdjson, "PARQUET": _BundleParquet}


async def run_export(runtime: Runtime, org_id: str, job_id: str) -> str:
    """Runs one attempt of the job; returns what happened (for the worker's log)."""
    claim = await service.claim(runtime, org_id, job_id)
    if claim is None:
        return "not claimed (finished, cancelled, or running elsewhere)"
    job = claim.job
    await service.publish(runtime, job)
    dataset = DATASETS[job.dataset]
    extension, content_type = FILE_TYPES[job.format]
    started = utcnow()
    expires_at = started + timedelta(hours=runtime.settings.export_retention_hours)
    progress = _Progress(runtime, claim)
    assert job.file_id is not None
    try:
        async with runtime.files.writer(
            org_id,
            job.file_id,
            filename=dataset.filename(org_id, started, extension),
            content_type=content_type,
            expires_at=expires_at,
        ) as out:
            await _write(runtime, job, dataset, out, progress, exported_at=started)
    except ExportStopped:
        log.info("export stopped: cancelled or taken over", job_id=job_id)
        return "stopped"
    except asyncio.CancelledError:
        # the worker is shutting down (or the job was aborted): hand the job back at once
        await asyncio.shield(service.release(runtime.db, claim))
        raise
    except Exception as exc:
        log.exception("export failed", job_id=job_id)
        await service.mark_failed(runtime, claim, f"the export failed: {type(exc).__name__}")
        return "failed"
    if not await service.mark_ready(
        runtime, claim, row_count=progress.rows, size_bytes=out.file.size_bytes, expires_at=expires_at
    ):
        await runtime.files.delete(org_id, job.file_id)
        return "stopped"
    return f"ready: {progress.rows} rows"


async def _write(
    runtime: Runtime, job: Any, dataset: Dataset, out: FileWriter, progress: _Progress, *, exported_at: Any
) -> None:
    query = query_from_json(dataset, job.filter)
    async with runtime.db.tenant_session(job.org_id) as session:
        await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        total = await dataset.count(session, query)
        progress.total = total
        metadata = envelope_metadata(
            dataset,
            exported_at=exported_at,
            query=query,
            total=total,
            fmt=job.format,
            filters=public_filter(job.filter),
        )
        if job.include_proofs:
            metadata["includeProofs"] = True
        writer = (PROOF_WRITERS if job.include_proofs else FORMATS)[job.format](dataset, out, metadata, runtime)
        await writer.begin()
        await progress.report(0)
        batches = writer.batches(session, query, runtime.settings.export_batch_rows)
        async with contextlib.aclosing(batches):  # stopping early stops the reader before the session closes
            async for batch in batches:
                await writer.write(batch)
                await progress.report(writer.rows(batch))
        await writer.end()
        await session.rollback()
