"""Billing fixtures: a local Stripe, and apps built with billing settings (per test, nothing global)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest

from app.runtime.resources import Runtime
from app.settings import Settings
from billing.stripe_stub import StripeStub, billing_settings, start_stub

MakeClient = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture
def stripe_stub() -> Iterator[StripeStub]:
    stub, server = start_stub()
    yield stub
    server.shutdown()
    server.server_close()


@pytest.fixture
async def make_client(settings: Settings, runtime: Runtime, stripe_stub: StripeStub) -> AsyncIterator[MakeClient]:
    """`await make_client(**settings overrides)`: an ASGI client of an app built with billing configured
    (pass `configured=False` for none). It shares the session's database and Redis."""
    from app.main import create_app

    stack = AsyncExitStack()

    async def make(*, configured: bool = True, **overrides: Any) -> httpx.AsyncClient:
        own = billing_settings(settings, stripe_stub, configured=configured, **overrides)
        app = create_app(own, runtime=dataclasses.replace(runtime, settings=own))
        await stack.enter_async_context(app.router.lifespan_context(app))
        transport = httpx.ASGITransport(app=app, client=("203.0.113.20", 40000))
        return await stack.enter_async_context(httpx.AsyncClient(transport=transport, base_url="http://testserver"))

    yield make
    await stack.aclose()
