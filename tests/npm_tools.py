"""Node tools the conformance tests run (graphql-http's audit suite, graphql-schema-linter), installed from the
npm registry with npm itself, at pinned versions, once per machine into a cache folder.

Node.js and npm must be on PATH (Debian: `apt-get install nodejs npm`); without them the tests that need them
fail with that message rather than being skipped, so that CI cannot silently stop checking conformance.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest


def _cache_root() -> Path:
    configured = os.environ.get("AGENTRAIL_TEST_NPM_CACHE")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "agentrail-tests" / "npm"


def node_binary() -> str:
    node = shutil.which("node")
    if node is None or shutil.which("npm") is None:
        pytest.fail("these conformance tests need Node.js and npm on PATH (Debian: apt-get install nodejs npm)")
    return node


def npm_packages(packages: dict[str, str]) -> Path:
    """A folder whose node_modules holds exactly `packages` ({name: exact version}); installed once, reused."""
    node_binary()
    key = "-".join(f"{name.replace('/', '+')}@{version}" for name, version in sorted(packages.items()))
    folder = _cache_root() / key
    marker = folder / ".installed"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test processes install it once
        if not marker.exists():
            manifest = {"name": "agentrail-test-tools", "private": True, "dependencies": packages}
            (folder / "package.json").write_text(json.dumps(manifest))
            result = subprocess.run(
                ["npm", "install", "--no-audit", "--no-fund", "--save-exact", "--loglevel=error"],
                cwd=folder,
                capture_output=True,
                text=True,
                timeout=300,
            )
            if result.returncode != 0:
                pytest.fail(f"npm install {packages} failed:\n{result.stdout}\n{result.stderr}")
            marker.write_text("ok")
    return folder


def run_node(folder: Path, script: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Runs `script` (JavaScript source) with `folder`'s node_modules resolvable."""
    path = folder / f"script-{os.getpid()}.cjs"
    path.write_text(script)
    try:
        return subprocess.run(
            [node_binary(), str(path), *args], cwd=folder, capture_output=True, text=True, timeout=timeout
        )
    finally:
        path.unlink(missing_ok=True)
