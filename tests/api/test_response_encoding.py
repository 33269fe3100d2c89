"""Big answers encoded in pieces (app/api/response_encoding.py): byte for byte orjson's encoding of the whole,
with pauses for the other requests of the process, and sent whole or refused whole over HTTP."""

from __future__ import annotations

import asyncio

import httpx
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from app.api import response_encoding
from app.api.response_encoding import encode_in_pieces, json_pieces
from support import create_api_key, gql, register

_leaves = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text()
_values = st.recursive(
    _leaves,
    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=6), inner, max_size=8),
    max_leaves=60,
)


@settings(max_examples=300, deadline=None)
@given(_values, st.integers(1, 200))
def test_the_pieces_are_orjsons_encoding_of_the_whole(value, piece_bytes):
    assert b"".join(json_pieces(value, piece_bytes)) == orjson.dumps(value)


def _trace(spans: int, fanout: int) -> dict:
    nodes = [{"id": f"log_{i}", "prompt": "p" * 300, "metadata": {"n": i, "tags": ["a", "b"]}, "children": []}
             for i in range(spans)]  # fmt: skip
    for i in range(1, spans):
        nodes[(i - 1) // fanout]["children"].append(nodes[i])
    return {"data": {"trace": {"rootSpans": [nodes[0]], "spans": [dict(n, children=[]) for n in nodes]}}}


def test_a_big_answer_is_many_small_pieces():
    value = _trace(5_000, 8)
    pieces = list(json_pieces(value))
    assert b"".join(pieces) == orjson.dumps(value)
    assert len(pieces) > 20
    # no piece is much more than PIECE_BYTES (the estimate of a tree overshoots; it never undershoots by much)
    assert max(len(p) for p in pieces) < 2 * response_encoding.PIECE_BYTES


async def test_encoding_pauses_for_the_other_tasks():
    value = _trace(10_000, 8)
    ticks = 0
    done = asyncio.Event()

    async def other() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(other())
    await asyncio.sleep(0)
    pieces, total = await encode_in_pieces(value)
    done.set()
    await task
    assert b"".join(pieces) == orjson.dumps(value) and total == len(orjson.dumps(value))
    assert ticks >= total // response_encoding.PAUSE_BYTES


async def test_a_big_answer_arrives_whole_over_http(client, live_server, monkeypatch):
    """Forty prompts of 100 kB (4 MB of answer): encoded in pieces, sent in chunks, the same JSON."""
    encoded: list[int] = []

    async def spy(value):
        pieces, total = await encode_in_pieces(value)
        encoded.append(len(pieces))
        return pieces, total

    monkeypatch.setattr(response_encoding, "encode_in_pieces", spy)
    account = await register(client)
    key, _ = await create_api_key(client, account)
    prompt = "0123456789" * 10_000
    records = [{"action": f"big {i}", "prompt": prompt, "traceId": "t-big"} for i in range(40)]
    stored = await gql(client, "mutation($r: [AuditLogInput!]!) { logEvents(input: $r) { id } }", {"r": records},
                       api_key=key)  # fmt: skip
    assert "errors" not in stored, str(stored)[:300]
    query = '{ trace(traceId: "t-big") { spans { id action prompt } } }'
    async with httpx.AsyncClient(base_url=f"http://{live_server}", timeout=60) as http:
        response = await http.post("/graphql", json={"query": query}, headers={"X-API-Key": key})
    assert response.status_code == 200
    assert int(response.headers["content-length"]) == len(response.content) > 40 * len(prompt)
    spans = orjson.loads(response.content)["data"]["trace"]["spans"]
    assert [s["action"] for s in spans] == [f"big {i}" for i in range(40)]
    assert all(s["prompt"] == prompt for s in spans)
    assert len(encoded) == 1 and encoded[0] > 10  # the piecewise path, not one orjson call
