"""Read timeouts, the per-address connection cap and cancellation on disconnect, on a real uvicorn over raw
sockets (app/runtime/connections.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import uvicorn

from app.runtime.connections import CancelOnDisconnect, open_connections, protocols
from app.settings import Settings
from support import free_port

events: list[str] = []


async def echo_app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while scope["method"] != "GET":  # as strawberry: a GET's body is never read
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/slow":
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(body)).encode())]}
    )
    await send({"type": "http.response.body", "body": body})


@contextlib.asynccontextmanager
async def server(**limits: Any) -> AsyncIterator[int]:
    settings = Settings(**limits)
    http, ws = protocols(settings)
    port = free_port()
    config = uvicorn.Config(
        CancelOnDisconnect(echo_app, paths=("/slow",)),
        host="127.0.0.1",
        port=port,
        http=http,
        ws=ws,
        lifespan="off",
        log_config=None,
    )
    instance = uvicorn.Server(config)
    instance.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    task = asyncio.create_task(instance.serve())
    while not instance.started:
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        instance.should_exit = True
        await task


async def read_all(reader: asyncio.StreamReader, timeout: float) -> bytes:
    data = b""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                data += chunk
    return data


async def test_requests_pass_and_connections_are_kept_alive() -> None:
    async with server(http_header_timeout_seconds=1, http_body_timeout_seconds=1) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(2):
            writer.write(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello")
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            assert await reader.readexactly(5) == b"hello"
        writer.close()


async def test_headers_sent_slowly_are_cut() -> None:
    async with server(http_header_timeout_seconds=0.5) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        writer.write(b"GET /echo HTTP/1.1\r\n")
        for _ in range(20):  # a header line a byte at a time
            with contextlib.suppress(OSError):
                writer.write(b"x")
                await writer.drain()
            if reader.at_eof():
                break
            await asyncio.sleep(0.1)
        assert await read_all(reader, 2) == b""
        assert reader.at_eof()
        assert time.monotonic() - started < 1.5
        writer.close()


async def test_body_sent_one_byte_at_a_time_is_cut_with_408() -> None:
    async with server(http_body_timeout_seconds=0.6) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n")
        started = time.monotonic()

        async def trickle() -> None:
            for _ in range(20):
                with contextlib.suppress(OSError):
                    writer.write(b"a")
                    await writer.drain()
                await asyncio.sleep(0.1)

        sender = asyncio.create_task(trickle())
        answer = await reader.readuntil(b"}")  # the 408's JSON body (then stop sending: a reset would lose it)
        sender.cancel()
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b'"code":"BAD_USER_INPUT"' in answer
        assert time.monotonic() - started < 1.6
        writer.close()


async def test_connections_per_client_address_are_capped() -> None:
    async with server(max_connections_per_client=3, http_header_timeout_seconds=10) as port:
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        await asyncio.sleep(0.1)
        assert open_connections("127.0.0.1") == 3
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        refused = await read_all(reader, 2)
        assert refused.startswith(b"HTTP/1.1 503"), refused
        writer.close()
        held[0][1].close()
        await asyncio.sleep(0.2)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nok")
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        writer.close()
        for _, w in held[1:]:
            w.close()
        await asyncio.sleep(0.2)
        assert open_connections("127.0.0.1") == 0


async def test_work_is_cancelled_when_the_client_disconnects() -> None:
    events.clear()
    async with server() as port:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /slow HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.close()
        for _ in range(50):
            if events:
                break
            await asyncio.sleep(0.05)
        assert events == ["cancelled"]


async def test_get_work_is_cancelled_when_the_client_disconnects() -> None:
    """A GET has no body and its handler never calls receive: the watch starts without it."""
    events.clear()
    async with server() as port:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /slow?query=x HTTP/1.1\r\nhost: x\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.close()
        for _ in range(50):
            if events:
                break
            await asyncio.sleep(0.05)
        assert events == ["cancelled"]


@pytest.mark.parametrize("path", ["/graphql"])
async def test_the_app_cancels_graphql_work_on_disconnect(path: str) -> None:
    # the middleware is on the app, for /graphql (the test above drives it on its own)
    from app.main import create_app

    app = create_app(Settings(), urls=("postgresql://x@127.0.0.1:1/x", "redis://127.0.0.1:1/0"))
    found = app.middleware_stack or app.build_middleware_stack()
    layers = []
    while found is not None:
        layers.append(type(found).__name__)
        found = getattr(found, "app", None)
    assert "CancelOnDisconnect" in layers
