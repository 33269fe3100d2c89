"""Shared by the benchmarks: run `agentrail serve` (one uvicorn worker) and sign up an account."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

# the checkout whose `agentrail serve` is measured: this one, or another (AGENTRAIL_BENCH_ROOT, e.g. a worktree of an
# older commit) run with this venv and its own `app` first on the path, for side-by-side runs (bench/side_by_side.py)
ROOT = Path(os.environ.get("AGENTRAIL_BENCH_ROOT") or Path(__file__).resolve().parents[1]).resolve()


def cpu_ref() -> float:
    """Seconds for a fixed piece of pure-Python work (≈ 0.33 s when this machine is quiet): printed beside each
    figure, so that figures taken on a loaded machine can be judged."""
    started = time.perf_counter()
    sum(range(3 * 10**7))
    return round(time.perf_counter() - started, 3)


def server_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, **extra}
    if os.environ.get("AGENTRAIL_BENCH_ROOT"):
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return env


WORDS = [
    "refund",
    "order",
    "customer",
    "policy",
    "invoice",
    "agent",
    "tool",
    "search",
    "result",
    "summary",
    "account",
    "payment",
    "shipping",
    "address",
    "review",
    "ticket",
    "escalate",
    "database",
    "query",
    "the",
    "a",
    "to",
    "of",
    "and",
    "with",
    "for",
    "please",
    "thanks",
    "status",
    "update",
]


@dataclass
class Server:
    url: str
    pid: int
    token: str
    api_key: str

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far."""
        return process_cpu_seconds(self.pid)

    def cpu_split(self) -> tuple[float, float]:
        """(CPU seconds of the API process, of the embedded PostgreSQL (postmaster and backends) and Redis it
        started: found by their data folder)."""
        import psutil

        def total(process: psutil.Process) -> float:
            try:
                return sum(process.cpu_times()[:2]) + sum(sum(c.cpu_times()[:2]) for c in process.children(True))
            except psutil.NoSuchProcess:
                return 0.0

        process = psutil.Process(self.pid)
        command = process.cmdline()
        data_dir = command[command.index("--data-dir") + 1]
        others = total(process) - sum(process.cpu_times()[:2])  # redis (a child)
        for candidate in psutil.process_iter(["cmdline"]):
            line = " ".join(candidate.info["cmdline"] or [])
            if candidate.pid != self.pid and data_dir in line and "postgres" in line:
                others += total(candidate)
        return sum(process.cpu_times()[:2]), others

    def settle(self, *, quiet_share: float = 0.05, timeout: float = 180.0) -> float:
        """Waits until the server and its databases are quiet (the worker has indexed what the previous run
        wrote), so that each run starts from the same state. Returns the seconds waited."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            before = sum(self.cpu_split())
            time.sleep(1.0)
            if sum(self.cpu_split()) - before < quiet_share:
                break
        return round(time.monotonic() - started, 1)

    def peak_rss_mb(self) -> float:
        """Peak resident memory of the server process (VmHWM), in MB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
        return float("nan")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_server() -> Iterator[Server]:
    """Embedded servers in a temporary folder unless DATABASE_URL / REDIS_URL are set."""
    port = _free_port()
    env = server_env(AGENTRAIL_LOG_LEVEL="WARNING", AGENTRAIL_LOGIN_MAX_FAILURES="1000")
    with tempfile.TemporaryDirectory(prefix="agentrail-bench-") as tmp:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("agentrail")), "serve", "--port", str(port), "--data-dir", tmp],
            cwd=ROOT,
            env=env,
            stdout=None if os.environ.get("BENCH_SERVER_OUTPUT") else subprocess.DEVNULL,
            stderr=None if os.environ.get("BENCH_SERVER_OUTPUT") else subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                time.sleep(0.05)
            email = f"bench-{random.randrange(10**9)}@example.com"
            signup = httpx.post(
                f"{url}/graphql",
                timeout=30,
                json={
                    "query": (
                        f'mutation {{ register(email: "{email}", password: "benchmark password", name: "Bench", '
                        'organizationName: "Bench") { accessToken } }'
                    )
                },
            ).json()
            token = signup["data"]["register"]["accessToken"]
            key = httpx.post(
                f"{url}/graphql",
                timeout=30,
                headers={"Authorization": f"Bearer {token}"},
                json={"query": 'mutation { createApiKey(name: "bench") { secret } }'},
            ).json()
            yield Server(url=url, pid=process.pid, token=token, api_key=key["data"]["createApiKey"]["secret"])
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)


@contextlib.contextmanager
def extra_node() -> Iterator[tuple[str, int]]:
    """One more API process (no worker) beside `running_server()`, on the same PostgreSQL and Redis: needs
    DATABASE_URL, REDIS_URL and AGENTRAIL_SECRET_KEY in the environment (shared by both). Yields (url, pid)."""
    for name in ("DATABASE_URL", "REDIS_URL", "AGENTRAIL_SECRET_KEY"):
        if not os.environ.get(name):
            raise SystemExit(f"a second API process needs {name} (the first one's servers and secret)")
    port = _free_port()
    env = server_env(AGENTRAIL_LOG_LEVEL="WARNING")
    with tempfile.TemporaryDirectory(prefix="agentrail-bench-node-") as tmp:
        command = [str(Path(sys.executable).with_name("agentrail")), "serve", "--no-worker", "--port", str(port)]
        process = subprocess.Popen(
            [*command, "--data-dir", tmp], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                time.sleep(0.05)
            yield url, process.pid
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def text(rng: random.Random, low: int, high: int) -> str:
    length = rng.randint(low, high)
    out, size = [], 0
    while size < length:
        word = rng.choice(WORDS)
        out.append(word)
        size += len(word) + 1
    return " ".join(out)[:length]


def realistic_record(rng: random.Random, trace_id: str, index: int, fanout: int = 3) -> dict:
    return {
        "action": rng.choice(["llm_call", "tool_use", "agent_invoke", "guardrail_check"]),
        "prompt": text(rng, 200, 2000),
        "response": text(rng, 100, 1000),
        "traceId": trace_id,
        "spanId": f"{trace_id}-{index}",
        "parentSpanId": f"{trace_id}-{(index - 1) // fanout}" if index else None,
        "metadata": {
            "model": "gpt-4o",
            "tokens": rng.randint(100, 9000),
            "temperature": 0.2,
            "user": "".join(rng.choices(string.ascii_lowercase, k=8)),
            "tags": ["prod", "eu"],
        },
        "durationMs": round(rng.uniform(5, 3000), 1),
        "provider": rng.choice(["openai", "anthropic", "stripe"]),
        "riskLevel": rng.choice(["LOW", "MEDIUM", "HIGH"]),
    }
