"""Big GraphQL answers encoded and sent in pieces, so that one tenant's 20 MB answer does not stall the others.

`orjson.dumps` of a whole result is one call that never yields: for a 10,000-span trace with every field (about
20 MB) that is 25-50 ms of a quiet machine (several times that on a loaded one) during which the event loop,
and every other request of the process, waits; writing the 20 MB to the socket in one `transport.write` is one
more such stretch (on loopback the kernel does the receiving side's work in the sending call too). orjson
holds the GIL throughout, so a thread would not help: the main thread could not run meanwhile either.

So a result estimated above `PIECEWISE_ABOVE` bytes is encoded as a sequence of pieces, each one `orjson.dumps`
of a part of the result worth about `PIECE_BYTES` (a slice of a long list, a run of a big object's small fields),
with a pause for the other requests after every `PAUSE_BYTES` encoded; the pieces joined are byte for byte what
`orjson.dumps` of the whole would be. The body is then written in chunks of `CHUNK_BYTES`, each after the
transport has drained below its high-water mark (uvicorn's flow control), not in one write. The response size
cap keeps its meaning: the whole answer is encoded (in pieces) before its first byte is sent, so an answer
above the cap is still refused whole, with its size, instead of being cut off.

Sizes are estimated by sampling, not by walking everything: a list is estimated as its length times its first
item, an object as the sum of its values; the estimate of a tree along its first branch overshoots, which only
makes the encoder look closer (an object estimated big is split into its fields, a list into slices), never
changes the bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import orjson
from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

PIECEWISE_ABOVE = 1 << 20  # estimated bytes above which an answer is encoded in pieces
PIECE_BYTES = 128 * 1024  # about what one orjson call encodes (well under a millisecond)
PAUSE_BYTES = 1 << 20  # encoded between two pauses for the other requests of the process
CHUNK_BYTES = 256 * 1024  # written to the transport at a time

_SAMPLE_DEPTH = 32  # deeper than any answer the depth limit lets through; past it a value counts as small


def estimate(value: Any, depth: int = 0) -> int:
    """About how many bytes `orjson.dumps(value)` would be, from a sample: lists by their first item."""
    kind = type(value)
    if kind is str:
        return len(value) + 2
    if kind is dict:
        if depth >= _SAMPLE_DEPTH:
            return 2
        return 2 + sum(len(k) + 4 + estimate(v, depth + 1) for k, v in value.items())
    if kind is list:
        if not value or depth >= _SAMPLE_DEPTH:
            return 2
        return 2 + len(value) * (1 + estimate(value[0], depth + 1))
    return 8


def json_pieces(value: Any, piece_bytes: int = PIECE_BYTES) -> Iterator[bytes]:
    """The compact JSON of `value` (exactly `orjson.dumps(value)` once joined), in pieces of about
    `piece_bytes` each (a single leaf larger than that is one piece)."""
    if estimate(value) <= piece_bytes:
        yield orjson.dumps(value)
        return
    if type(value) is dict:
        yield from _object_pieces(value, piece_bytes)
    elif type(value) is list:
        yield from _list_pieces(value, piece_bytes)
    else:
        yield orjson.dumps(value)


def _object_pieces(value: dict[str, Any], piece_bytes: int) -> Iterator[bytes]:
    # runs of small fields are encoded together (as a dict of them, whose braces are cut off); a big field is
    # split further. Keys keep their order: the JSON object is the same.
    opened = False
    run: dict[str, Any] = {}
    run_bytes = 0
    for key, item in value.items():
        size = estimate(item)
        if size > piece_bytes:
            if run:
                yield (b"," if opened else b"{") + orjson.dumps(run)[1:-1]
                opened, run, run_bytes = True, {}, 0
            yield (b"," if opened else b"{") + orjson.dumps(key) + b":"
            opened = True
            yield from json_pieces(item, piece_bytes)
            continue
        run[key] = item
        run_bytes += size
        if run_bytes >= piece_bytes:
            yield (b"," if opened else b"{") + orjson.dumps(run)[1:-1]
            opened, run, run_bytes = True, {}, 0
    if run:
        yield (b"," if opened else b"{") + orjson.dumps(run)[1:-1]
        opened = True
    yield b"}" if opened else b"{}"


def _list_pieces(value: list[Any], piece_bytes: int) -> Iterator[bytes]:
    # slices of as many items as the first one says fit in a piece; an item that alone is big is split further
    opened = False
    index, length = 0, len(value)
    while index < length:
        size = estimate(value[index])
        if size > piece_bytes:
            yield b"," if opened else b"["
            opened = True
            yield from json_pieces(value[index], piece_bytes)
            index += 1
            continue
        end = min(length, index + max(1, piece_bytes // max(size, 1)))
        yield (b"," if opened else b"[") + orjson.dumps(value[index:end])[1:-1]
        opened = True
        index = end
    yield b"]" if opened else b"[]"


async def encode_in_pieces(value: Any) -> tuple[list[bytes], int]:
    """`json_pieces(value)` with a pause after every PAUSE_BYTES: the pieces and their total size."""
    pieces: list[bytes] = []
    total = since_pause = 0
    for piece in json_pieces(value):
        pieces.append(piece)
        total += len(piece)
        since_pause += len(piece)
        if since_pause >= PAUSE_BYTES:
            since_pause = 0
            await asyncio.sleep(0)
    return pieces, total


class PiecewiseJSONResponse(Response):
    """A JSON response encoded when it is sent (`encode_in_pieces`), then written in chunks under flow
    control. `too_large(size)` gives the body to send instead when the answer exceeds `max_bytes`."""

    def __init__(
        self,
        data: Any,
        *,
        max_bytes: int,
        too_large: Any,
        status_code: int = 200,
        media_type: str | None = None,
        headers: dict[str, str] | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        super().__init__(b"", status_code=status_code, headers=headers, media_type=media_type, background=background)
        self.data = data
        self.max_bytes = max_bytes
        self.too_large = too_large

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        pieces, total = await encode_in_pieces(self.data)
        self.data = None  # the pieces hold the answer now
        if total > self.max_bytes:
            pieces = [self.too_large(total)]
            total = len(pieces[0])
        self.headers["content-length"] = str(total)
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        chunk: list[bytes] = []
        chunk_bytes = since_pause = 0
        for piece in pieces:
            chunk.append(piece)
            chunk_bytes += len(piece)
            if chunk_bytes >= CHUNK_BYTES:
                # uvicorn waits here while the transport is above its high-water mark; a client that reads
                # as fast as we write never makes it wait, so pause now and then anyway
                await send({"type": "http.response.body", "body": b"".join(chunk), "more_body": True})
                since_pause += chunk_bytes
                chunk, chunk_bytes = [], 0
                if since_pause >= PAUSE_BYTES:
                    since_pause = 0
                    await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b"".join(chunk), "more_body": False})
        if self.background is not None:
            await self.background()
