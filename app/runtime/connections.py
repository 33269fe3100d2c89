"""What a connection may hold on to: header and body read timeouts, connections per client address, and an
operation's work when its client has gone.

uvicorn bounds only the idle time between requests (keep-alive): a client that sends its headers or its body
one byte a second keeps the connection, and the ASGI app never hears of it (it is called once the headers are
in). So the timeouts and the per-address cap live in the HTTP protocol, where the bytes arrive:

- headers: from the connection (or the previous response) until the request's headers are complete,
  AGENTRAIL_HTTP_HEADER_TIMEOUT_SECONDS; past it the connection is closed (no request was read to answer).
- body: from the end of the headers until the whole body is in, AGENTRAIL_HTTP_BODY_TIMEOUT_SECONDS; past it
  the client gets 408 and the connection is closed.
- per client address, at most AGENTRAIL_MAX_CONNECTIONS_PER_CLIENT open connections (HTTP and WebSocket, per
  process); one more is answered 503 and closed. Behind a proxy every client shares its address: raise it.

`CancelOnDisconnect` cancels a GraphQL request's execution when its client disconnects before the answer
(uvicorn only flags the disconnect; the work would otherwise run to the end for nobody).

`HoldRefusals` makes a caller that does not wait as it was told wait anyway: a RATE_LIMITED answer (request rate
or query cost budget) to a caller that was already refused less than its `retryAfter` ago is sent only once that
`retryAfter` has passed (at most AGENTRAIL_RATE_LIMIT_HOLD_MAX_SECONDS), at the cost of an idle socket. Each
refusal costs some work (reading the request, identifying the caller, a Redis round trip); held, a client gets
at most one per connection and retryAfter (≥ 1 s), and connections are capped per address. A client that honours
`Retry-After` is never held. The hold starts once the operation is over: no database session is held meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from contextvars import ContextVar
from typing import Any, ClassVar

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.runtime.websocket import FanoutWebSocketProtocol
from app.settings import Settings

_OPEN: Counter[str] = Counter()  # open connections per client address, in this process
_COUNTED: dict[int, str] = {}  # transports counted (by id), with their address: a WebSocket keeps its HTTP's


def _address(transport: Any) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple | list) and peer else "unknown"


def _count(transport: Any, limit: int) -> bool:
    """Counts a new connection; False when its address is already at `limit`."""
    if id(transport) in _COUNTED:
        return True
    address = _address(transport)
    if limit > 0 and _OPEN[address] >= limit:
        return False
    _OPEN[address] += 1
    _COUNTED[id(transport)] = address
    return True


def _uncount(transport: Any) -> None:
    address = _COUNTED.pop(id(transport), None)
    if address is not None:
        _OPEN[address] -= 1
        if _OPEN[address] <= 0:
            del _OPEN[address]


def open_connections(address: str) -> int:
    return _OPEN.get(address, 0)


def _plain_response(status: bytes, message: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"content-length: " + str(len(message)).encode() + b"\r\n\r\n" + message
    )


class GuardedHttpProtocol(HttpToolsProtocol):
    header_timeout: ClassVar[float] = 10.0
    body_timeout: ClassVar[float] = 30.0
    max_per_client: ClassVar[int] = 64

    _read_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not _count(transport, self.max_per_client):
            body = b'{"error":"too many connections from this address","status":503,"code":"UNAVAILABLE"}'
            transport.write(_plain_response(b"503 Service Unavailable", body))
            transport.close()
            return
        self._arm(self.header_timeout, self._headers_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        # upgraded to a WebSocket, the transport now belongs to that protocol, which uncounts it
        if self.transport.get_protocol() is self:
            _uncount(self.transport)
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._read_timer is None:  # the next request on a kept-alive connection
            self._arm(self.header_timeout, self._headers_too_slow)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        if not (self.parser.should_upgrade() and self._should_upgrade()):
            self._arm(self.body_timeout, self._body_too_slow)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.cycle is not None and self.cycle.more_body:
            # answered before its body was in: the rest of it must not hold the connection either
            self._arm(self.body_timeout, self._body_too_slow)

    def _arm(self, seconds: float, callback: Any) -> None:
        self._disarm()
        if seconds > 0:
            self._read_timer = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _headers_too_slow(self) -> None:
        self._read_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def _body_too_slow(self) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            body = b'{"error":"request body not received in time","status":408,"code":"BAD_USER_INPUT"}'
            self.transport.write(_plain_response(b"408 Request Timeout", body))
        self.transport.close()  # the app's receive then reports a disconnect, and what it sends is dropped


class GuardedWebSocketProtocol(FanoutWebSocketProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        _count(transport, 0)  # counted already as the HTTP connection it was upgraded from

    def connection_lost(self, exc: Exception | None) -> None:
        _uncount(self.transport)
        super().connection_lost(exc)


def protocols(settings: Settings) -> tuple[type[GuardedHttpProtocol], type[GuardedWebSocketProtocol]]:
    """uvicorn's `http` and `ws` protocol classes with the settings' limits."""
    http = type(
        "AgentrailHttpProtocol",
        (GuardedHttpProtocol,),
        {
            "header_timeout": settings.http_header_timeout_seconds,
            "body_timeout": settings.http_body_timeout_seconds,
            "max_per_client": settings.max_connections_per_client,
        },
    )
    return http, GuardedWebSocketProtocol


class CancelOnDisconnect:
    """Cancels an HTTP request's handling when the client disconnects before the answer, for every method.

    The body is read here first (the app gets it replayed), so that the disconnect watch starts as soon as the
    request is in: a GET has no body and strawberry never calls `receive` for it, so a watch waiting for the
    app to read the body would never start. After the body, uvicorn's `receive` returns only when the client
    has gone (or the response is done). Bodies are bounded by the request size limit outside this layer.
    """

    def __init__(self, app: ASGIApp, *, paths: tuple[str, ...] = ("/graphql",)) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        body: list[Message] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # it left while sending its body (or its body was cut as too slow): nobody to answer
            body.append(message)
            if not message.get("more_body", False):
                break
        responded = False

        async def replaying_receive() -> Message:
            if body:
                return body.pop(0)
            return await receive()

        async def tracking_send(message: Message) -> None:
            nonlocal responded
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                responded = True
            await send(message)

        handler = asyncio.ensure_future(self.app(scope, replaying_receive, tracking_send))
        client_left = False

        async def watch() -> None:
            nonlocal client_left
            message = await receive()
            if message["type"] == "http.disconnect" and not responded:
                client_left = True
                handler.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            await handler
        except asyncio.CancelledError:
            if not client_left:
                raise
            # the client left: nothing to answer, nobody to answer
        except ClientDisconnect:
            pass
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


# the request's hold (seconds; the longest asked for wins), set by HoldRefusals around each HTTP request
_HOLD: ContextVar[list[float] | None] = ContextVar("agentrail_refusal_hold", default=None)
# per limit key (a caller's rate or budget): until when (monotonic) its last refusal told it to wait
_TOLD_TO_WAIT: dict[str, float] = {}
_TOLD_TO_WAIT_MAX = 100_000


def hold_refusal(key: str, retry_after: float) -> None:
    """A caller was refused under `key` and told to retry after `retry_after` seconds. If it had been told
    to wait already and came back early, this HTTP request's answer is held for `retry_after` seconds.
    Outside an HTTP request (a WebSocket, a job) only the refusal is noted."""
    now = time.monotonic()
    told_until = _TOLD_TO_WAIT.pop(key, None)  # popped and set again: the dict stays in order of refusal
    _TOLD_TO_WAIT[key] = now + retry_after
    if len(_TOLD_TO_WAIT) > _TOLD_TO_WAIT_MAX:
        for stale in list(_TOLD_TO_WAIT)[: _TOLD_TO_WAIT_MAX // 10]:
            del _TOLD_TO_WAIT[stale]
    holder = _HOLD.get()
    if holder is not None and told_until is not None and now < told_until and retry_after > 0:
        holder.append(retry_after)


class HoldRefusals:
    """Holds an HTTP answer for the time `hold_refusal` asked for, at most `max_seconds`, before sending it."""

    def __init__(self, app: ASGIApp, *, max_seconds: float) -> None:
        self.app = app
        self.max_seconds = max_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.max_seconds <= 0:
            await self.app(scope, receive, send)
            return
        holder: list[float] = []
        token = _HOLD.set(holder)

        async def holding_send(message: Message) -> None:
            if message["type"] == "http.response.start" and holder:
                await asyncio.sleep(min(max(holder), self.max_seconds))
                holder.clear()
            await send(message)

        try:
            await self.app(scope, receive, holding_send)
        finally:
            _HOLD.reset(token)
