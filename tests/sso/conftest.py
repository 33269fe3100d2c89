"""The local OpenID provider, started per test; loopback allowed for it (a test setting)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.sso import oidc

from .provider import Provider


@pytest.fixture
async def provider(runtime: Any, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Provider]:
    started = Provider()
    await started.start()
    monkeypatch.setattr(runtime.settings, "sso_allow_loopback", True)
    monkeypatch.setattr(
        runtime.settings, "sso_domain_verification_url", f"http://127.0.0.1:{started.port}/domains/{{domain}}"
    )
    oidc._discovered.clear()
    oidc._jwks.clear()
    yield started
    await started.stop()
