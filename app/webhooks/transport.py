"""The connection layer of webhook requests: httpx over an httpcore pool whose network backend connects only to
addresses `ssrf` allowed (resolved, checked and connected in one step, so DNS rebinding cannot slip an internal
address in between). The URL keeps its host name, so TLS verifies the certificate (and sends SNI) for that
name, and the pool never shares a connection between two names that happen to resolve to one address.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Callable, Iterable
from typing import Any

import httpcore
import httpx

from app.webhooks.ssrf import Resolver, UnsafeTarget, resolve_checked, system_resolve


class PinnedNetworkBackend(httpcore.AsyncNetworkBackend):
    """Resolves, checks and connects to the checked address in one step (see the module docstring)."""

    def __init__(self, allow_private: Callable[[], bool], *, resolver: Resolver = system_resolve) -> None:
        self._allow_private = allow_private
        self._resolver = resolver
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109  httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await resolve_checked(host, port, allow_private=self._allow_private(), resolver=self._resolver)
        last: Exception | None = None
        for address in addresses:
            try:
                stream = await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
                return _Stream(stream, stream.get_extra_info("socket"))
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        raise UnsafeTarget("unix sockets are not webhook targets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _Stream(httpcore.AsyncNetworkStream):
    """anyio's stream, answering httpcore's "is this idle connection readable?" (asked of every pooled
    connection on every request) from the socket it keeps, instead of rebuilding anyio's attribute map each
    time (a quarter of the CPU a delivery took)."""

    def __init__(self, inner: httpcore.AsyncNetworkStream, sock: socket.socket | None) -> None:
        self._inner = inner
        self._socket = sock

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._inner.start_tls(ssl_context, server_hostname, timeout), self._socket)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            return _readable(self._socket)
        return self._inner.get_extra_info(info)


def _readable(sock: socket.socket | None) -> bool:
    """Whether a read would return at once (data, or b"" for a closed connection); a gone socket counts."""
    fd = -1 if sock is None else sock.fileno()
    if fd < 0:
        return True
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


class PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a connection pool that connects only through `PinnedNetworkBackend`."""

    def __init__(self, backend: PinnedNetworkBackend, *, limits: httpx.Limits) -> None:
        super().__init__(limits=limits, retries=0, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            retries=0,
            network_backend=backend,
        )
