"""The process's connections to the outside, created once and shared by API and worker."""

from __future__ import annotations

from dataclasses import dataclass

from arq import ArqRedis
from arq.connections import RedisSettings
from redis.asyncio import ConnectionPool, Redis

from app.db import Database
from app.files.store import FileStore
from app.integrity import Signer
from app.runtime.redis import Broadcaster, create_redis, reconnecting
from app.runtime.secrets import resolve_signing_key
from app.settings import Settings

ARQ_QUEUE = "agentrail:queue"


def arq_redis_settings(redis_url: str) -> RedisSettings:
    settings = RedisSettings.from_dsn(redis_url)
    options = reconnecting()
    settings.retry, settings.retry_on_error = options["retry"], options["retry_on_error"]
    return settings


@dataclass
class Runtime:
    settings: Settings
    db: Database
    redis: Redis
    broadcaster: Broadcaster
    queue: ArqRedis
    secret_key: str
    redis_url: str
    files: FileStore
    signer: Signer  # signs audit digests (app.runtime.secrets.resolve_signing_key)

    @classmethod
    async def connect(cls, settings: Settings, *, database_url: str, redis_url: str, secret_key: str) -> Runtime:
        db = Database(
            database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            statement_timeout_ms=settings.statement_timeout_ms,
        )
        redis = create_redis(redis_url)
        # connects on first use, so the API starts (and /readyz reports) while Redis is still down
        queue = ArqRedis(ConnectionPool.from_url(redis_url, **reconnecting()), default_queue_name=ARQ_QUEUE)
        return cls(
            settings=settings,
            db=db,
            redis=redis,
            broadcaster=Broadcaster(redis, queue_size=settings.subscriber_queue_size),
            queue=queue,
            secret_key=secret_key,
            redis_url=redis_url,
            files=FileStore.from_settings(db, settings),
            signer=Signer(resolve_signing_key(settings)),
        )

    async def close(self) -> None:
        await self.broadcaster.close()
        await self.queue.aclose()
        await self.redis.aclose()
        await self.files.close()
        await self.db.dispose()
