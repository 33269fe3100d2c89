"""Fault fixtures: a stack (API on a real uvicorn, in-process worker) on its own Redis, which a test may kill.

The shared servers of the suite are never killed: the stack's Redis is an embedded one of its own (the same
port on restart, where clients reconnect), its PostgreSQL the suite's (a test that stops PostgreSQL starts its
own, see test_database_outage.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn

from app.main import create_app
from app.runtime.embedded import EmbeddedRedis
from app.runtime.resources import Runtime
from app.runtime.websocket import FanoutWebSocketProtocol
from app.settings import Settings
from support import free_port


async def scalar(runtime: Runtime, sql: str, **params: Any) -> Any:
    """One value read straight from PostgreSQL (the counts the fault tests assert), outside any tenant session."""
    async with runtime.db.engine.connect() as conn:
        return (await conn.execute(sa.text(sql), params)).scalar()


async def what_waits(runtime: Runtime) -> str:
    """For a timeout's message: the database's sessions that are not idle (from a fresh snapshot), and where
    every job and request task of this process is suspended."""
    async with runtime.db.engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.text(
                    "SELECT pid, state, wait_event_type, wait_event, now() - xact_start AS in_transaction, "
                    "left(query, 100) AS query FROM pg_stat_activity WHERE datname = current_database() "
                    "AND state <> 'idle' AND pid <> pg_backend_pid()"
                )
            )
        ).all()
    lines = [f"sessions: {[tuple(r) for r in rows]}"]
    for task in asyncio.all_tasks():
        frames = []
        coro: Any = task.get_coro()
        while coro is not None:
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
            if frame is not None and ("/app/" in frame.f_code.co_filename or "/workers/" in frame.f_code.co_filename):
                frames.append(f"{frame.f_code.co_filename.rsplit('/', 2)[-1]}:{frame.f_lineno}")
            coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None)
        if frames:
            lines.append(f"{task.get_name()}: {' > '.join(frames)}")
    return "\n".join(lines)


async def until(check: Any, timeout: float, what: str) -> None:
    """Polls `check()` until it is true; fails naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


@dataclass
class Stack:
    settings: Settings
    runtime: Runtime
    base: str  # host:port of the API
    http: httpx.AsyncClient
    redis: EmbeddedRedis
    redis_port: int
    worker: asyncio.Task[None] | None = None

    def kill_redis(self) -> None:
        self.redis.kill()

    def start_redis(self) -> None:
        self.redis.start(self.redis_port)

    def start_worker(self) -> None:
        from workers.settings import run_worker

        self.worker = asyncio.create_task(run_worker(self.runtime), name="fault-worker")

    async def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.worker
            self.worker = None


@contextlib.asynccontextmanager
async def running_stack(
    settings: Settings, database_url: str, data_dir: Path, **overrides: Any
) -> AsyncIterator[Stack]:
    redis = EmbeddedRedis(data_dir)
    redis_url = redis.start()
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    own = settings.model_copy(
        update={
            "redis_url": redis_url,
            "webhook_allow_private_targets": True,
            "worker_heartbeat_seconds": 0.5,
            "worker_stale_seconds": 3.0,
            **overrides,
        }
    )
    runtime = await Runtime.connect(
        own, database_url=database_url, redis_url=redis_url, secret_key=own.secret_key.get_secret_value()
    )
    app = create_app(own, runtime=runtime)
    api_port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=api_port, lifespan="on", log_config=None, ws=FanoutWebSocketProtocol
    )
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    base = f"127.0.0.1:{api_port}"
    stack = Stack(own, runtime, base, httpx.AsyncClient(base_url=f"http://{base}", timeout=30), redis, port)
    try:
        yield stack
    finally:
        await stack.stop_worker()
        await stack.http.aclose()
        server.should_exit = True
        await serving
        await runtime.close()
        redis.stop()


@pytest.fixture
async def stack(runtime: Runtime, settings: Settings, database_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    """Depends on `runtime` so that the tables are emptied first, like every other test's."""
    async with running_stack(settings, database_url, tmp_path) as running:
        yield running
