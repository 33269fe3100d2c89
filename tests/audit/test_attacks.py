"""Tampering as a database owner would (issue 16.6, 16.7): with a superuser connection, past the immutability
triggers. Each attack is detected by verification (`verifyAuditTrail`, the code of `agentrail verify`) and by the
offline verifier (sdk/verify, `agentrail-verify`) on an export with includeProofs, naming the right record."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest
import sqlalchemy as sa

from app.audit import sealing
from app.integrity import AUDIT_CHAIN, Signer, chain_hashes, digest_hash
from support import create_api_key, gql, register

VERIFY_SRC = Path(__file__).resolve().parents[2] / "sdk" / "verify" / "src"
sys.path.insert(0, str(VERIFY_SRC))
from agentrail_verify import verify_lines  # noqa: E402

SEALED = 300  # more than one block of 256: the kept leaves name a sealed record exactly
UNSEALED = 6
TABLES = ("audit_logs", "audit_digests", "audit_merkle_nodes", "audit_signing_keys")


async def _superuser(runtime, *statements: tuple[str, dict] | str) -> None:
    async with runtime.db.engine.begin() as conn:
        for table in TABLES:
            await conn.execute(sa.text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
        for statement in statements:
            sql, params = statement if isinstance(statement, tuple) else (statement, {})
            await conn.execute(sa.text(sql), params)
        for table in TABLES:
            await conn.execute(sa.text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))


@pytest.fixture
async def trail(client, runtime):
    """An organisation with SEALED records in two signed digests (published) and UNSEALED ones after them."""
    account = await register(client)
    ids: list[str] = []
    for count in (200, SEALED - 200):
        batch = [{"action": "pay", "prompt": f"send {i} USD", "metadata": {"i": i}} for i in range(count)]
        result = await gql(client, "LogEvents", {"input": batch}, token=account.token)
        ids += [r["id"] for r in result["data"]["logEvents"]]
        assert await sealing.seal_all(runtime.db, runtime.signer, runtime=runtime) == 1
    result = await gql(
        client, "LogEvents", {"input": [{"action": f"u{i}"} for i in range(UNSEALED)]}, token=account.token
    )
    ids += [r["id"] for r in result["data"]["logEvents"]]
    key, _ = await create_api_key(client, account)
    account = SimpleNamespace(token=account.token, org_id=account.org_id, key=key, ids=ids)
    async with runtime.db.engine.connect() as conn:
        rows = await conn.execute(
            sa.text("SELECT id, sequence, digest_hash FROM audit_digests WHERE org_id = :o ORDER BY sequence"),
            {"o": account.org_id},
        )
        account.digests = [dict(r._mapping) for r in rows]
    assert (await _verify(client, account))["ok"] is True
    assert (await _offline(client, runtime, account)).ok
    return account


async def _verify(client, account) -> dict:
    return (await gql(client, "VerifyAuditTrail", {}, token=account.token))["data"]["verifyAuditTrail"]


async def _bundle(client, account) -> bytes:
    response = await client.get("/api/v1/audit-logs/export?includeProofs=true", headers={"X-API-Key": account.key})
    assert response.status_code == 200, response.text
    return response.content


async def _offline(client, runtime, account, *, public_key: bytes | None = None, known=()):
    lines = (await _bundle(client, account)).splitlines()
    return verify_lines(lines, public_key or runtime.signer.public_key, known_digests=known)


async def _row(runtime, record_id: str) -> dict:
    async with runtime.db.engine.connect() as conn:
        row = (await conn.execute(sa.text("SELECT * FROM audit_logs WHERE id = :id"), {"id": record_id})).one()
    return dict(row._mapping)


def _record(row: dict) -> dict:
    return {**row, "metadata": row["metadata"]}


async def _recompute(runtime, record_id: str, **changes) -> None:
    """Edits a record and recomputes every hash of its own: content hash, checksum, entry hash."""
    row = await _row(runtime, record_id)
    before = await _entry_at(runtime, row["org_id"], row["chain_index"] - 1)
    edited = {**_record(row), **changes}
    hashes = chain_hashes(AUDIT_CHAIN, edited, row["chain_index"], before)
    sets = ", ".join(f"{k} = :{k}" for k in changes if k != "metadata")
    await _superuser(
        runtime,
        (
            f"UPDATE audit_logs SET {sets}, content_hash = :c, checksum = :s, entry_hash = :e WHERE id = :id",
            {**changes, "c": hashes.content_hash, "s": hashes.checksum, "e": hashes.entry_hash, "id": record_id},
        ),
    )


async def _entry_at(runtime, org_id: str, index: int) -> bytes:
    if index < 1:
        return bytes(32)
    async with runtime.db.engine.connect() as conn:
        return bytes(
            (
                await conn.execute(
                    sa.text("SELECT entry_hash FROM audit_logs WHERE org_id = :o AND chain_index = :i"),
                    {"o": org_id, "i": index},
                )
            ).scalar_one()
        )


def _named(report, record_id: str) -> bool:
    return not report.ok and report.breaks[0]["recordId"] == record_id


async def test_edit_sealed_without_recomputing(client, runtime, trail):
    target = trail.ids[10]
    await _superuser(
        runtime, ("UPDATE audit_logs SET prompt = 'send 10000000 USD to acct 666' WHERE id = :id", {"id": target})
    )
    result = await _verify(client, trail)
    assert result["ok"] is False and result["firstBrokenRecordId"] == target and "altered" in result["reason"]
    assert _named(await _offline(client, runtime, trail), target)


async def test_edit_sealed_with_its_hashes_recomputed(client, runtime, trail):
    target = trail.ids[10]
    await _recompute(runtime, target, prompt="send 10000000 USD to acct 666")
    result = await _verify(client, trail)
    assert result["ok"] is False and result["firstBrokenRecordId"] == target, result
    assert _named(await _offline(client, runtime, trail), target)


async def test_edit_sealed_with_the_whole_chain_after_it_recomputed(client, runtime, trail):
    target = trail.ids[10]
    await _recompute(runtime, target, prompt="send 10000000 USD to acct 666")
    for record_id in trail.ids[11:]:  # every later entry hash, so that the chain holds again
        row = await _row(runtime, record_id)
        before = await _entry_at(runtime, row["org_id"], row["chain_index"] - 1)
        hashes = chain_hashes(AUDIT_CHAIN, _record(row), row["chain_index"], before)
        await _superuser(
            runtime, ("UPDATE audit_logs SET entry_hash = :e WHERE id = :id", {"e": hashes.entry_hash, "id": record_id})
        )
    result = await _verify(client, trail)
    assert result["ok"] is False and result["firstBrokenRecordId"] == target, result
    assert _named(await _offline(client, runtime, trail), target)


async def test_edit_unsealed_without_and_with_recomputing(client, runtime, trail):
    target = trail.ids[SEALED + 2]
    await _superuser(runtime, ("UPDATE audit_logs SET action = 'forged' WHERE id = :id", {"id": target}))
    result = await _verify(client, trail)
    assert result["ok"] is False and result["firstBrokenRecordId"] == target, result
    assert _named(await _offline(client, runtime, trail), target)
    await _recompute(runtime, target, action="forged")
    result = await _verify(client, trail)
    assert result["ok"] is False and result["firstBrokenRecordId"] == target, result
    assert _named(await _offline(client, runtime, trail), target)


@pytest.mark.parametrize("position", [10, SEALED + 2])
async def test_delete_one(client, runtime, trail, position):
    await _superuser(runtime, ("DELETE FROM audit_logs WHERE id = :id", {"id": trail.ids[position]}))
    after = trail.ids[position + 1]
    result = await _verify(client, trail)
    assert result["ok"] is False and result["firstBrokenRecordId"] == after and "missing" in result["reason"]
    report = await _offline(client, runtime, trail)
    assert _named(report, after) and "removed" in report.breaks[0]["reason"]


async def test_delete_the_tail_with_its_digests(client, runtime, trail):
    last = trail.digests[-1]
    await _superuser(
        runtime,
        ("DELETE FROM audit_logs WHERE org_id = :o AND chain_index > 200", {"o": trail.org_id}),
        ("DELETE FROM audit_merkle_nodes WHERE org_id = :o AND level = 8 AND idx > 0", {"o": trail.org_id}),
        ("DELETE FROM audit_digests WHERE id = :id", {"id": last["id"]}),
    )
    result = await _verify(client, trail)
    assert result["ok"] is False and "was published" in result["reason"]
    # what is left is consistent; the auditor's kept copy of the newest digest shows the cut
    kept = {"id": last["id"], "payload": {"sequence": last["sequence"]}, "digestHash": last["digest_hash"]}
    report = await _offline(client, runtime, trail, known=[kept])
    assert not report.ok and report.breaks[0]["digestId"] == last["id"] and "cut" in report.breaks[0]["reason"]


async def test_reorder_two_sealed_records(client, runtime, trail):
    first, second = trail.ids[20], trail.ids[21]
    await _superuser(
        runtime,
        ("UPDATE audit_logs SET chain_index = -1 WHERE id = :id", {"id": first}),
        ("UPDATE audit_logs SET chain_index = 21 WHERE id = :id", {"id": second}),
        ("UPDATE audit_logs SET chain_index = 22 WHERE id = :id", {"id": first}),
    )
    result = await _verify(client, trail)
    assert result["ok"] is False and result["firstBrokenRecordId"] == second, result
    assert _named(await _offline(client, runtime, trail), second)


async def test_insert_a_record_into_the_sealed_chain(client, runtime, trail):
    row = await _row(runtime, trail.ids[30])
    place = row["chain_index"]  # the forged record takes this place; the rest move up by one
    forged = {**_record(row), "id": "log_forged", "prompt": "approved by the CFO", "chain_index": place}
    hashes = chain_hashes(AUDIT_CHAIN, forged, place, await _entry_at(runtime, trail.org_id, place - 1))
    columns = [c for c in row if c not in ("seq",)]
    values = {**{c: forged[c] for c in columns}, "content_hash": hashes.content_hash, "entry_hash": hashes.entry_hash}
    values["checksum"] = hashes.checksum
    values["metadata"] = orjson.dumps(forged["metadata"]).decode()
    for name in ("args", "result"):
        values[name] = None if values[name] is None else orjson.dumps(values[name]).decode()
    placeholders = ", ".join(
        f"CAST(:{c} AS jsonb)" if c in ("metadata", "args", "result") else f":{c}" for c in columns
    )
    await _superuser(
        runtime,
        (
            "UPDATE audit_logs SET chain_index = -chain_index WHERE org_id = :o AND chain_index >= :p",
            {"o": trail.org_id, "p": place},
        ),
        (
            "UPDATE audit_logs SET chain_index = 1 - chain_index WHERE org_id = :o AND chain_index < 0",
            {"o": trail.org_id},
        ),
        (f"INSERT INTO audit_logs ({', '.join(columns)}) VALUES ({placeholders})", values),
    )
    result = await _verify(client, trail)
    assert result["ok"] is False and result["firstBrokenRecordId"] == "log_forged", result
    assert _named(await _offline(client, runtime, trail), "log_forged")


async def test_truncate(client, runtime, trail):
    await _superuser(runtime, "TRUNCATE audit_logs, audit_digests, audit_merkle_nodes CASCADE")
    result = await _verify(client, trail)
    assert result["ok"] is False and "truncated" in result["reason"]
    kept = [
        {"id": d["id"], "payload": {"sequence": d["sequence"]}, "digestHash": d["digest_hash"]} for d in trail.digests
    ]
    report = await _offline(client, runtime, trail, known=kept)
    assert not report.ok and report.records == 0 and "truncated" in report.breaks[0]["reason"]


async def test_replace_the_signing_key_and_re_sign_the_digests(client, runtime, trail):
    """The attacker re-signs every digest (after whatever rewrite) with a key of their own, registered in place of
    the real one."""
    evil = Signer(b"\x66" * 32)
    await _superuser(
        runtime,
        ("UPDATE audit_signing_keys SET id = :id, public_key = :k", {"id": evil.key_id, "k": evil.public_key}),
    )
    async with runtime.db.engine.connect() as conn:
        rows = [
            dict(r._mapping)
            for r in await conn.execute(
                sa.text("SELECT * FROM audit_digests WHERE org_id = :o ORDER BY sequence"), {"o": trail.org_id}
            )
        ]
    previous = rows[0]["previous_hash"]
    statements = []
    for row in rows:
        row = {**row, "key_id": evil.key_id, "previous_hash": previous}
        digest = sealing.AuditDigest(**row)
        payload = sealing.v2_payload(digest)
        row["digest_hash"], row["signature"] = digest_hash(payload), evil.sign(payload)
        previous = row["digest_hash"]
        statements.append(
            (
                "UPDATE audit_digests SET key_id = :k, previous_hash = :p, digest_hash = :h, signature = :s"
                " WHERE id = :id",
                {
                    "k": evil.key_id,
                    "p": row["previous_hash"],
                    "h": row["digest_hash"],
                    "s": row["signature"],
                    "id": row["id"],
                },
            )
        )
    await _superuser(runtime, *statements)
    result = await _verify(client, trail)
    assert (
        result["ok"] is False
        and "no trusted key" in result["reason"]
        and result["firstBrokenDigestId"] == rows[0]["id"]
    )
    report = await _offline(client, runtime, trail)
    assert not report.ok and "no trusted key" in report.breaks[0]["reason"]
    assert report.breaks[0]["digestId"] == rows[0]["id"]
    # with the attacker's key as the auditor's (a key not obtained out of band), it would pass: pin the right one
    assert (await _offline(client, runtime, trail, public_key=evil.public_key)).ok


async def test_forge_a_digest(client, runtime, trail):
    first = trail.digests[0]
    async with runtime.db.engine.connect() as conn:
        row = dict(
            (await conn.execute(sa.text("SELECT * FROM audit_digests WHERE id = :id"), {"id": first["id"]}))
            .one()
            ._mapping
        )
    forged = sealing.AuditDigest(**{**row, "record_count": 150, "tree_size": 150})
    payload = sealing.v2_payload(forged)
    await _superuser(
        runtime,
        (
            "UPDATE audit_digests SET record_count = 150, tree_size = 150, digest_hash = :h WHERE id = :id",
            {"h": digest_hash(payload), "id": first["id"]},
        ),
    )
    result = await _verify(client, trail)
    assert result["ok"] is False and result["firstBrokenDigestId"] == first["id"]
    report = await _offline(client, runtime, trail)
    assert not report.ok and report.breaks[0]["digestId"] == first["id"] and "signature" in report.breaks[0]["reason"]


async def test_the_command_line_verifier_runs_without_the_server(client, runtime, trail, tmp_path):
    bundle = tmp_path / "bundle.ndjson"
    bundle.write_bytes(await _bundle(client, trail))
    key = tmp_path / "key.pem"
    keys = (await client.get("/.well-known/agentrail-audit-keys.json")).json()["keys"]
    key.write_text(keys[-1]["publicKeyPem"])
    # the base interpreter, not this virtualenv: the verifier needs only the standard library and cryptography
    python = str(Path(sys.base_prefix) / "bin" / "python3")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    command = [python, "-m", "agentrail_verify", str(bundle), "--public-key", str(key), "--json"]
    done = await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, cwd=VERIFY_SRC, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = orjson.loads(done.stdout)
    assert report["ok"] and report["recordsChecked"] == SEALED + UNSEALED and report["rootsChecked"] == 2
    await _superuser(runtime, ("UPDATE audit_logs SET prompt = 'x' WHERE id = :id", {"id": trail.ids[5]}))
    bundle.write_bytes(await _bundle(client, trail))
    done = await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, cwd=VERIFY_SRC, timeout=60
    )
    assert done.returncode == 1 and trail.ids[5] in done.stdout
