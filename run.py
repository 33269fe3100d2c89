#!/usr/bin/env python3
"""Bootstrap: `python3 run.py serve` runs the service, `python3 run.py test` runs the test suite,
`python3 run.py lint` runs the linters, the type checker and the import contract (CI runs it before the tests).

Creates `.venv` next to this file and installs the project into it (editable, with the test and lint
extras), the Python SDK (`sdk/python`, editable, with its `otel` extra) and the offline verifier
(`sdk/verify`, editable) on first use, and again whenever one of their `pyproject.toml` changes.
Needs nothing but Python 3.11+.
Anything after the command is passed on: `python3 run.py serve --port 9000`, `python3 run.py test -k auth`.
Other commands run the `agentrail` CLI: `python3 run.py migrate current`, `python3 run.py verify`.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".agentrail-installed"


def _venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _wanted_stamp() -> str:
    digest = hashlib.sha256(
        b"".join((ROOT / path / "pyproject.toml").read_bytes() for path in (".", "sdk/python", "sdk/verify"))
    ).hexdigest()
    return f"{sys.version_info[:2]} {digest}"


def ensure_environment() -> Path:
    if sys.version_info < (3, 11):
        sys.exit("Agentrail needs Python 3.11 or newer")
    python = _venv_python()
    if not python.exists():
        print("creating virtual environment in .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    if not STAMP.exists() or STAMP.read_text() != _wanted_stamp():
        print("installing agentrail and its dependencies into .venv ...", flush=True)
        subprocess.run(
            [
                *(str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"),
                *("-e", ".[test,lint]", "-e", "./sdk/python[otel]", "-e", "./sdk/verify"),
            ],
            cwd=ROOT,
            check=True,
        )
        STAMP.write_text(_wanted_stamp())
    return python


# `lint`: every step runs (all failures shown at once); any failure fails the command
LINT_STEPS = [
    ["ruff", "check", "app", "workers", "tests", "bench", "sdk", "run.py"],
    ["ruff", "format", "--check", "app", "workers", "tests", "bench", "sdk", "run.py"],
    ["mypy"],  # files and options: [tool.mypy] in pyproject.toml
    # the import contract ([tool.importlinter]); no cache directory left in the checkout (about a second)
    ["lint-imports", "--no-cache"],
]


def lint(python: Path) -> int:
    failed = 0
    for step in LINT_STEPS:
        print("lint:", " ".join(step), flush=True)
        tool = python.with_name(step[0] + (".exe" if os.name == "nt" else ""))
        failed |= subprocess.call([str(tool), *step[1:]], cwd=ROOT) != 0
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help"}:
        print(__doc__)
        return 0
    python = ensure_environment()
    command, rest = argv[0], argv[1:]
    if command == "lint":
        return lint(python)
    if command == "test":
        args = [str(python), "-m", "pytest", *rest]
    else:
        # the console script, not `python -m app.cli`: measured twice as slow on large GraphQL responses
        args = [str(python.with_name("agentrail.exe" if os.name == "nt" else "agentrail")), command, *rest]
    os.chdir(ROOT)
    if os.name == "nt":
        return subprocess.call(args)
    # exec so that Ctrl-C and SIGTERM reach the service directly
    os.execv(args[0], args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
