"""Test fixtures: real PostgreSQL and Redis (embedded by default; DATABASE_URL / REDIS_URL when set).

With DATABASE_URL, the suite creates its own database next to the one named (and drops it at the end),
so it never touches your data. With REDIS_URL, it uses that Redis database and flushes it between tests.
Migrations run once per session; every test starts with empty tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import structlog
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from app.db import to_async_url
from app.models import metadata
from app.runtime import migrations
from app.runtime.embedded import EmbeddedPostgres, EmbeddedRedis
from app.runtime.resources import Runtime
from app.settings import Settings
from support import TEST_SECRET

# structlog's defaults (the suite does not call configure_logging), but tracebacks plain: its default renders
# them with rich, with every frame's source and local variables, which takes a second or more per logged
# exception on a loaded machine (a fault test's request during a Redis outage logs several) and would show
# secrets held in locals
structlog.configure(
    processors=[
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.StackInfoRenderer(),
        structlog.dev.set_exc_info,
        structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=False),
        structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback),
    ]
)


# --- servers -----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("agentrail-data")


@pytest.fixture(scope="session")
def redis_url(data_dir: Path) -> Iterator[str]:
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    server = EmbeddedRedis(data_dir)
    url = server.start()
    yield url
    server.stop()


@pytest.fixture(scope="session")
def database_url(data_dir: Path) -> Iterator[str]:
    if not os.environ.get("DATABASE_URL"):
        server = EmbeddedPostgres(data_dir)
        url = server.start()
        asyncio.run(migrations.upgrade(url))
        yield url
        server.stop()
        return
    admin_url = make_url(to_async_url(os.environ["DATABASE_URL"]))
    name = f"{admin_url.database or 'agentrail'}_test_{os.getpid()}"
    assert re.fullmatch(r"[A-Za-z0-9_]+", name)
    asyncio.run(_admin(admin_url, f'CREATE DATABASE "{name}"'))
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    asyncio.run(migrations.upgrade(url))
    yield url
    asyncio.run(_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _admin(url: Any, statement: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def settings(database_url: str, redis_url: str, data_dir: Path) -> Settings:
    return Settings(
        env="test",
        database_url=database_url,
        redis_url=redis_url,
        data_dir=data_dir,
        secret_key=TEST_SECRET,
        log_json=False,
    )


@pytest.fixture(scope="session")
async def runtime(settings: Settings, database_url: str, redis_url: str) -> AsyncIterator[Runtime]:
    rt = await Runtime.connect(settings, database_url=database_url, redis_url=redis_url, secret_key=TEST_SECRET)
    yield rt
    await rt.close()


@pytest.fixture(scope="session")
async def app(settings: Settings, runtime: Runtime) -> AsyncIterator[Any]:
    from app.main import create_app

    application = create_app(settings, runtime=runtime)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(autouse=True)
async def clean_state(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Empty tables and Redis before each test that uses the servers."""
    if "runtime" in request.fixturenames:
        runtime: Runtime = request.getfixturevalue("runtime")
        await _truncate_all(runtime)
        await runtime.redis.flushdb()
    yield


async def _truncate_all(runtime: Runtime) -> None:
    """Empties every table. If a connection left idle in a transaction by an earlier test holds a lock,
    it is terminated (and named in the output) rather than letting the whole suite hang."""
    tables = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    for attempt in range(2):
        try:
            async with runtime.db.engine.begin() as conn:
                await conn.execute(sa.text("SET LOCAL lock_timeout = '5s'"))
                await conn.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
            return
        except sa.exc.DBAPIError:
            if attempt:
                raise
            async with runtime.db.engine.connect() as conn:
                stuck = await conn.execute(
                    sa.text(
                        "SELECT pid, left(query, 200) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
                    )
                )
                for pid, query in stuck.all():
                    print(f"terminating a connection left idle in a transaction (pid {pid}): {query}")
                    await conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})


@pytest.fixture
async def client(app: Any, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("203.0.113.10", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture(scope="session")
async def live_server(app: Any) -> AsyncIterator[str]:
    """The app on a real uvicorn on a free loopback port, for WebSocket tests. Yields the base URL."""
    import uvicorn

    from support import free_port

    port = free_port()
    from app.runtime.websocket import FanoutWebSocketProtocol

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        lifespan="off",
        log_config=None,
        ws_max_size=1 << 20,
        ws=FanoutWebSocketProtocol,
        proxy_headers=False,  # as `agentrail serve`: the app decides which proxies it trusts
    )
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    yield f"127.0.0.1:{port}"
    server.should_exit = True
    await task
