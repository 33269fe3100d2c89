"""`agentrail migrate` against an embedded server of its own."""

from __future__ import annotations

import os
import subprocess

from app.runtime.migrations import head
from support import agentrail_command


def _migrate(data_dir, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    result = subprocess.run(
        [*agentrail_command(), "migrate", *args, "--data-dir", str(data_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_upgrade_downgrade_current(tmp_path):
    assert "current revision: none" in _migrate(tmp_path, "current")
    assert f"current revision: {head()}" in _migrate(tmp_path, "upgrade")
    assert "current revision: none" in _migrate(tmp_path, "downgrade", "base")
    assert f"current revision: {head()}" in _migrate(tmp_path, "upgrade", "head")
