"""Per-request billing context: which settings this request is served with, and its rate-limit headers.

Domain services that enforce plan limits (ingest's quota, `createApiKey`) receive only a session; they read
the settings of the app serving the request from here (outside a request: the process settings). The same
middleware writes `X-RateLimit-*` (and `Retry-After` when refused) on every HTTP response whose caller was
rate-limited, REST and GraphQL alike.
"""

from __future__ import annotations

import math
from contextvars import ContextVar
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.settings import Settings, get_settings

_settings: ContextVar[Settings | None] = ContextVar("agentrail_billing_settings", default=None)
_rate_limit: ContextVar[RateLimitState | None] = ContextVar("agentrail_rate_limit", default=None)


@dataclass(slots=True)
class RateLimitDecision:
    allowed: bool
    limit: float  # requests per second
    burst: int
    remaining: int  # requests that may follow at once
    reset_seconds: float  # until the full burst is available again
    retry_after_seconds: float  # 0 when allowed

    def headers(self) -> list[tuple[bytes, bytes]]:
        limit = f"{self.limit:g}"
        out = [
            (b"x-ratelimit-limit", limit.encode()),
            (b"x-ratelimit-burst", str(self.burst).encode()),
            (b"x-ratelimit-remaining", str(max(0, self.remaining)).encode()),
            (b"x-ratelimit-reset", str(max(0, math.ceil(self.reset_seconds))).encode()),
        ]
        if not self.allowed:
            out.append((b"retry-after", str(max(1, math.ceil(self.retry_after_seconds))).encode()))
        return out


@dataclass(slots=True)
class RateLimitState:
    decision: RateLimitDecision | None = None


def current_settings() -> Settings:
    return _settings.get() or get_settings()


def note_rate_limit(decision: RateLimitDecision) -> None:
    state = _rate_limit.get()
    if state is not None:
        state.decision = decision


class BillingMiddleware:
    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        state = RateLimitState()
        settings_token = _settings.set(self.settings)
        state_token = _rate_limit.set(state)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and state.decision is not None:
                taken = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in state.decision.headers() if k not in taken]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers if scope["type"] == "http" else send)
        finally:
            _rate_limit.reset(state_token)
            _settings.reset(settings_token)
