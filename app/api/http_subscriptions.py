"""Subscriptions over HTTP: multipart (`Accept: multipart/mixed;subscriptionSpec=1.0`, as Apollo Client sends it)
and Server-Sent Events (`Accept: text/event-stream`, graphql-sse's distinct connections mode).

strawberry frames both transports; this module gives an HTTP stream what a WebSocket connection has: the caller
is authenticated before the stream opens (a bad or missing credential is a plain 401, no stream), the
operation runs the same resolvers (Redis fan-out, `after` replay), extensions (limits, cost, error codes) and
permission declarations, and the stream is registered with the process's open connections, so that a revoked
key, a removed user or an expired token ends it (a last UNAUTHENTICATED result, then complete) within seconds,
as it closes a WebSocket.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from graphql import GraphQLError
from strawberry.http.streaming import MultipartSubscriptionTransport
from strawberry.types import ExecutionResult

from app.api.context import Context
from app.api.open_connections import OpenConnections


class MultipartSubscriptions(MultipartSubscriptionTransport):
    """strawberry's multipart transport, closed as RFC 2046 closes a multipart body: every part (and heartbeat)
    already ends with `CRLF--graphql`, so the end is `--` and CRLF after it (strawberry would add one more
    delimiter, an empty part without headers before the close)."""

    def encode_complete(self) -> str:
        return "--\r\n"


class HTTPStream:
    """An open HTTP subscription stream as `OpenConnections` sees it: closing it ends the stream."""

    def __init__(self) -> None:
        self.websocket = self  # OpenConnections closes `handler.websocket`
        self.ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def close(self, code: int, reason: str) -> None:
        if not self.ended.done():
            self.ended.set_result(reason)


async def bound_to_credential(
    results: AsyncIterator[Any], context: Context, connections: OpenConnections
) -> AsyncGenerator[Any, None]:
    """`results`, ended when the caller's credential ends; the context closed at the end."""
    stream = HTTPStream()
    step: asyncio.Future[Any] | None = None
    try:
        connections.add(stream, await context.principal())
        iterator = aiter(results)
        while True:
            step = asyncio.ensure_future(anext(iterator))
            await asyncio.wait((step, stream.ended), return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                step.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await step
                reason = stream.ended.result()
                error = GraphQLError(f"the subscription ended: {reason}", extensions={"code": "UNAUTHENTICATED"})
                yield ExecutionResult(data=None, errors=[error])
                return
            try:
                value = step.result()
            except StopAsyncIteration:
                return
            yield value
    finally:
        if step is not None and not step.done():  # the client left while a result was awaited
            step.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await step
        connections.discard(stream)
        aclose = getattr(results, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
        await context.close()
