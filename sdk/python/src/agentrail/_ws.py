"""A minimal WebSocket client (RFC 6455), sync and asyncio, for the `graphql-transport-ws` subscriptions.

Enough for text messages: the opening handshake (with the subprotocol), masked client frames, fragmented
messages, ping/pong and close. Written here so that the SDK depends on httpx alone.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_MESSAGE = 16 * 1024 * 1024


class WebSocketClosed(Exception):
    def __init__(self, code: int | None = None, reason: str = "") -> None:
        super().__init__(f"WebSocket closed ({code}: {reason})" if code else "WebSocket closed")
        self.code, self.reason = code, reason


def _frame(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    repeated = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big") if n else b""
    return head + mask + masked


def _handshake(url: str, subprotocol: str) -> tuple[str, int, bool, bytes, bytes]:
    parts = urlsplit(url)
    secure = parts.scheme in ("wss", "https")
    host = parts.hostname or "localhost"
    port = parts.port or (443 if secure else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    key = base64.b64encode(os.urandom(16))
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Protocol: {subprotocol}\r\nUser-Agent: agentrail-python/0.1\r\n\r\n"
    ).encode()
    return host, port, secure, request, key


def _check_answer(head: bytes, key: bytes) -> None:
    lines = head.decode("latin-1").split("\r\n")
    if len(lines[0].split(" ")) < 2 or lines[0].split(" ")[1] != "101":
        raise WebSocketClosed(None, f"the server refused the WebSocket: {lines[0]}")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    expected = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()  # noqa: S324 - the protocol's
    if headers.get("sec-websocket-accept") != expected:
        raise WebSocketClosed(None, "bad Sec-WebSocket-Accept")


def _close_payload(payload: bytes) -> tuple[int | None, str]:
    if len(payload) >= 2:
        return struct.unpack("!H", payload[:2])[0], payload[2:].decode(errors="replace")
    return None, ""


class WebSocket:
    """Blocking. `recv()` returns the next text message; raises WebSocketClosed at the end."""

    def __init__(self, url: str, subprotocol: str, timeout: float | None = 10.0) -> None:
        host, port, secure, request, key = _handshake(url, subprotocol)
        sock = socket.create_connection((host, port), timeout=timeout)
        if secure:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        self.sock = sock
        self._buffer = b""
        sock.sendall(request)
        while b"\r\n\r\n" not in self._buffer:
            self._fill()
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        _check_answer(head, key)
        self.sock.settimeout(None)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise WebSocketClosed(None, "connection lost")
        self._buffer += chunk

    def _read(self, n: int) -> bytes:
        while len(self._buffer) < n:
            self._fill()
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out

    def send(self, text: str) -> None:
        self.sock.sendall(_frame(0x1, text.encode()))

    def recv(self) -> str:
        parts: list[bytes] = []
        while True:
            first, second = self._read(2)
            opcode, n = first & 0x0F, second & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read(8))[0]
            if n > MAX_MESSAGE:
                raise WebSocketClosed(1009, "message too big")
            payload = self._read(n)
            if opcode == 0x8:
                code, reason = _close_payload(payload)
                with contextlib.suppress(OSError):
                    self.sock.sendall(_frame(0x8, payload[:2]))
                raise WebSocketClosed(code, reason)
            if opcode == 0x9:
                self.sock.sendall(_frame(0xA, payload))
                continue
            if opcode == 0xA:
                continue
            parts.append(payload)
            if first & 0x80:
                return b"".join(parts).decode()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(_frame(0x8, struct.pack("!H", 1000)))
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


class AsyncWebSocket:
    """The same over asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, url: str, subprotocol: str, timeout: float | None = 10.0) -> AsyncWebSocket:  # noqa: ASYNC109
        host, port, secure, request, key = _handshake(url, subprotocol)
        opening: Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.open_connection(
            host, port, ssl=ssl.create_default_context() if secure else None
        )
        reader, writer = await asyncio.wait_for(opening, timeout)
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        _check_answer(head[:-4], key)
        return cls(reader, writer)

    async def _read(self, n: int) -> bytes:
        try:
            return await self.reader.readexactly(n)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise WebSocketClosed(None, "connection lost") from exc

    async def send(self, text: str) -> None:
        self.writer.write(_frame(0x1, text.encode()))
        await self.writer.drain()

    async def recv(self) -> str:
        parts: list[bytes] = []
        read: Callable[[int], Awaitable[bytes]] = self._read
        while True:
            first, second = await read(2)
            opcode, n = first & 0x0F, second & 0x7F
            if n == 126:
                n = struct.unpack("!H", await read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await read(8))[0]
            if n > MAX_MESSAGE:
                raise WebSocketClosed(1009, "message too big")
            payload = await read(n)
            if opcode == 0x8:
                code, reason = _close_payload(payload)
                raise WebSocketClosed(code, reason)
            if opcode == 0x9:
                self.writer.write(_frame(0xA, payload))
                continue
            if opcode == 0xA:
                continue
            parts.append(payload)
            if first & 0x80:
                return b"".join(parts).decode()

    async def close(self) -> None:
        try:
            self.writer.write(_frame(0x8, struct.pack("!H", 1000)))
            self.writer.close()
            await self.writer.wait_closed()
        except (OSError, RuntimeError):
            pass
