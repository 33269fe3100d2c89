"""uvicorn's WebSocket protocol with one addition: a frame writer for live fan-out.

An alert that goes to a thousand subscribers is the same text frame a thousand times (server frames are
not masked). The ASGI path would frame, compress and flow-control it per connection; the writer lets the
fan-out hand one pre-built frame to each transport instead. It is offered to the app in the connection's
scope as `scope["extensions"]["agentrail.frame_writer"]`; code that does not find it uses plain ASGI sends.
"""

from __future__ import annotations

import struct
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

FRAME_WRITER = "agentrail.frame_writer"


def text_frame(payload: bytes) -> bytes:
    """One unfragmented, unmasked, uncompressed WebSocket text frame (RFC 6455 §5.2)."""
    length = len(payload)
    if length < 126:
        header = bytes((0x81, length))
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, length)
    else:
        header = struct.pack("!BBQ", 0x81, 127, length)
    return header + payload


class FrameWriter:
    """Writes whole pre-built frames to one accepted WebSocket connection."""

    __slots__ = ("_protocol", "_transport")

    def __init__(self, protocol: FanoutWebSocketProtocol) -> None:
        self._protocol = protocol
        self._transport = protocol.transport

    def buffered(self) -> int:
        """Bytes written but not yet taken by the peer: how far behind this subscriber is."""
        return self._transport.get_write_buffer_size()

    def write(self, frames: bytes) -> bool:
        """False when the connection is closing (the frames are dropped with it)."""
        protocol = self._protocol
        if protocol.close_sent or protocol.disconnected or self._transport.is_closing():
            return False
        self._transport.write(frames)
        return True


class FanoutWebSocketProtocol(WebSocketsSansIOProtocol):
    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][FRAME_WRITER] = FrameWriter(self)


def frame_writer(scope: dict[str, Any]) -> FrameWriter | None:
    return (scope.get("extensions") or {}).get(FRAME_WRITER)
