"""Tampering with the activity trail as a database owner would (issue 16.7, as tests/audit/test_attacks.py does for
audit records): with a superuser connection, past the immutability trigger. Each attack is detected by
`verifyActivityTrail` (the code of `agentrail verify`) and by the offline verifier on an activity export with
includeProofs, naming the right event."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest
import sqlalchemy as sa

from app.activity.service import record_activity
from app.audit import sealing
from app.audit.streams import STREAMS
from app.integrity import ACTIVITY_CHAIN, Signer, chain_hashes, digest_hash
from support import gql, register

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sdk" / "verify" / "src"))
from agentrail_verify import verify_lines

SEALED = 300  # more than one block of 256: the kept leaves name a sealed event exactly
UNSEALED = 6
TABLES = ("activity_events", "audit_digests", "audit_merkle_nodes", "audit_signing_keys")
VERIFY = """query { verifyActivityTrail {
  ok recordsChecked digestsChecked firstBrokenRecordId firstBrokenDigestId reason } }"""


async def _superuser(runtime, *statements: tuple[str, dict] | str) -> None:
    async with runtime.db.engine.begin() as conn:
        for table in TABLES:
            await conn.execute(sa.text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
        for statement in statements:
            sql, params = statement if isinstance(statement, tuple) else (statement, {})
            await conn.execute(sa.text(sql), params)
        for table in TABLES:
            await conn.execute(sa.text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))


async def _add_events(runtime, org_id: str, count: int, prefix: str) -> None:
    """`count` events of the organisation in one transaction (chained when it flushes, as any other)."""
    async with runtime.db.tenant_session(org_id) as session:
        for i in range(count):
            record_activity(
                session, None, "agent.updated", org_id=org_id, target_type="agent", target_id=f"agent_{prefix}{i}",
                metadata={"name": f"{prefix}{i}", "changes": {"limit": {"from": i, "to": i + 1}}},
            )  # fmt: skip
        await session.commit()


async def _events(runtime, org_id: str) -> list[dict]:
    async with runtime.db.engine.connect() as conn:
        rows = await conn.execute(
            sa.text("SELECT * FROM activity_events WHERE org_id = :o ORDER BY chain_index"), {"o": org_id}
        )
        return [dict(r._mapping) for r in rows]


@pytest.fixture
async def trail(client, runtime):
    """An organisation whose activity trail has SEALED events in two signed digests (published) and UNSEALED after."""
    account = await register(client)
    await _add_events(runtime, account.org_id, 200 - len(await _events(runtime, account.org_id)), "a")
    assert await sealing.seal_all(runtime.db, runtime.signer, runtime=runtime, streams=STREAMS) >= 1
    await _add_events(runtime, account.org_id, SEALED - 200, "b")
    assert await sealing.seal_all(runtime.db, runtime.signer, runtime=runtime, streams=STREAMS) >= 1
    await _add_events(runtime, account.org_id, UNSEALED, "u")
    events = await _events(runtime, account.org_id)
    assert len(events) == SEALED + UNSEALED
    account = SimpleNamespace(token=account.token, org_id=account.org_id, ids=[e["id"] for e in events])
    async with runtime.db.engine.connect() as conn:
        rows = await conn.execute(
            sa.text(
                "SELECT id, sequence, digest_hash FROM audit_digests WHERE org_id = :o AND stream = 'activity'"
                " ORDER BY sequence"
            ),
            {"o": account.org_id},
        )
        account.digests = [dict(r._mapping) for r in rows]
    assert len(account.digests) == 2
    assert (await _verify(client, account))["ok"] is True
    assert (await _offline(client, runtime, account)).ok
    return account


async def _verify(client, account) -> dict:
    result = await gql(client, VERIFY, token=account.token)
    assert "errors" not in result, result
    return result["data"]["verifyActivityTrail"]


async def _offline(client, runtime, account, *, public_key: bytes | None = None, known=()):
    response = await client.get(
        "/api/v1/activity/export?includeProofs=true", headers={"Authorization": f"Bearer {account.token}"}
    )
    assert response.status_code == 200, response.text
    return verify_lines(response.content.splitlines(), public_key or runtime.signer.public_key, known_digests=known)


def _record(row: dict) -> dict:
    return {**{name: row[name] for name in ACTIVITY_CHAIN.header_fields}, "metadata": row["metadata"]}


async def _row(runtime, event_id: str) -> dict:
    async with runtime.db.engine.connect() as conn:
        row = (await conn.execute(sa.text("SELECT * FROM activity_events WHERE id = :id"), {"id": event_id})).one()
    return dict(row._mapping)


async def _entry_at(runtime, org_id: str, index: int) -> bytes:
    if index < 1:
        return bytes(32)
    async with runtime.db.engine.connect() as conn:
        return bytes(
            (
                await conn.execute(
                    sa.text("SELECT entry_hash FROM activity_events WHERE org_id = :o AND chain_index = :i"),
                    {"o": org_id, "i": index},
                )
            ).scalar_one()
        )


async def _recompute(runtime, event_id: str, **changes) -> None:
    """Edits an event and recomputes every hash of its own: content hash, checksum, entry hash."""
    row = await _row(runtime, event_id)
    before = await _entry_at(runtime, row["org_id"], row["chain_index"] - 1)
    hashes = chain_hashes(ACTIVITY_CHAIN, {**_record(row), **changes}, row["chain_index"], before)
    sets = ", ".join(f"{k} = :{k}" for k in changes)
    await _superuser(
        runtime,
        (
            f"UPDATE activity_events SET {sets}, content_hash = :c, checksum = :s, entry_hash = :e WHERE id = :id",
            {**changes, "c": hashes.content_hash, "s": hashes.checksum, "e": hashes.entry_hash, "id": event_id},
        ),
    )


def _named(report, event_id: str) -> bool:
    return not report.ok and report.breaks[0]["recordId"] == event_id


FORGED = "someone.else@example.com"


async def test_edit_sealed_without_recomputing(client, runtime, trail):
    target = trail.ids[10]
    await _superuser(
        runtime, ("UPDATE activity_events SET actor_email = :v WHERE id = :id", {"v": FORGED, "id": target})
    )
    result = await _verify(client, trail)
    assert result["ok"] is False and result["firstBrokenRecordId"] == target and "altered" in result["reason"]
    assert _named(await _offline(client, runtime, trail), target)


async def test_edit_sealed_content_with_its_hashes_recomputed(client, runtime, trail):
    target = trail.ids[10]
    await _superuser(
        runtime,
        (
            "UPDATE activity_events SET metadata = CAST(:m AS jsonb) WHERE id = :id",
            {"m": orjson.dumps({"name": "x", "changes": {"limit": {"from": 0, "to": 10**9}}}).decode(), "id": target},
        ),
    )
    row = await _row(runtime, target)
    await _recompute(runtime, target, actor_email=FORGED)  # and every hash of its own, over the new metadata
    assert (await _row(runtime, target))["metadata"] == row["metadata"]
    result = await _verify(client, trail)
    assert result["ok"] is False and result["firstBrokenRecordId"] == target, result
    assert _named(await _offline(client, runtime, trail), target)


async def test_edit_sealed_with_the_whole_chain_after_it_recomputed(client, runtime, trail):
    target = trail.ids[10]
    await _recompute(runtime, target, actor_email=FORGED)
    statements = []
    previous = (await _row(runtime, target))["entry_hash"]
    for event_id in trail.ids[11:]:  # every later entry hash, so that the chain holds again
        row = await _row(runtime, event_id)
        hashes = chain_hashes(ACTIVITY_CHAIN, _record(row), row["chain_index"], bytes(previous))
        previous = hashes.entry_hash
        statements.append(
            ("UPDATE activity_events SET entry_hash = :e WHERE id = :id", {"e": previous, "id": event_id})
        )
    await _superuser(runtime, *statements)
    result = await _verify(client, trail)
    assert result["ok"] is False and result["firstBrokenRecordId"] == target, result
    assert _named(await _offline(client, runtime, trail), target)


async def test_edit_unsealed_without_and_with_recomputing(client, runtime, trail):
    target = trail.ids[SEALED + 2]
    await _superuser(runtime, ("UPDATE activity_events SET action = 'forged' WHERE id = :id", {"id": target}))
    result = await _verify(client, trail)
    assert result["ok"] is False and result["firstBrokenRecordId"] == target, result
    assert _named(await _offline(client, runtime, trail), target)
    await _recompute(runtime, target, action="forged")
    result = await _verify(client, trail)
    assert result["ok"] is False and result["firstBrokenRecordId"] == target, result
    assert _named(await _offline(client, runtime, trail), target)


@pytest.mark.parametrize("position", [10, SEALED + 2])
async def test_delete_one(client, runtime, trail, position):
    await _superuser(runtime, ("DELETE FROM activity_events WHERE id = :id", {"id": trail.ids[position]}))
    after = trail.ids[position + 1]
    result = await _verify(client, trail)
    assert result["ok"] is False and result["firstBrokenRecordId"] == after and "missing" in result["reason"]
    report = await _offline(client, runtime, trail)
    assert _named(report, after) and "removed" in report.breaks[0]["reason"]


async def test_delete_the_tail_with_its_digests(client, runtime, trail):
    last = trail.digests[-1]
    await _superuser(
        runtime,
        ("DELETE FROM activity_events WHERE org_id = :o AND chain_index > 200", {"o": trail.org_id}),
        (
            "DELETE FROM audit_merkle_nodes WHERE org_id = :o AND stream = 'activity' AND level = 8 AND idx > 0",
            {"o": trail.org_id},
        ),
        ("DELETE FROM audit_digests WHERE id = :id", {"id": last["id"]}),
    )
    result = await _verify(client, trail)
    assert result["ok"] is False and "was published" in result["reason"], result
    kept = {"id": last["id"], "payload": {"sequence": last["sequence"]}, "digestHash": last["digest_hash"]}
    report = await _offline(client, runtime, trail, known=[kept])
    assert not report.ok and report.breaks[0]["digestId"] == last["id"] and "cut" in report.breaks[0]["reason"]


async def test_reorder_two_sealed_events(client, runtime, trail):
    first, second = trail.ids[20], trail.ids[21]
    await _superuser(
        runtime,
        ("UPDATE activity_events SET chain_index = -1 WHERE id = :id", {"id": first}),
        ("UPDATE activity_events SET chain_index = 21 WHERE id = :id", {"id": second}),
        ("UPDATE activity_events SET chain_index = 22 WHERE id = :id", {"id": first}),
    )
    result = await _verify(client, trail)
    assert result["ok"] is False and result["firstBrokenRecordId"] == second, result
    assert _named(await _offline(client, runtime, trail), second)


async def test_insert_an_event_into_the_sealed_chain(client, runtime, trail):
    row = await _row(runtime, trail.ids[30])
    place = row["chain_index"]  # the forged event takes this place; the rest move up by one
    forged = {**row, "id": "act_forged", "action": "member.removed", "target_name": "the auditor"}
    hashes = chain_hashes(ACTIVITY_CHAIN, _record(forged), place, await _entry_at(runtime, trail.org_id, place - 1))
    forged |= {"content_hash": hashes.content_hash, "entry_hash": hashes.entry_hash, "checksum": hashes.checksum}
    forged["metadata"] = orjson.dumps(forged["metadata"]).decode()
    columns = list(forged)
    placeholders = ", ".join("CAST(:metadata AS jsonb)" if c == "metadata" else f":{c}" for c in columns)
    await _superuser(
        runtime,
        (
            "UPDATE activity_events SET chain_index = -chain_index WHERE org_id = :o AND chain_index >= :p",
            {"o": trail.org_id, "p": place},
        ),
        (
            "UPDATE activity_events SET chain_index = 1 - chain_index WHERE org_id = :o AND chain_index < 0",
            {"o": trail.org_id},
        ),
        (f"INSERT INTO activity_events ({', '.join(columns)}) VALUES ({placeholders})", forged),
    )
    result = await _verify(client, trail)
    assert result["ok"] is False and result["firstBrokenRecordId"] == "act_forged", result
    assert _named(await _offline(client, runtime, trail), "act_forged")


async def test_truncate(client, runtime, trail):
    await _superuser(
        runtime,
        ("DELETE FROM audit_digests WHERE org_id = :o AND stream = 'activity'", {"o": trail.org_id}),
        ("DELETE FROM audit_merkle_nodes WHERE org_id = :o AND stream = 'activity'", {"o": trail.org_id}),
        "TRUNCATE activity_events",
    )
    result = await _verify(client, trail)
    assert result["ok"] is False and "truncated" in result["reason"], result
    kept = [
        {"id": d["id"], "payload": {"sequence": d["sequence"]}, "digestHash": d["digest_hash"]} for d in trail.digests
    ]
    report = await _offline(client, runtime, trail, known=kept)
    assert not report.ok and report.records == 0 and "truncated" in report.breaks[0]["reason"], report.breaks


async def test_replace_the_signing_key_and_re_sign_the_digests(client, runtime, trail):
    evil = Signer(b"\x66" * 32)
    await _superuser(
        runtime,
        ("UPDATE audit_signing_keys SET id = :id, public_key = :k", {"id": evil.key_id, "k": evil.public_key}),
    )
    async with runtime.db.engine.connect() as conn:
        rows = [
            dict(r._mapping)
            for r in await conn.execute(
                sa.text("SELECT * FROM audit_digests WHERE org_id = :o AND stream = 'activity' ORDER BY sequence"),
                {"o": trail.org_id},
            )
        ]
    previous = rows[0]["previous_hash"]
    statements = []
    for row in rows:
        row = {**row, "key_id": evil.key_id, "previous_hash": previous}
        payload = sealing.v2_payload(sealing.AuditDigest(**row))
        signed = {"k": evil.key_id, "p": previous, "h": digest_hash(payload), "s": evil.sign(payload), "id": row["id"]}
        previous = signed["h"]
        statements.append(
            (
                "UPDATE audit_digests SET key_id = :k, previous_hash = :p, digest_hash = :h, signature = :s"
                " WHERE id = :id",
                signed,
            )
        )
    await _superuser(runtime, *statements)
    result = await _verify(client, trail)
    assert result["ok"] is False and "no trusted key" in result["reason"], result
    assert result["firstBrokenDigestId"] == rows[0]["id"]
    report = await _offline(client, runtime, trail)
    assert not report.ok and "no trusted key" in report.breaks[0]["reason"]
    assert report.breaks[0]["digestId"] == rows[0]["id"]


async def test_forge_a_digest(client, runtime, trail):
    first = trail.digests[0]
    async with runtime.db.engine.connect() as conn:
        row = dict(
            (await conn.execute(sa.text("SELECT * FROM audit_digests WHERE id = :id"), {"id": first["id"]}))
            .one()
            ._mapping
        )
    payload = sealing.v2_payload(sealing.AuditDigest(**{**row, "record_count": 150, "tree_size": 150}))
    await _superuser(
        runtime,
        (
            "UPDATE audit_digests SET record_count = 150, tree_size = 150, digest_hash = :h WHERE id = :id",
            {"h": digest_hash(payload), "id": first["id"]},
        ),
    )
    result = await _verify(client, trail)
    assert result["ok"] is False and result["firstBrokenDigestId"] == first["id"], result
    report = await _offline(client, runtime, trail)
    assert not report.ok and report.breaks[0]["digestId"] == first["id"] and "signature" in report.breaks[0]["reason"]
