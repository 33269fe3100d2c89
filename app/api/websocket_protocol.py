"""What the graphql-transport-ws handler adds to strawberry's: keep-alive pings, and a refused
`connection_init` that keeps its reason.

- strawberry's graphql-transport-ws handler never pings (its `keep_alive` reaches only the legacy graphql-ws
  protocol): every acknowledged connection gets a `{"type": "ping"}` each `ws_ping_interval_seconds`; clients
  answer `pong` (graphql-ws does by itself).
- strawberry closes a refused `connection_init` with 4403 "Forbidden" whatever the refusal said: the close
  reason here is the refusal's `{"message", "code"}` as JSON (cut to the 123 bytes a close reason may hold).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson

CLOSE_FORBIDDEN = 4403
MAX_CLOSE_REASON_BYTES = 123


def rejection_reason(payload: dict[str, Any]) -> str:
    """`{"message": …, "code": …}` as a close reason, the message shortened until it fits."""
    code = str(payload.get("code", "FORBIDDEN"))
    message = text = str(payload.get("message", "Forbidden"))
    while True:
        reason = orjson.dumps({"message": text, "code": code}).decode()
        if len(reason.encode()) <= MAX_CLOSE_REASON_BYTES or not text:
            return reason
        message = message[:-1]
        text = message + "…" if message else ""


class SendsPings:
    """Mixin for the graphql-transport-ws handler."""

    ping_interval: float
    connection_acknowledged: bool
    _pinger: asyncio.Task[None] | None = None

    async def send_message(self, message: Any) -> None:  # strawberry's, for the type checker
        await super().send_message(message)  # type: ignore[misc]

    async def handle_connection_init(self, message: Any) -> None:
        await super().handle_connection_init(message)  # type: ignore[misc]
        if self.connection_acknowledged and self.ping_interval > 0 and self._pinger is None:
            self._pinger = asyncio.create_task(self._ping(), name="ws-ping")

    async def _ping(self) -> None:
        while True:
            await asyncio.sleep(self.ping_interval)
            try:
                await self.send_message({"type": "ping"})
            except Exception:  # the connection is gone; shutdown follows
                return

    async def shutdown(self) -> None:
        if self._pinger is not None:
            self._pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pinger
        await super().shutdown()  # type: ignore[misc]
