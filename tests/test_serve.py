"""End to end: `agentrail serve` on a fresh data folder, then again on the same one."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import psutil

from support import agentrail_command, free_port

REGISTER = """mutation { register(email: "e2e@example.com", password: "a long enough password",
  name: "E2E", organizationName: "E2E Org") { accessToken organization { id } } }"""
LOGIN = """mutation { login(email: "e2e@example.com", password: "a long enough password") {
  accessToken organization { id name } } }"""


def _start(data_dir: Path, port: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({"AGENTRAIL_ENV": "development", "AGENTRAIL_LOG_LEVEL": "WARNING"})
    env.pop("AGENTRAIL_SECRET_KEY", None)
    return subprocess.Popen(
        [*agentrail_command(), "serve", "--port", str(port), "--data-dir", str(data_dir)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_ready(process: subprocess.Popen[str], url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited early:\n{process.stdout.read() if process.stdout else ''}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise AssertionError("serve did not become ready")


def _processes_using(data_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if str(data_dir) in cmdline and proc.pid != os.getpid():
            found.append(proc)
    return found


def _stop(process: subprocess.Popen[str], sig: int) -> str:
    process.send_signal(sig)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    return output


def test_serve_starts_stops_cleanly_and_keeps_its_data(tmp_path):
    data_dir = (tmp_path / "data").resolve()
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    first = _start(data_dir, port)
    try:
        _wait_ready(first, url)
        registered = httpx.post(f"{url}/graphql", json={"query": REGISTER}, timeout=10).json()
        assert "errors" not in registered, registered
        login = httpx.post(f"{url}/graphql", json={"query": LOGIN}, timeout=10).json()
        assert login["data"]["login"]["accessToken"]
        pids = _server_pids(data_dir)
    finally:
        output = _stop(first, signal.SIGINT)
    assert "/graphql" in output and "register" in output  # the banner tells where and how to start
    assert (data_dir / "secret_key").stat().st_mode & 0o777 == 0o600
    assert _wait_gone(data_dir, pids) == []

    second = _start(data_dir, port)
    try:
        _wait_ready(second, url)
        again = httpx.post(f"{url}/graphql", json={"query": LOGIN}, timeout=10).json()
        assert "errors" not in again, again
        assert again["data"]["login"]["organization"]["id"] == registered["data"]["register"]["organization"]["id"]
        # the token from the first run is still valid: the signing secret was kept in the data folder
        me = httpx.post(
            f"{url}/graphql",
            json={"query": "{ me { kind } }"},
            timeout=10,
            headers={"Authorization": f"Bearer {registered['data']['register']['accessToken']}"},
        ).json()
        assert me["data"] == {"me": {"kind": "USER"}}  # beside extensions.cost
        pids = _server_pids(data_dir)
    finally:
        _stop(second, signal.SIGTERM)
    assert _wait_gone(data_dir, pids) == []


def _server_pids(data_dir: Path) -> list[int]:
    """PostgreSQL and Redis pids, from their pid files (Redis renames its process, so its command
    line does not show the data folder)."""
    pids = [int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0])]
    pids.append(int((data_dir / "redis" / "redis.pid").read_text().strip()))
    return pids


def _wait_gone(data_dir: Path, pids: list[int], timeout: float = 10) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout

    def left() -> list:
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        return _processes_using(data_dir) + alive

    remaining = left()
    while remaining and time.monotonic() < deadline:
        time.sleep(0.1)
        remaining = left()
    return remaining


def test_production_refuses_unsafe_settings(tmp_path):
    env = {**os.environ, "AGENTRAIL_ENV": "production", "AGENTRAIL_GRAPHQL_IDE": "true"}
    env.pop("AGENTRAIL_SECRET_KEY", None)
    result = subprocess.run(
        [*agentrail_command(), "serve", "--data-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "AGENTRAIL_SECRET_KEY" in result.stderr and "AGENTRAIL_GRAPHQL_IDE" in result.stderr
    assert not (tmp_path / "postgres").exists()  # refused before anything started
