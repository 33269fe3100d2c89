"""The bulk CSV writer against the reference one (the csv module, cell by cell), on hostile input."""

from __future__ import annotations

import asyncio
import random

from app.exports.formats import csv_batch, csv_stream, from_iterable

ALPHABET = "ab,\"\r\n=+-@\t 'x1ü€😀"


def _value(rng: random.Random):
    kind = rng.random()
    if kind < 0.1:
        return None
    if kind < 0.15:
        return rng.choice([True, False])
    if kind < 0.25:
        return rng.choice([1.5, -3.0, 100.0, 1e16, 1e-5, 0.1 + 0.2, -0.0, 7, -12])
    if kind < 0.3:
        return rng.choice([{"k": [1, 'a,"b'], "n": None}, [], {}, ["=1"]])
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 8)))


async def _reference(rows) -> bytes:
    return b"".join([chunk async for chunk in csv_stream([], from_iterable(rows))])[2:]  # without the empty header


def test_csv_batch_writes_exactly_what_the_csv_module_writes():
    rng = random.Random(20261130)
    for _ in range(400):
        width = rng.randint(2, 7)
        rows = [tuple(_value(rng) for _ in range(width)) for _ in range(rng.randint(1, 25))]
        assert csv_batch(rows) == asyncio.run(_reference(rows)), rows
    assert csv_batch([]) == b""
    assert csv_batch([("=1+1", "-2", "@x", "\tt", "\rr", "+3", "a,b", 'q"q', "l\nl")]) == (
        b'\'=1+1,\'-2,\'@x,\'\tt,"\'\rr",\'+3,"a,b","q""q","l\nl"\r\n'
    )
