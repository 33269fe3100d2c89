"""The SDK against a real server: `agentrail serve` as a subprocess on the suite's PostgreSQL and Redis (so a test
can kill it and start it again), reached directly or through a proxy that can hold requests or swallow answers.

The SDK's sender is a thread and its calls block: these tests are synchronous, and the server runs in a process
of its own rather than on the suite's event loop.
"""

from __future__ import annotations

import asyncio
import http.server
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from app.db import to_async_url
from support import TEST_SECRET, agentrail_command, free_port, operation


class Server:
    """`agentrail serve --no-worker` on a fixed port (the same after a restart)."""

    def __init__(self, database_url: str, redis_url: str, tmp: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AGENTRAIL_")},
            "DATABASE_URL": database_url.replace("postgresql+asyncpg://", "postgresql://"),
            "REDIS_URL": redis_url,
            "AGENTRAIL_SECRET_KEY": TEST_SECRET,
            "AGENTRAIL_LOG_LEVEL": "WARNING",
            "AGENTRAIL_DATA_DIR": str(tmp),
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.log = tmp / "server.log"

    def start(self, timeout: float = 90) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [*agentrail_command(), "serve", "--no-worker", "--port", str(self.port)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()  # never left running past a failed start
        raise AssertionError("the server did not become ready")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@dataclass
class Account:
    url: str
    token: str
    org_id: str
    key: str

    def gql(self, query: str, variables: dict[str, Any] | None = None, *, token: bool = True) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if token else {"X-API-Key": self.key}
        if query.isidentifier():
            query = operation(query)
        answer = httpx.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, headers=headers, timeout=30
        ).json()
        assert "errors" not in answer, answer
        return answer["data"]


def new_account(url: str) -> Account:
    email = f"sdk-{secrets.token_hex(4)}@example.com"
    registered = httpx.post(
        f"{url}/graphql",
        json={
            "query": operation("Register"),
            "variables": {
                "email": email,
                "password": "correct horse battery",
                "name": "SDK",
                "organizationName": "SDK",
            },
        },
        timeout=30,
    ).json()
    assert "errors" not in registered, registered
    data = registered["data"]["register"]
    created = httpx.post(
        f"{url}/graphql",
        json={"query": operation("CreateApiKey"), "variables": {"name": "sdk"}},
        headers={"Authorization": f"Bearer {data['accessToken']}"},
        timeout=30,
    ).json()
    assert "errors" not in created, created
    return Account(url, data["accessToken"], data["organization"]["id"], created["data"]["createApiKey"]["secret"])


class Database:
    """Reads the stored records straight from PostgreSQL (what the assertions count)."""

    def __init__(self, url: str) -> None:
        self.url = to_async_url(url)

    def rows(self, sql: str, **params: Any) -> list[Any]:
        async def run() -> list[Any]:
            engine = create_async_engine(self.url)
            try:
                async with engine.connect() as conn:
                    return list((await conn.execute(sa.text(sql), params)).all())
            finally:
                await engine.dispose()

        return asyncio.run(run())

    def keys(self, org_id: str) -> list[str]:
        return [r[0] for r in self.rows("SELECT idempotency_key FROM audit_logs WHERE org_id = :o", o=org_id)]

    def records(self, org_id: str) -> list[Any]:
        return self.rows("SELECT * FROM audit_logs WHERE org_id = :o ORDER BY seq", o=org_id)


class Proxy:
    """A local HTTP proxy in front of the server that can hold requests (`hold()` / `release()`) or forward a
    batch and swallow the answer (`swallow_batches = n`: the server writes, the client hears nothing)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.open = threading.Event()
        self.open.set()
        self.swallow_batches = 0
        self.swallowed = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                proxy.open.wait(60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                try:
                    answer = httpx.request(
                        self.command, proxy.target + self.path, headers=headers, content=body, timeout=30
                    )
                except httpx.HTTPError:
                    self.close_connection = True
                    return
                with proxy.lock:
                    swallow = self.path.endswith("/batch") and proxy.swallow_batches > 0
                    if swallow:
                        proxy.swallow_batches -= 1
                        proxy.swallowed += 1
                if swallow:
                    self.close_connection = True
                    return
                self.send_response(answer.status_code)
                for name in ("content-type", "retry-after"):
                    if name in answer.headers:
                        self.send_header(name, answer.headers[name])
                self.send_header("content-length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def hold(self) -> None:
        self.open.clear()

    def release(self) -> None:
        self.open.set()

    def close(self) -> None:
        self.open.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def server(database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(database_url, redis_url, tmp_path_factory.mktemp("sdk-server"))
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def db(database_url: str) -> Database:
    return Database(database_url)


@pytest.fixture
def account(server: Server) -> Account:
    return new_account(server.url)


@pytest.fixture
def proxy(server: Server) -> Iterator[Proxy]:
    running = Proxy(server.url)
    yield running
    running.close()


def run_script(code: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """A Python subprocess (exit and fork tests): the SDK as an application uses it."""
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
