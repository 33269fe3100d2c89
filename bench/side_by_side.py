"""Runs one benchmark against two checkouts, alternating, and prints the medians of every figure side by side.

    .venv/bin/python bench/side_by_side.py --old ../bench-old --runs 3 ingest.py --records 20000

The benchmark script is this checkout's (the same client for both); the server measured is each checkout's
own `app` (AGENTRAIL_BENCH_ROOT, see bench/_server.py), run with this venv. Runs alternate old, new, old, new …
so that the machine's load falls on both alike; each run's CPU reference is kept, and the output has, per
numeric figure of the benchmark's JSON, the median of each side, new/old, and every run's value.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from _server import cpu_ref

HERE = Path(__file__).resolve().parent


def _figures(value: Any, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            out.update(_figures(item, f"{prefix}{key}."))
    elif isinstance(value, int | float) and not isinstance(value, bool):
        out[prefix.rstrip(".")] = float(value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--old", required=True, type=Path, help="the other checkout (e.g. a worktree of an old commit)")
    parser.add_argument("--new", type=Path, default=HERE.parent, help="default: this checkout")
    parser.add_argument("--runs", type=int, default=3, help="runs per side")
    parser.add_argument("script", help="benchmark under bench/, e.g. ingest.py")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="passed to the benchmark")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    refs: dict[str, list[float]] = {"old": [], "new": []}
    for _ in range(args.runs):
        for side, root in (("old", args.old), ("new", args.new)):
            refs[side].append(cpu_ref())
            env = {**os.environ, "AGENTRAIL_BENCH_ROOT": str(root.resolve())}
            done = subprocess.run(
                [sys.executable, str(HERE / args.script), *args.args], env=env, capture_output=True, text=True
            )
            if done.returncode != 0:
                sys.exit(f"{side} run failed:\n{done.stderr[-3000:]}")
            runs[side].append(_figures(json.loads(done.stdout)))
            print(f"{side} run {len(runs[side])} done (cpu_ref {refs[side][-1]} s)", file=sys.stderr, flush=True)
    names = [n for n in runs["new"][0] if all(n in r for side in runs.values() for r in side)]
    table: dict[str, Any] = {}
    for name in names:
        old = statistics.median(r[name] for r in runs["old"])
        new = statistics.median(r[name] for r in runs["new"])
        table[name] = {
            "old": round(old, 3),
            "new": round(new, 3),
            "new_over_old": round(new / old, 3) if old else None,
            "old_runs": [r[name] for r in runs["old"]],
            "new_runs": [r[name] for r in runs["new"]],
        }
    print(
        json.dumps(
            {
                "benchmark": args.script,
                "args": args.args,
                "old": str(args.old),
                "new": str(args.new),
                "runs_per_side": args.runs,
                "cpu_ref_s": refs,
                "figures": table,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
