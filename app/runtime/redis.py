"""Redis client and the pub/sub broadcaster that carries live events between API nodes."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.errors import SubscriberTooSlowError

log = structlog.get_logger(__name__)


def reconnecting() -> dict[str, Any]:
    """Client options shared by every Redis connection of the process: a command that meets a connection
    broken by a Redis restart is sent again once on a fresh one, instead of failing (the pool would otherwise
    hand out each dead connection once)."""
    return {
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    }


def create_redis(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, decode_responses=False, health_check_interval=30, **reconnecting())


_OVERFLOW = object()


@dataclass(frozen=True)
class Gap:
    """Given to a subscriber that asked for it (`subscribe(channel, gaps=True)`) when the pub/sub connection
    was lost and is subscribed again: messages published in between (since `lost_at`) never reached this
    process. The subscriber re-reads them from PostgreSQL, where every event is a row first."""

    lost_at: datetime


class Broadcaster:
    """One Redis pub/sub connection per process, fanned out to any number of local subscribers.

    A subscriber gets an asyncio queue per channel; messages published on any node reach it.
    A slow subscriber's queue is bounded: when it overflows, that subscriber is dropped (its iterator raises
    SubscriberTooSlowError, which every subscription reports as SUBSCRIBER_TOO_SLOW) rather than letting memory
    grow or slowing the others; clients then resume with a cursor.
    """

    def __init__(self, redis: aioredis.Redis, *, queue_size: int = 1000) -> None:
        self._redis = redis
        self._queue_size = queue_size
        # subscribe confirmations are read: after a reconnect, one tells that a channel is live again
        self._pubsub = redis.pubsub(ignore_subscribe_messages=False)
        self._subscribers: dict[str, set[asyncio.Queue[Any]]] = defaultdict(set)
        self._wants_gaps: set[asyncio.Queue[Any]] = set()
        self._lost_at: dict[str, datetime] = {}  # channel → the last good read before its connection was lost
        self._last_read_at = datetime.now(UTC)
        # channels Redis has confirmed: a second confirmation means the connection was lost and subscribed again
        # (redis-py does that itself on reconnecting, sometimes without an error reaching us)
        self._confirmed: set[str] = set()
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def publish(self, channel: str, message: bytes) -> None:
        await self._redis.publish(channel, message)

    async def publish_many(self, messages: list[tuple[str, bytes]]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for channel, message in messages:
                pipe.publish(channel, message)
            await pipe.execute()

    @contextlib.asynccontextmanager
    async def subscribe(self, channel: str, *, gaps: bool = False) -> AsyncIterator[AsyncIterator[Any]]:
        """`async with broadcaster.subscribe(ch) as messages: async for m in messages: ...`

        The subscription is active when the context is entered, so a caller can subscribe first
        and then replay history without a gap. With `gaps`, the iterator also yields a `Gap` after the
        connection to Redis was lost and restored (see `Gap`).
        """
        queue: asyncio.Queue[Any] = asyncio.Queue(self._queue_size)
        if gaps:
            self._wants_gaps.add(queue)
        async with self._lock:
            first = not self._subscribers[channel]
            self._subscribers[channel].add(queue)
            if first:
                await self._pubsub.subscribe(channel)
            if self._reader is None or self._reader.done():
                self._reader = asyncio.create_task(self._read(), name="broadcaster-reader")
        try:
            yield self._iterate(queue)
        finally:
            self._wants_gaps.discard(queue)
            async with self._lock:
                self._subscribers[channel].discard(queue)
                if not self._subscribers[channel]:
                    del self._subscribers[channel]
                    with contextlib.suppress(Exception):
                        await self._pubsub.unsubscribe(channel)

    @staticmethod
    async def _iterate(queue: asyncio.Queue[Any]) -> AsyncIterator[bytes]:
        while True:
            item = await queue.get()
            if item is None:
                return
            if item is _OVERFLOW:
                raise SubscriberTooSlowError()
            yield item

    async def _read(self) -> None:
        while True:
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._lost_at:
                    log.warning("pub/sub connection lost; reconnecting", error=type(exc).__name__)
                for lost in self._confirmed:
                    self._lost_at.setdefault(lost, self._last_read_at)
                await asyncio.sleep(0.5)
                continue
            previous_read_at, self._last_read_at = self._last_read_at, datetime.now(UTC)
            if message is None:
                if not self._subscribers:
                    await asyncio.sleep(0.05)
                continue
            channel = message["channel"].decode() if isinstance(message["channel"], bytes) else message["channel"]
            if message["type"] != "message":
                if message["type"] == "subscribe":
                    if channel in self._confirmed:
                        self._gap(channel, self._lost_at.pop(channel, previous_read_at))
                    self._confirmed.add(channel)
                elif message["type"] == "unsubscribe":
                    self._confirmed.discard(channel)
                    self._lost_at.pop(channel, None)
                continue
            for queue in list(self._subscribers.get(channel, ())):
                try:
                    queue.put_nowait(message["data"])
                except asyncio.QueueFull:
                    log.warning("dropping a slow subscriber", channel=channel)
                    self._subscribers[channel].discard(queue)
                    with contextlib.suppress(asyncio.QueueEmpty):
                        queue.get_nowait()
                    queue.put_nowait(_OVERFLOW)

    def _gap(self, channel: str, lost_at: datetime) -> None:
        """The channel is subscribed again after a lost connection: its gap-aware subscribers are told."""
        log.info("pub/sub channel subscribed again after a lost connection", channel=channel)
        for queue in list(self._subscribers.get(channel, ())):
            if queue in self._wants_gaps:
                with contextlib.suppress(asyncio.QueueFull):  # a full queue overflows with the next message
                    queue.put_nowait(Gap(lost_at))

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        for queues in self._subscribers.values():
            for queue in queues:
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(None)
        self._subscribers.clear()
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()
