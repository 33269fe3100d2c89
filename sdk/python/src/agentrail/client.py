"""`Agentrail` (sync) and `AsyncAgentrail`: the same logging, tracing and queue; reading is sync or async."""

from __future__ import annotations

import asyncio
import atexit
import datetime as dt
import itertools
import os
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, ParamSpec, TypeVar

import httpx

from agentrail import _records, reading
from agentrail._core import _CORES, Core, DropEvent, Policy, Settings, Stats, logger
from agentrail._records import MAX_ACTION, MAX_JSON_BYTES, Oversize, dumps, fit, iso_value
from agentrail.reading import AlertStream, AsyncAlertStream
from agentrail.tracing import Span, _current, observe, open_span

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_URL = "http://127.0.0.1:8000"

_CLIENTS: weakref.WeakSet[_Base] = weakref.WeakSet()


@atexit.register
def _drain_at_exit() -> None:
    """At interpreter exit every open client sends what it holds, each within its drain time; the process
    is never held longer (the sender is a daemon thread, abandoned past that). Cores, not clients: a client
    dropped without close() is gone, but its sender and queue live on until here."""
    cores = list(_CORES)
    for core in cores:  # all start draining at once
        core.begin_close(None)
    for core in cores:
        core.close(None)


def _renew_prefixes_in_child() -> None:
    for client in list(_CLIENTS):
        client._new_prefixes()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_prefixes_in_child)


def _base_url(url: str | None) -> str:
    url = (url or os.environ.get("AGENTRAIL_URL") or DEFAULT_URL).rstrip("/")
    # the seed's documented base URL is `…/api/v1`: accept it
    return url[: -len("/api/v1")] if url.endswith("/api/v1") else url


def _prefix() -> str:
    return os.urandom(6).hex()


class _Base:
    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        agent: str | None = None,
        batch_size: int = 500,
        batch_bytes: int = 4 * 1024 * 1024,
        flush_interval: float = 0.5,
        max_queue_records: int = 100_000,
        max_queue_bytes: int = 64 * 1024 * 1024,
        queue_policy: Policy = "block",
        block_ms: float = 100.0,
        drain_timeout: float = 5.0,
        request_timeout: float = 10.0,
        backoff_base: float = 0.2,
        backoff_max: float = 30.0,
        on_drop: Callable[[DropEvent], None] | None = None,
        oversize: Oversize = "truncate",
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """`api_key` (else `AGENTRAIL_API_KEY`), `base_url` (else `AGENTRAIL_URL`, else
        http://127.0.0.1:8000; a trailing /api/v1 is accepted). `agent`: the default agent of every record,
        an agent id (`agent_…`) or a registered agent's name.

        Batching: a batch goes when it holds `batch_size` records (the server takes at most 1,000) or
        `batch_bytes`, or its oldest record waited `flush_interval` seconds. Queue: at most
        `max_queue_records` records and `max_queue_bytes` bytes; when full, `queue_policy="block"` makes
        `log()` wait up to `block_ms` for room and then drops the new record, `"drop_oldest"` drops the oldest
        queued records. Every drop is counted (`stats().dropped`), logged (logger `agentrail`) and passed to
        `on_drop`. `drain_timeout`: at `close()` and at exit, how long queued records may still take.
        `oversize`: a field above the server's limits is cut to them (`"truncate"`, noted in
        `metadata["agentrail.truncated"]`) or `log()` raises `RecordTooLarge` (`"error"`)."""
        if queue_policy not in ("block", "drop_oldest"):
            raise ValueError('queue_policy must be "block" or "drop_oldest"')
        if oversize not in ("truncate", "error"):
            raise ValueError('oversize must be "truncate" or "error"')
        if not 1 <= batch_size <= 1000:
            raise ValueError("batch_size must be between 1 and 1000 (the server's batch limit)")
        self.api_key = api_key or os.environ.get("AGENTRAIL_API_KEY")
        self.base_url = _base_url(base_url)
        self._agent = agent
        self._oversize: Oversize = oversize
        self._request_timeout = request_timeout
        self._transport = transport
        self._core = Core(
            Settings(
                url=self.base_url,
                api_key=self.api_key,
                batch_records=batch_size,
                batch_bytes=batch_bytes,
                flush_interval=flush_interval,
                max_queue_records=max_queue_records,
                max_queue_bytes=max_queue_bytes,
                policy=queue_policy,
                block_ms=block_ms,
                drain_timeout=drain_timeout,
                request_timeout=request_timeout,
                backoff_base=backoff_base,
                backoff_max=backoff_max,
                on_drop=on_drop,
                transport=transport,
            )
        )
        self._ids = itertools.count(1)
        self._new_prefixes()
        _CLIENTS.add(self)

    def _read_options(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "headers": {**({"X-API-Key": self.api_key} if self.api_key else {}), "User-Agent": "agentrail-python/0.1"},
            "timeout": self._request_timeout,
        }

    def _new_prefixes(self) -> None:
        # unique per process (again after fork): the idempotency keys and span ids of this process
        prefix = _prefix()
        self._key_prefix = f"sdk:{prefix}:"
        self._span_prefix = prefix

    def _new_span_id(self) -> str:
        return f"{self._span_prefix}{next(self._ids):x}"

    # --- logging --------------------------------------------------------------------------------------
    def log(
        self,
        action: str,
        *,
        prompt: str | None = None,
        response: str | None = None,
        metadata: dict[str, Any] | None = None,
        agent: str | None = None,
        agent_id: str | None = None,
        trace_id: str | None = None,
        span_id: str | None = None,
        parent_span_id: str | None = None,
        occurred_at: dt.datetime | str | None = None,
        duration_ms: float | None = None,
        status: str | None = None,
        idempotency_key: str | None = None,
        execution_id: str | None = None,
        verb: str | None = None,
        provider: str | None = None,
        risk_level: str | None = None,
        governance_status: str | None = None,
        dry_run: bool | None = None,
        idempotent: bool | None = None,
        args: Any = None,
        result: Any = None,
        tenant_id: str | None = None,
    ) -> str:
        """Queues one audit record and returns at once with its span id (pass it as another record's
        `parent_span_id`). Inside a span, `trace_id`, `parent_span_id` and `agent` default to the span's.
        `agent`: an agent id (`agent_…`) or a registered agent's name (resolved in the background)."""
        if not isinstance(action, str) or not action:
            raise ValueError("action is required (a non-empty string)")
        n = next(self._ids)
        current = _current.get()
        if current is not None:
            if trace_id is None:
                trace_id = current.trace_id
                if parent_span_id is None:
                    parent_span_id = current.span_id
            if agent is None and agent_id is None:
                agent = current.agent
        if span_id is None:
            span_id = f"{self._span_prefix}{n:x}"
        record: dict[str, Any] = {
            "action": action,
            "spanId": span_id,
            "idempotencyKey": idempotency_key or f"{self._key_prefix}{n:x}",
        }
        if trace_id is not None:
            record["traceId"] = trace_id
        if parent_span_id is not None:
            record["parentSpanId"] = parent_span_id
        if prompt is not None:
            record["prompt"] = prompt
        if response is not None:
            record["response"] = response
        if metadata is not None:
            record["metadata"] = metadata
        if duration_ms is not None:
            record["durationMs"] = duration_ms
        if status is not None:
            record["status"] = status
        if args is not None:
            record["args"] = args
        if result is not None:
            record["result"] = result
        if verb is not None:
            record["verb"] = verb
        if provider is not None:
            record["provider"] = provider
        if risk_level is not None:
            record["riskLevel"] = risk_level
        if execution_id is not None:
            record["executionId"] = execution_id
        if governance_status is not None:
            record["governanceStatus"] = governance_status
        if dry_run is not None:
            record["dryRun"] = dry_run
        if idempotent is not None:
            record["idempotent"] = idempotent
        if tenant_id is not None:
            record["tenantId"] = tenant_id
        if agent is None and agent_id is None:
            agent = self._agent
        name = None
        if agent_id is not None:
            record["agentId"] = agent_id
        elif agent is not None:
            if agent.startswith("agent_"):
                record["agentId"] = agent
            else:
                name = agent
        ts = None
        if occurred_at is None:
            ts = time.time()
        else:
            record["occurredAt"] = iso_value(occurred_at)
        data = dumps(record)
        if len(data) > MAX_JSON_BYTES or len(action) > MAX_ACTION:
            record, cut = fit(record, self._oversize)
            if cut:
                data = dumps(record)
                with self._core.lock:
                    self._core.stats.truncated += 1
                _records_logger_truncated(cut)
        self._core.put(data, ts, name)
        return span_id

    def stats(self) -> Stats:
        """A snapshot of the counters (queued, in flight, acknowledged, dropped by reason, …)."""
        core = self._core
        with core.lock:
            s = core.stats
            return Stats(
                queued=len(core.queue),
                in_flight=core.inflight_count,
                logged=s.logged,
                acknowledged=s.acknowledged,
                dropped=dict(s.dropped),
                truncated=s.truncated,
                batches=s.batches,
                retries=s.retries,
                last_error=s.last_error,
            )

    # --- tracing --------------------------------------------------------------------------------------
    def trace(self, name: str, *, agent: str | None = None, trace_id: str | None = None, **fields: Any) -> Span:
        """A new trace: its root span (action `name`), to use as `with client.trace(...) as run:` (or
        `async with`). Spans and records opened inside belong to it."""
        return open_span(self, name, root=True, agent=agent, trace_id=trace_id, **fields)

    def span(self, action: str, **fields: Any) -> Span:
        """A child span of the current one (a new trace's root when there is none): `with
        client.span("tool_use", verb="stripe:create_refund") as span: span.result = …`."""
        return open_span(self, action, root=False, **fields)

    def observe(
        self, action: str | None = None, *, capture_args: bool = True, capture_result: bool = True, **fields: Any
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorator: each call of a sync or async function is a span (action: the function's qualified
        name unless given), with its arguments as `args`, its return value as `result`, and an exception as
        `status: error` (re-raised)."""
        return observe(self, action, capture_args=capture_args, capture_result=capture_result, **fields)


def _records_logger_truncated(cut: dict[str, int]) -> None:
    logger.warning(
        "agentrail: a record was cut to the server's limits (%s); see metadata[%r]",
        ", ".join(f"{k}: {v} bytes" for k, v in cut.items()),
        _records.TRUNCATED_KEY,
    )


class Agentrail(_Base):
    """The synchronous client: `log()` never blocks on the network (a background thread sends), reading
    helpers block."""

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Sends what is queued now and waits until the server acknowledged it. True when every record logged
        since the previous flush (or since the start) was acknowledged; False on timeout or when any of them
        was dropped (see `stats()` and `on_drop`)."""
        return self._core.flush(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Sends what is queued within `timeout` (default: `drain_timeout`), then stops. True when all of it
        was acknowledged. Also runs at interpreter exit."""
        ok = self._core.close(timeout)
        _CLIENTS.discard(self)
        return ok

    # --- reading --------------------------------------------------------------------------------------
    _http: httpx.Client | None = None
    _http_pid = 0

    def _reader(self) -> httpx.Client:
        if self._http is None or self._http_pid != os.getpid():  # (a forked child makes its own)
            self._http, self._http_pid = httpx.Client(**self._read_options()), os.getpid()
        return self._http

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> Any:
        """Runs a GraphQL operation with the client's key; returns `data`. Raises GraphQLError (with `code`,
        the first error's `extensions.code`); RATE_LIMITED and UNAVAILABLE are retried after `retryAfter`."""
        return reading.graphql(self._reader(), query, variables)

    def get_trace(self, trace_id: str) -> dict[str, Any] | None:
        """The whole trace (`trace(traceId)`): summary and its spans, flat, each with its `depth`."""
        trace: dict[str, Any] | None = self.graphql(reading.TRACE, {"traceId": trace_id})["trace"]
        return trace

    def audit_logs(
        self, filter: dict[str, Any] | None = None, *, page_size: int = 100, limit: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Audit records (`auditLogs(filter)`, newest first), fetched a page at a time as you iterate."""
        return reading.audit_log_pages(self._reader(), filter, page_size, limit)

    def alerts(
        self, filter: dict[str, Any] | None = None, *, after: str | None = None, reconnect: bool = True
    ) -> AlertStream:
        """A live iterator over the `alerts` subscription (from `after`, a cursor, when given; then live). It
        reconnects after a lost connection and resumes after the last alert it gave (`stream.cursor`)."""
        return AlertStream(reading.ws_url(self.base_url), self.api_key, filter, after, reconnect)

    def __enter__(self) -> Agentrail:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncAgentrail(_Base):
    """The asyncio client: the same `log()`, `trace()`, `span()` and `observe()` (spans are `async with`
    too), and awaitable `flush`, `aclose` and reading helpers. The records are sent by the same kind of
    background thread: the event loop never waits on ingest."""

    # `timeout` as the sync client's (the same API): the wait runs in a thread, not on the loop
    async def flush(self, timeout: float | None = 10.0) -> bool:  # noqa: ASYNC109
        return await asyncio.to_thread(self._core.flush, timeout)

    async def aclose(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        ok = await asyncio.to_thread(self._core.close, timeout)
        _CLIENTS.discard(self)
        if self._ahttp is not None:
            await self._ahttp.aclose()
            self._ahttp = None
        return ok

    _ahttp: httpx.AsyncClient | None = None

    def _areader(self) -> httpx.AsyncClient:
        if self._ahttp is None:
            self._ahttp = httpx.AsyncClient(**self._read_options())
        return self._ahttp

    async def graphql(self, query: str, variables: dict[str, Any] | None = None) -> Any:
        """As `Agentrail.graphql`."""
        return await reading.agraphql(self._areader(), query, variables)

    async def get_trace(self, trace_id: str) -> dict[str, Any] | None:
        """As `Agentrail.get_trace`."""
        trace: dict[str, Any] | None = (await self.graphql(reading.TRACE, {"traceId": trace_id}))["trace"]
        return trace

    def audit_logs(
        self, filter: dict[str, Any] | None = None, *, page_size: int = 100, limit: int | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """`async for record in client.audit_logs(...)`: as `Agentrail.audit_logs`."""
        return reading.aaudit_log_pages(self._areader(), filter, page_size, limit)

    def alerts(
        self, filter: dict[str, Any] | None = None, *, after: str | None = None, reconnect: bool = True
    ) -> AsyncAlertStream:
        """`async for alert in client.alerts()`: as `Agentrail.alerts`."""
        return AsyncAlertStream(reading.ws_url(self.base_url), self.api_key, filter, after, reconnect)

    async def __aenter__(self) -> AsyncAgentrail:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
