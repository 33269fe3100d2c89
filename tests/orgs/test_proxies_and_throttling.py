"""Proxy headers are believed only from AGENTRAIL_TRUSTED_PROXIES, and failed sign-ins are counted per account
as well as per address: a forged X-Forwarded-For neither escapes the throttle nor lands in the activity trail."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

from app.main import create_app
from app.settings import Settings
from support import error_code, gql, register

CLIENT = "203.0.113.10"  # the address the test transport connects from


@contextlib.asynccontextmanager
async def _client(settings: Settings, runtime: Any, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    application = create_app(settings.model_copy(update=overrides), runtime=runtime)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application, client=(CLIENT, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


async def _login(http, email: str, password: str, forwarded: str | None = None) -> dict:
    headers = {"X-Forwarded-For": forwarded} if forwarded else None
    return await gql(http, "Login", {"email": email, "password": password}, headers=headers)


async def _last_source_ip(http, account) -> str | None:
    result = await gql(http, "Activity", {"first": 1}, token=account.token)
    return result["data"]["activity"]["edges"][0]["node"]["sourceIp"]


def test_no_proxy_is_trusted_by_default(monkeypatch):
    monkeypatch.delenv("AGENTRAIL_TRUSTED_PROXIES", raising=False)
    assert Settings().trusted_proxies == ""


async def test_forged_forwarded_for_is_ignored_without_trusted_proxies(client, settings):
    account = await register(client)
    for i in range(settings.login_max_failures):
        failed = await _login(client, account.email, "wrong", forwarded=f"198.51.100.{i}")
        assert error_code(failed) == "UNAUTHENTICATED"
    blocked = await _login(client, account.email, "wrong", forwarded="198.51.100.200")
    assert error_code(blocked) == "RATE_LIMITED"
    # and the activity trail records the connecting address, not the forged one
    await gql(client, "CreateApiKey", {"name": "k"}, token=account.token, headers={"X-Forwarded-For": "10.9.9.9"})
    assert await _last_source_ip(client, account) == CLIENT


async def test_forwarded_for_is_believed_from_a_trusted_proxy(settings, runtime):
    async with _client(settings, runtime, trusted_proxies=f"{CLIENT}, 10.0.0.0/8") as http:
        account = await register(http)
        await gql(http, "CreateApiKey", {"name": "k"}, token=account.token, headers={"X-Forwarded-For": "192.0.2.7"})
        assert await _last_source_ip(http, account) == "192.0.2.7"


async def test_failed_sign_ins_are_counted_per_account_across_addresses(settings, runtime):
    assert settings.login_max_failures_per_account > settings.login_max_failures
    async with _client(settings, runtime, trusted_proxies=CLIENT) as http:
        account = await register(http)
        for i in range(settings.login_max_failures_per_account):  # each from another address: none reaches its limit
            assert error_code(await _login(http, account.email, "wrong", forwarded=f"192.0.2.{i}")) == "UNAUTHENTICATED"
        blocked = await _login(http, account.email.upper(), account.password, forwarded="192.0.2.99")
        assert error_code(blocked) == "RATE_LIMITED"
        # another account from the same addresses is not affected
        other = await register(http)
        assert "errors" not in await _login(http, other.email, other.password, forwarded="192.0.2.1")
