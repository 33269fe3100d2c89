"""Startup time of `agentrail serve` with embedded servers, until /readyz answers 200.

    .venv/bin/python bench/startup.py [--runs 3]

Prints JSON: the first start on an empty data folder (initdb, migrations) and warm restarts on the same
folder, in seconds, plus the time each clean stop (SIGINT) took.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_and_measure(data_dir: Path) -> tuple[float, float]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "AGENTRAIL_SECRET_KEY")}
    env["AGENTRAIL_LOG_LEVEL"] = "WARNING"
    started = time.perf_counter()
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("agentrail")), "serve", "--port", str(port), "--data-dir", str(data_dir)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            if process.poll() is not None:
                raise SystemExit("serve exited before it was ready")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
        ready = time.perf_counter() - started
    finally:
        stop_started = time.perf_counter()
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        stopped = time.perf_counter() - stop_started
    return ready, stopped


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3, help="warm restarts to measure")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="agentrail-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        first, first_stop = start_and_measure(data_dir)
        warm = [start_and_measure(data_dir) for _ in range(args.runs)]
    print(
        json.dumps(
            {
                "benchmark": "startup",
                "first_start_seconds": round(first, 3),
                "warm_restart_seconds": [round(w[0], 3) for w in warm],
                "warm_restart_median_seconds": round(statistics.median(w[0] for w in warm), 3),
                "stop_seconds_median": round(statistics.median([first_stop, *(w[1] for w in warm)]), 3),
                "target_warm_restart_seconds": 5.0,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
