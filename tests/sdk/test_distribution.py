"""sdk/python is a distribution of its own (`pip install ./sdk/python`; run.py installs it so): typed packages,
httpx its only dependency (OpenTelemetry and orjson as extras), nothing of the server imported (also an
import-linter contract)."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

import agentaudit
import agentrail
from support import ROOT

SDK = ROOT / "sdk" / "python"


def test_the_sdk_is_its_own_typed_distribution_depending_on_httpx_only():
    project = tomllib.loads((SDK / "pyproject.toml").read_text())["project"]
    assert [d.split(">")[0] for d in project["dependencies"]] == ["httpx"]
    assert set(project["optional-dependencies"]) == {"otel", "fast"}

    installed = importlib.metadata.metadata("agentrail-sdk")  # as pip installed it
    plain = [r for r in installed.get_all("Requires-Dist") or [] if "extra ==" not in r]
    assert [r.split(">")[0].strip() for r in plain] == ["httpx"]
    for package in (agentrail, agentaudit):
        folder = Path(package.__file__).parent
        assert folder.is_relative_to(SDK / "src") and (folder / "py.typed").exists()
    sources = "\n".join(p.read_text() for p in (SDK / "src").rglob("*.py"))
    assert "from app" not in sources and "import app" not in sources and "workers" not in sources
    assert agentrail.__version__ == project["version"] == installed["Version"]
