"""Open WebSocket connections by the principal that opened them, closed (4403) when its credential ends.

A key revoked, a user removed, a token expired: the process closes every connection of that principal within
seconds. Revocations arrive through Redis from whichever process committed them (`app.orgs.revocation`); every
`credential_recheck_seconds` the credentials of all open connections are also checked against PostgreSQL in one
pass (the fallback while Redis is down); token expiry is checked locally every second.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import structlog
from strawberry.subscriptions.protocols.graphql_transport_ws.types import ConnectionInitMessage

from app.db import utcnow
from app.orgs import revocation
from app.orgs.revocation import Revoked
from app.principal import Principal
from app.runtime.redis import Gap
from app.runtime.resources import Runtime

log = structlog.get_logger(__name__)

CLOSE_FORBIDDEN = 4403


class OpenConnections:
    """The process's authenticated graphql-transport-ws handlers and their principals."""

    def __init__(self) -> None:
        self._principals: dict[Any, Principal] = {}

    def __len__(self) -> int:
        return len(self._principals)

    def add(self, handler: Any, principal: Principal) -> None:
        self._principals[handler] = principal

    def discard(self, handler: Any) -> None:
        self._principals.pop(handler, None)

    async def close_where(self, ended: Callable[[Principal], bool], reason: str) -> int:
        closing = [h for h, p in list(self._principals.items()) if ended(p)]
        for handler in closing:
            self.discard(handler)
            with contextlib.suppress(Exception):  # already gone
                await handler.websocket.close(CLOSE_FORBIDDEN, reason)
        if closing:
            log.info("closed subscriptions of an ended credential", connections=len(closing), reason=reason)
        return len(closing)

    async def recheck(self, runtime: Runtime) -> int:
        """Closes the connections whose key was revoked or whose user is gone (one pass for all of them)."""
        principals = set(self._principals.values())
        if not principals:
            return 0
        async with runtime.db.system_session(autocommit=True) as session:
            ended = await revocation.no_longer_valid(session, principals)
        return await self.close_where(ended.covers, "credential revoked")

    async def close_expired(self) -> int:
        now = utcnow()
        return await self.close_where(lambda p: p.expires_at is not None and p.expires_at <= now, "token expired")


class ClosesWhenCredentialEnds:
    """Mixin for the graphql-transport-ws handler: registers the connection once acknowledged, forgets it at
    the end."""

    context: Any
    websocket: Any
    connection_acknowledged: bool

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        await super().handle_connection_init(message)  # type: ignore[misc]
        if self.connection_acknowledged:
            with contextlib.suppress(Exception):
                principal = await self.context.principal()  # authenticated once, in on_ws_connect
                self.context.connection.app.state.open_connections.add(self, principal)

    async def shutdown(self) -> None:
        with contextlib.suppress(Exception):
            self.context.connection.app.state.open_connections.discard(self)
        await super().shutdown()  # type: ignore[misc]


async def watch_credentials(runtime: Runtime, connections: OpenConnections) -> None:
    """Runs for the life of the API process."""
    listener = asyncio.create_task(_listen(runtime, connections), name="revocations")
    try:
        last_recheck = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(1.0)
            try:
                await connections.close_expired()
                now = asyncio.get_running_loop().time()
                if now - last_recheck >= runtime.settings.credential_recheck_seconds:
                    last_recheck = now
                    await connections.recheck(runtime)
            except Exception as exc:  # the database may be down: try again at the next tick
                log.warning("could not re-check open connections' credentials", error=type(exc).__name__)
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener


async def _listen(runtime: Runtime, connections: OpenConnections) -> None:
    while True:
        try:
            async with runtime.broadcaster.subscribe(revocation.REVOKED_CHANNEL, gaps=True) as messages:
                async for message in messages:
                    if isinstance(message, Gap):  # announcements may have been lost: ask PostgreSQL now
                        await connections.recheck(runtime)
                        continue
                    ended = Revoked.decode(message)
                    await connections.close_where(ended.covers, "credential revoked")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("revocation listener lost Redis; retrying", error=type(exc).__name__)
        await asyncio.sleep(1.0)
