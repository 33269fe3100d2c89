"""COPY streaming (app.runtime.copy_out): exact text through COPY's escapes, however the stream is cut; the
session's organisation scope applied; a COPY stopped half-way leaves no busy connection behind."""

from __future__ import annotations

import random

import sqlalchemy as sa

from app.audit.models import AuditLog
from app.db import global_text
from app.runtime.copy_out import CopyTextLines, copy_lines
from support import register

HOSTILE = ["plain", "tab\there", "line\nbreak", "cr\rlf\r\n", "back\\slash\\n", "\\\\", "\b\f\v\x01", "ü€😀", ""]


async def _raw_copy(runtime, values: list[str]) -> bytes:
    """COPY text output of `values`, as PostgreSQL sends it."""
    out = bytearray()

    async def sink(data: bytes) -> None:
        out.extend(data)

    async with runtime.db.engine.connect() as connection:
        driver = (await connection.get_raw_connection()).driver_connection
        await driver.copy_from_query(
            "SELECT v FROM unnest($1::text[]) WITH ORDINALITY AS t(v, n) ORDER BY n", values, output=sink
        )
    return bytes(out)


async def test_lines_come_back_exactly_however_the_stream_is_cut(runtime):
    rng = random.Random(5)
    values = ["".join(rng.choice(HOSTILE) for _ in range(rng.randint(0, 5))) for _ in range(300)]
    raw = await _raw_copy(runtime, values)
    for line_end in (b"\n", b"\r\n"):
        expected = b"".join(v.encode() + line_end for v in values)
        for _ in range(30):
            lines, rows, out = CopyTextLines(line_end), 0, bytearray()
            cuts = sorted(rng.sample(range(1, len(raw)), 40))
            for start, end in zip([0, *cuts], [*cuts, len(raw)], strict=True):
                count, text = lines.feed(raw[start:end])
                rows, out = rows + count, out + text
            lines.close()
            assert rows == len(values) and bytes(out) == expected


async def test_copy_is_scoped_to_the_sessions_organisation_and_can_stop_half_way(client, runtime):
    alice = await register(client, org="Alice")
    mallory = await register(client, org="Mallory")
    for n in range(3):
        await client.post(
            "/api/v1/audit-logs",
            json={"action": "llm_call", "prompt": f"alice {n}"},
            headers={"Authorization": f"Bearer {alice.token}"},
        )
    statement = sa.select(AuditLog.prompt).order_by(AuditLog.prompt)  # no organisation named: the scope adds it
    async with runtime.db.tenant_session(mallory.org_id) as session:
        assert [piece async for piece in copy_lines(session, statement)] == []
    async with runtime.db.tenant_session(alice.org_id) as session:
        assert b"".join([text async for _, text in copy_lines(session, statement)]) == b"alice 0\nalice 1\nalice 2\n"
        # stopped after the first piece of a long COPY: the session still closes cleanly
        long = sa.select(sa.func.repeat("x", 1000)).select_from(sa.func.generate_series(1, 200_000))
        pieces = copy_lines(session, long, depth=1)
        await anext(pieces)
        await pieces.aclose()
    async with runtime.db.tenant_session(alice.org_id) as session:
        assert (await session.execute(global_text("SELECT 1"))).scalar() == 1
