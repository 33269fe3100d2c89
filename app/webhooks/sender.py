"""The wire: one shared HTTP client (pooled, SSRF-pinned, no redirects) and one signed POST per attempt."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import httpx

from app.settings import Settings
from app.webhooks import signing
from app.webhooks.ssrf import (
    PinnedNetworkBackend,
    PinnedTransport,
    Resolver,
    UnsafeTarget,
    parse_target,
    system_resolve,
)

RESPONSE_BODY_KEPT = 2048  # bytes of the receiver's answer kept on the attempt
RESPONSE_BODY_READ = 64 * 1024  # read this much at most (so the connection can be reused), then hang up


def build_client(settings: Settings, *, resolver: Resolver = system_resolve) -> httpx.AsyncClient:
    """One per worker process: every job's requests share its connection pool. The SSRF setting is read at
    each connection, so changing it takes effect without a new client."""
    limits = httpx.Limits(
        max_connections=settings.webhook_max_connections,
        max_keepalive_connections=settings.webhook_max_connections,
        keepalive_expiry=30.0,
    )
    backend = PinnedNetworkBackend(lambda: settings.webhook_allow_private_targets, resolver=resolver)
    return httpx.AsyncClient(
        transport=PinnedTransport(backend, limits=limits),
        timeout=httpx.Timeout(settings.webhook_timeout_seconds),
        follow_redirects=False,
        trust_env=False,
    )


@dataclass(slots=True)
class Message:
    url: str
    message_id: str  # `webhook-id`: the event id, the same on every attempt
    body: bytes
    secrets: list[str]  # none for a test sent to a bare URL (unsigned)


@dataclass(slots=True)
class AttemptResult:
    attempted_at: datetime
    succeeded: bool
    status_code: int | None
    latency_ms: int | None
    error: str | None
    response_body: str | None


async def send(client: httpx.AsyncClient, message: Message, *, settings: Settings, now: datetime) -> AttemptResult:
    """One attempt. 2xx is success; any other status (redirects included: never followed), a timeout, a
    connection error or a refused address is a failed attempt. Never raises for the receiver's faults."""
    started = time.perf_counter()

    def result(ok: bool, status: int | None, error: str | None, body: str | None = None) -> AttemptResult:
        latency = round((time.perf_counter() - started) * 1000)
        return AttemptResult(now, ok, status, latency, error[:500] if error else None, body)

    try:
        parse_target(message.url, require_https=settings.is_production)
    except UnsafeTarget as exc:
        return result(False, None, f"refused: {exc}")
    timestamp = int(now.timestamp())
    headers = signing.headers(message.secrets, message.message_id, timestamp, message.body)
    try:
        async with client.stream("POST", message.url, content=message.body, headers=headers) as response:
            kept = bytearray()
            read = 0
            async for chunk in response.aiter_raw():
                if len(kept) < RESPONSE_BODY_KEPT:
                    kept += chunk[: RESPONSE_BODY_KEPT - len(kept)]
                read += len(chunk)
                if read >= RESPONSE_BODY_READ:
                    break
            body = kept.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
            ok = 200 <= response.status_code < 300
            error = None if ok else f"HTTP {response.status_code}"
            return result(ok, response.status_code, error, body)
    except UnsafeTarget as exc:
        return result(False, None, f"refused: {exc}")
    except httpx.TimeoutException:
        return result(False, None, f"timed out after {settings.webhook_timeout_seconds:g} s")
    except httpx.HTTPError as exc:
        return result(False, None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
