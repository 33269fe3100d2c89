"""The bounded queue and the background thread that batches records and sends them, with retries.

One lock guards the queue. `put` (the caller's thread) appends and, only when a batch is full, wakes the
sender; the sender also wakes every `flush_interval` on its own, so a lone record waits at most about twice
that. A batch goes out by count, by bytes or by age; it is retried with the same idempotency keys until the
server acknowledges it, refuses part of it for good (reported), or the client is closed past its drain time.

Every record has a sequence number, given under the lock in queue order; the sender settles records in that
order (acknowledged or dropped), which is what `flush` waits on.
"""

from __future__ import annotations

# imported now, never first in the sender thread: a fork during that import would leave the child with a
# half-imported module (httpcore is imported by httpx's first client; the idna codec by the first getaddrinfo)
import encodings.idna  # noqa: F401
import json
import logging
import os
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Literal, NamedTuple

import httpcore  # noqa: F401
import httpx

from agentrail._records import iso_utc, parse_ids

logger = logging.getLogger("agentrail")

Policy = Literal["block", "drop_oldest"]
DropReason = Literal[
    "queue_full",  # the queue was full (records and bytes bounded) and the policy let go of a record
    "rejected",  # the server refused the record for good (400: invalid; see `detail`)
    "too_large",  # the server refused it as too large (413) even alone
    "unauthorized",  # 401/403: the key is missing, wrong, revoked or not allowed to ingest
    "quota_exceeded",  # 402: the organisation's monthly record quota is used up
    "shutdown",  # still unacknowledged when the client closed (drain time over)
    "closed",  # logged after close()
]
RETRYABLE = {408, 425, 429, 500, 502, 503, 504}


@dataclass(frozen=True, slots=True)
class DropEvent:
    """Records the client gave up on. Passed to `on_drop`, counted in `stats().dropped`, and logged."""

    reason: DropReason
    count: int
    detail: str
    records: tuple[bytes, ...]  # each record's JSON as it would have been sent

    def idempotency_keys(self) -> list[str]:
        return [json.loads(r).get("idempotencyKey", "") for r in self.records]


@dataclass(slots=True)
class Stats:
    """Counters since the client was created (or, in a forked child, since the fork)."""

    queued: int = 0  # waiting in the queue now
    in_flight: int = 0  # taken by the sender, not yet settled
    logged: int = 0  # accepted into the queue
    acknowledged: int = 0  # the server answered that it holds them
    dropped: dict[str, int] = field(default_factory=dict)  # by reason
    truncated: int = 0  # records that had a field cut to the server's limits
    batches: int = 0  # requests that were acknowledged
    retries: int = 0  # requests retried (connection errors, timeouts, 408/429/5xx)
    last_error: str | None = None

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


class Item(NamedTuple):
    seq: int
    data: bytes  # the record's JSON, without occurredAt when `ts` is set, without agentId when `agent` is set
    ts: float | None
    agent: str | None  # an agent name, resolved to its id by the sender


@dataclass(slots=True)
class Settings:
    url: str
    api_key: str | None
    batch_records: int
    batch_bytes: int
    flush_interval: float
    max_queue_records: int
    max_queue_bytes: int
    policy: Policy
    block_ms: float
    drain_timeout: float
    request_timeout: float
    backoff_base: float
    backoff_max: float
    on_drop: Callable[[DropEvent], None] | None
    transport: httpx.BaseTransport | None = None


class _Resolver:
    """Agent names → ids, through the GraphQL API (an API key may read agents, not create them)."""

    QUERY = "query($q: String) { agents(filter: {search: $q}, first: 50) { edges { node { id name } } } }"

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}
        self.missing: dict[str, float] = {}  # name -> when it was last looked up in vain

    def resolve(self, http: httpx.Client, name: str, timeout: float) -> str | None:
        found = self.ids.get(name)
        if found is not None or time.monotonic() - self.missing.get(name, -1e9) < 60:
            return found
        try:
            answer = http.post("/graphql", json={"query": self.QUERY, "variables": {"q": name}}, timeout=timeout)
            edges = answer.json()["data"]["agents"]["edges"]
        except Exception:  # unreachable now: the record is sent with the name in metadata, not held back
            edges = []
        for edge in edges:
            if edge["node"]["name"].lower() == name.lower():
                self.ids[name] = edge["node"]["id"]
                return self.ids[name]
        if name not in self.missing:
            logger.warning(
                "agentrail: no agent named %r in the organisation; its records carry metadata.agentName "
                "(register the agent, or pass agent_id)",
                name,
            )
        self.missing[name] = time.monotonic()
        return None


_CORES: weakref.WeakSet[Core] = weakref.WeakSet()


# held while a sender makes its HTTP client (TLS contexts, certificates): a fork waits for it, so that the
# child never inherits a half-made one or a lock taken inside OpenSSL
_connecting = threading.Lock()


def _before_fork() -> None:
    _connecting.acquire()


def _after_fork_in_parent() -> None:
    _connecting.release()


def _after_fork_in_child() -> None:
    global _connecting
    _connecting = threading.Lock()
    for core in list(_CORES):
        core._reset_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)


class Core:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self._init_state()
        self._abandoned: list[httpx.Client] = []  # a parent's connections, never used nor closed in a child
        _CORES.add(self)

    # --- state (again in a forked child) ------------------------------------------------------------
    def _init_state(self) -> None:
        self.lock = threading.Lock()
        self._work = threading.Condition(self.lock)  # the sender waits here
        self._space = threading.Condition(self.lock)  # callers blocked on a full queue wait here
        self._settled = threading.Condition(self.lock)  # flush() waits here
        self._backoff = threading.Condition(self.lock)  # the sender's retry delay; only close() wakes it
        self.queue: deque[Item] = deque()
        self.queue_bytes = 0
        self.seq = 0
        self.first_at = 0.0  # monotonic time the oldest queued record arrived (approximately)
        self.inflight_first: int | None = None
        self.inflight_count = 0
        self.flush_wanted = False
        self.closing = False
        self.deadline = float("inf")  # when closing: monotonic time past which the sender gives up
        self.drop_ranges: list[tuple[int, int]] = []  # (first seq, last seq) of dropped records
        self.flush_mark = 0
        self.stats = Stats()
        self.thread: threading.Thread | None = None
        self.http: httpx.Client | None = None
        self.resolver = _Resolver()
        self._last_log: dict[str, tuple[float, int]] = {}  # reason -> (when last logged, drops since)
        self.stopped = threading.Event()

    def _reset_after_fork(self) -> None:
        # the parent's records stay the parent's to send; the child starts empty with fresh locks and
        # connections (those of the parent's pool are its sockets, shared after fork: never touched here)
        if self.http is not None:
            self._abandoned.append(self.http)
        closing = self.closing
        self._init_state()
        self.closing = closing

    # --- the caller's side ----------------------------------------------------------------------------
    def put(self, data: bytes, ts: float | None, agent: str | None) -> None:
        size = len(data)
        dropped: list[Item] = []
        refused = False
        with self.lock:
            if self.thread is None:
                self._start()
            if self.closing:
                refused = True
            else:
                s = self.s
                queue = self.queue
                if len(queue) >= s.max_queue_records or self.queue_bytes + size > s.max_queue_bytes:
                    if s.policy == "drop_oldest":
                        while queue and (
                            len(queue) >= s.max_queue_records or self.queue_bytes + size > s.max_queue_bytes
                        ):
                            old = queue.popleft()
                            self.queue_bytes -= len(old.data)
                            dropped.append(old)
                    else:
                        deadline = time.monotonic() + s.block_ms / 1000
                        while len(queue) >= s.max_queue_records or self.queue_bytes + size > s.max_queue_bytes:
                            left = deadline - time.monotonic()
                            if left <= 0 or self.closing:
                                refused = True
                                break
                            self._space.wait(left)
                if not refused:
                    self.seq += 1
                    if not queue:
                        self.first_at = time.monotonic()
                    queue.append(Item(self.seq, data, ts, agent))
                    self.queue_bytes += size
                    self.stats.logged += 1
                    if len(queue) >= s.batch_records or self.queue_bytes >= s.batch_bytes:
                        self._work.notify()
            if dropped:
                self._note_drop(dropped[0].seq, dropped[-1].seq, "queue_full", len(dropped))
            if refused:
                self.seq += 1
                reason: DropReason = "closed" if self.closing else "queue_full"
                self._note_drop(self.seq, self.seq, reason, 1)
                dropped.append(Item(self.seq, data, ts, agent))
        if dropped:
            why: DropReason = "closed" if refused and self.closing else "queue_full"
            self._report(why, dropped, "the queue is full" if why == "queue_full" else "the client is closed")

    # --- drops ----------------------------------------------------------------------------------------
    def _note_drop(self, first: int, last: int, reason: str, count: int) -> None:
        """Under the lock."""
        ranges = self.drop_ranges
        if ranges and ranges[-1][1] + 1 >= first and first >= ranges[-1][0]:
            ranges[-1] = (ranges[-1][0], max(last, ranges[-1][1]))
        else:
            ranges.append((first, last))
            if len(ranges) > 10_000:
                del ranges[: len(ranges) - 10_000]
        self.stats.dropped[reason] = self.stats.dropped.get(reason, 0) + count

    def _report(self, reason: DropReason, items: list[Item], detail: str) -> None:
        """Outside the lock: the log line (at most one per reason every 5 s, with the count since) and the
        callback (every time)."""
        now = time.monotonic()
        with self.lock:
            last, since = self._last_log.get(reason, (-1e9, 0))
            since += len(items)
            due = now - last >= 5 or reason == "shutdown"
            self._last_log[reason] = (now, 0) if due else (last, since)
            total = self.stats.dropped.get(reason, 0)
        if due:
            logger.error(
                "agentrail: dropped %d record(s) (%s: %s); %d dropped for this reason so far",
                since,
                reason,
                detail,
                total,
            )
        callback = self.s.on_drop
        if callback is not None:
            event = DropEvent(reason, len(items), detail, tuple(self._finish(i, resolve=False) for i in items))
            try:
                callback(event)
            except Exception:
                logger.exception("agentrail: the on_drop callback raised")

    def _log_pending_drops(self) -> None:
        """The drops counted but not yet logged (log lines are at most one per reason every 5 s)."""
        with self.lock:
            pending = {r: n for r, (_, n) in self._last_log.items() if n}
            for reason in pending:
                self._last_log[reason] = (time.monotonic(), 0)
            totals = dict(self.stats.dropped)
        for reason, since in pending.items():
            logger.error(
                "agentrail: dropped %d record(s) (%s); %d dropped for this reason so far",
                since,
                reason,
                totals.get(reason, 0),
            )

    # --- flush and close ------------------------------------------------------------------------------
    def _pending_through(self, target: int) -> bool:
        """Under the lock: is any record with seq ≤ target still unsettled?"""
        if self.inflight_first is not None and self.inflight_first <= target:
            return True
        return bool(self.queue) and self.queue[0].seq <= target

    def flush(self, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.lock:
            target = self.seq
            low, self.flush_mark = self.flush_mark, max(self.flush_mark, target)
            if self._pending_through(target):
                if self.thread is None:
                    self._start()
                self.flush_wanted = True
                self._work.notify()
            while self._pending_through(target):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._settled.wait(left)
            self.flush_wanted = False
            return not any(last > low and first <= target for first, last in self.drop_ranges)

    def begin_close(self, timeout: float | None) -> threading.Thread | None:
        """Stops taking records and sets the drain deadline (never later than one set before)."""
        drain = self.s.drain_timeout if timeout is None else timeout
        with self.lock:
            self.closing = True
            self.deadline = min(self.deadline, time.monotonic() + drain)
            self._work.notify_all()
            self._space.notify_all()
            self._backoff.notify_all()
            return self.thread

    def close(self, timeout: float | None) -> bool:
        """Stops taking records, sends what is queued within `timeout` (the drain time), then gives up on
        the rest (reported as `shutdown`). Never waits longer than the drain time plus a second."""
        thread = self.begin_close(timeout)
        drain = max(0.0, self.deadline - time.monotonic())
        ok = True
        if thread is not None and thread is not threading.current_thread():
            thread.join(drain + 1.0)
            ok = not thread.is_alive()
        with self.lock:
            ok = ok and not self.queue and self.inflight_first is None
            http = self.http if ok else None
            if ok:
                self.http = None
        if http is not None:
            http.close()
        self._log_pending_drops()
        return ok and not self.stats.dropped.get("shutdown")

    # --- the sender -----------------------------------------------------------------------------------
    def _start(self) -> None:
        """Under the lock. The HTTP client is made by the sender thread: never on the caller's."""
        self.thread = threading.Thread(target=self._run, name="agentrail-sender", daemon=True)
        self.thread.start()

    def _take(self) -> list[Item] | None:
        """Waits for a batch that is due and takes it; None when closed and empty."""
        s = self.s
        with self.lock:
            while True:
                n = len(self.queue)
                if n:
                    age = time.monotonic() - self.first_at
                    if (
                        n >= s.batch_records
                        or self.queue_bytes >= s.batch_bytes
                        or age >= s.flush_interval
                        or self.flush_wanted
                        or self.closing
                    ):
                        break
                    self._work.wait(s.flush_interval - age)
                elif self.closing:
                    return None
                else:
                    self._work.wait(s.flush_interval)
            batch: list[Item] = []
            size = 0
            while self.queue and len(batch) < s.batch_records:
                item = self.queue[0]
                if batch and size + len(item.data) > s.batch_bytes:
                    break
                self.queue.popleft()
                size += len(item.data)
                batch.append(item)
            self.queue_bytes -= size
            self.first_at = time.monotonic()
            self.inflight_first = batch[0].seq
            self.inflight_count = len(batch)
            self._space.notify_all()
            return batch

    def _connect(self) -> httpx.Client:
        with _connecting:
            return self._new_http_client()

    def _new_http_client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.s.url,
            headers={
                **({"X-API-Key": self.s.api_key} if self.s.api_key else {}),
                "User-Agent": "agentrail-python/0.1",
                "Content-Type": "application/json",
            },
            timeout=self.s.request_timeout,
            transport=self.s.transport,
        )

    def _run(self) -> None:
        http = self._connect()
        with self.lock:
            self.http = http
        try:
            while True:
                batch = self._take()
                if batch is None:
                    return
                try:
                    self._send(batch)
                except Exception as exc:  # a bug of ours: never lose the records silently
                    logger.exception("agentrail: sending a batch failed")
                    self._drop(batch, "rejected", f"client error: {exc!r}")
                with self.lock:
                    self.inflight_first = None
                    self.inflight_count = 0
                    self._settled.notify_all()
        finally:
            self.stopped.set()

    def _finish(self, item: Item, resolve: bool = True) -> bytes:
        """The record's JSON as sent: occurredAt (the call's time) and the agent's id put in."""
        data = item.data
        if item.agent is not None:
            agent_id = None
            if resolve and self.http is not None:
                agent_id = self.resolver.resolve(self.http, item.agent, timeout=min(5.0, self._time_left()))
            if agent_id is not None:
                data = b'{"agentId":"' + agent_id.encode() + b'",' + data[1:]
            else:
                record = json.loads(data)
                metadata = record.get("metadata") or {}
                record["metadata"] = {**metadata, "agentName": item.agent}
                data = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()
        if item.ts is not None:
            data = b'{"occurredAt":"' + iso_utc(item.ts).encode() + b'",' + data[1:]
        return data

    def _time_left(self) -> float:
        return max(0.05, self.deadline - time.monotonic())

    def _drop(self, items: list[Item], reason: DropReason, detail: str) -> None:
        if not items:
            return
        with self.lock:
            self._note_drop(items[0].seq, items[-1].seq, reason, len(items))
            self.stats.last_error = detail
        self._report(reason, items, detail)

    def _sleep(self, seconds: float) -> None:
        """Backoff that closing shortens: never past the drain deadline."""
        end = time.monotonic() + seconds
        with self.lock:
            while True:
                if self.closing:
                    end = min(end, self.deadline)
                left = end - time.monotonic()
                if left <= 0:
                    return
                self._backoff.wait(left)

    def _send(self, batch: list[Item]) -> None:
        bodies = {item.seq: self._finish(item) for item in batch}
        stack: list[list[Item]] = [batch]
        attempt = 0
        while stack:
            part = stack.pop()
            if self.closing and time.monotonic() >= self.deadline:
                left = [i for p in [part, *reversed(stack)] for i in p]
                self._drop(left, "shutdown", "the drain time at close ran out")
                return
            body = b"[" + b",".join(bodies[i.seq] for i in part) + b"]"
            assert self.http is not None
            timeout = self.s.request_timeout
            if self.closing:
                timeout = min(timeout, self._time_left())
            try:
                response = self.http.post("/api/v1/audit-logs/batch", content=body, timeout=timeout)
            except Exception as exc:  # network trouble (httpx.HTTPError), or anything else: retried, never lost
                attempt += 1
                self._retry_later(part, stack, attempt, None, f"{type(exc).__name__}: {exc}")
                continue
            status = response.status_code
            if status in (200, 201):
                ids = _json_ids(response)
                if ids is not None and len(ids) != len(part):
                    logger.warning("agentrail: the server answered %d ids for %d records", len(ids), len(part))
                attempt = 0
                with self.lock:
                    self.stats.acknowledged += len(part)
                    self.stats.batches += 1
                continue
            if status in RETRYABLE:
                attempt += 1
                self._retry_later(part, stack, attempt, _retry_after(response), f"HTTP {status}: {_message(response)}")
                continue
            attempt = 0
            message = _message(response)
            if status == 400:
                bad = _problem_indexes(response, len(part))
                if bad:
                    details = _problem_details(response)
                    for index in sorted(bad):
                        self._drop([part[index]], "rejected", details.get(index, message))
                    rest = [item for i, item in enumerate(part) if i not in bad]
                    if rest:
                        stack.append(rest)
                    continue
            if status in (400, 413) and len(part) > 1:
                # which record? halves, first half first (order kept): log2(n) more requests at most
                half = len(part) // 2
                stack.append(part[half:])
                stack.append(part[:half])
                continue
            self._drop(part, _reason(status), f"HTTP {status}: {message}")

    def _retry_later(
        self, part: list[Item], stack: list[list[Item]], attempt: int, retry_after: float | None, detail: str
    ) -> None:
        stack.append(part)
        with self.lock:
            self.stats.retries += 1
            self.stats.last_error = detail
        if attempt == 1 or attempt % 10 == 0:
            logger.warning("agentrail: sending %d record(s) failed (%s); retrying", len(part), detail)
        cap = min(self.s.backoff_max, self.s.backoff_base * 2 ** min(attempt - 1, 20))
        delay = random.uniform(cap / 2, cap)  # noqa: S311 - jitter, not security
        if retry_after is not None:
            delay = max(delay, retry_after * (1 + random.uniform(0, 0.1)))  # noqa: S311
        self._sleep(delay)


def _reason(status: int) -> DropReason:
    if status == 413:
        return "too_large"
    if status in (401, 403):
        return "unauthorized"
    if status == 402:
        return "quota_exceeded"
    return "rejected"


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _json_ids(response: httpx.Response) -> list[str | None] | None:
    return parse_ids(_json(response))


def _message(response: httpx.Response) -> str:
    body = _json(response)
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])[:500]
    return response.text[:200]


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _problems(response: httpx.Response) -> list[dict[str, Any]]:
    body = _json(response)
    problems = body.get("problems") if isinstance(body, dict) else None
    return [p for p in problems if isinstance(p, dict)] if isinstance(problems, list) else []


def _problem_indexes(response: httpx.Response, n: int) -> set[int]:
    found = {p.get("index") for p in _problems(response)}
    return {i for i in found if isinstance(i, int) and 0 <= i < n}


def _problem_details(response: httpx.Response) -> dict[int, str]:
    out: dict[int, str] = {}
    for p in _problems(response):
        index = p.get("index")
        if isinstance(index, int):
            text = f"{p.get('field') or 'record'} {p.get('message')}"
            out[index] = f"{out[index]}; {text}" if index in out else text
    return out
