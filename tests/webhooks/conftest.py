"""Webhook fixtures: a local receiver, private targets allowed (only where a test asks), a delivery client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.settings import Settings
from app.webhooks.sender import build_client
from webhooks.receiver import Receiver


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = await Receiver().start()
    yield server
    await server.stop()


@pytest.fixture
def private_targets(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The local receiver is on 127.0.0.1: allowed only with the self-hosted setting, turned on explicitly."""
    monkeypatch.setattr(settings, "webhook_allow_private_targets", True)


@pytest.fixture
async def http(settings: Settings):
    client = build_client(settings)
    yield client
    await client.aclose()
