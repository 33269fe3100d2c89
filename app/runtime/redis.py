"""Redis client and the pub/sub broadcaster that carries live events between API nodes."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
import structlog

from app.errors import SubscriberTooSlowError

log = structlog.get_logger(__name__)


def create_redis(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, decode_responses=False, health_check_interval=30)


_OVERFLOW = object()


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
        self._pubsub = redis.pubsub(ignore_subscribe_messages=True)
        self._subscribers: dict[str, set[asyncio.Queue[Any]]] = defaultdict(set)
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
    async def subscribe(self, channel: str) -> AsyncIterator[AsyncIterator[bytes]]:
        """`async with broadcaster.subscribe(ch) as messages: async for m in messages: ...`

        The subscription is active when the context is entered, so a caller can subscribe first
        and then replay history without a gap.
        """
        queue: asyncio.Queue[Any] = asyncio.Queue(self._queue_size)
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
            except Exception:
                log.exception("pub/sub connection failed; reconnecting")
                await asyncio.sleep(0.5)
                continue
            if message is None:
                if not self._subscribers:
                    await asyncio.sleep(0.05)
                continue
            channel = message["channel"].decode() if isinstance(message["channel"], bytes) else message["channel"]
            for queue in list(self._subscribers.get(channel, ())):
                try:
                    queue.put_nowait(message["data"])
                except asyncio.QueueFull:
                    log.warning("dropping a slow subscriber", channel=channel)
                    self._subscribers[channel].discard(queue)
                    with contextlib.suppress(asyncio.QueueEmpty):
                        queue.get_nowait()
                    queue.put_nowait(_OVERFLOW)

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
