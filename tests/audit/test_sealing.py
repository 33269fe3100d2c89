"""Immutability (trigger), sealing into digests, and verification that catches tampering."""

from __future__ import annotations

import os
import subprocess

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from app.audit import sealing
from support import agentrail_command, gql, register


async def _log_many(client, account, n: int, prefix: str = "a") -> list[str]:
    result = await gql(
        client, "LogEvents", {"input": [{"action": f"{prefix}{i}"} for i in range(n)]}, token=account.token
    )
    return [r["id"] for r in result["data"]["logEvents"]]


async def test_update_and_delete_are_refused_by_the_database(client, runtime):
    account = await register(client)
    [log_id] = await _log_many(client, account, 1)
    for statement in (
        "UPDATE audit_logs SET prompt = 'changed' WHERE id = :id",
        "DELETE FROM audit_logs WHERE id = :id",
    ):
        async with runtime.db.engine.connect() as conn:
            with pytest.raises(DBAPIError, match="immutable"):
                await conn.execute(sa.text(statement), {"id": log_id})


async def test_seal_then_verify(client, runtime):
    account = await register(client)
    await _log_many(client, account, 25)
    assert await sealing.seal_all(runtime.db, runtime.signer) == 1
    assert await sealing.seal_all(runtime.db, runtime.signer) == 0  # nothing new
    await _log_many(client, account, 5, "b")
    assert await sealing.seal_all(runtime.db, runtime.signer) == 1
    await _log_many(client, account, 3, "c")  # not sealed yet: checked by checksum only
    result = (await gql(client, "VerifyAuditTrail", {}, token=account.token))["data"]["verifyAuditTrail"]
    assert result == {
        "ok": True,
        "recordsChecked": 33,
        "digestsChecked": 2,
        "recordsErased": 0,
        "firstBrokenRecordId": None,
        "firstBrokenDigestId": None,
        "reason": None,
        "expiredThroughIndex": 0,
    }
    async with runtime.db.engine.connect() as conn:
        digests = (
            await conn.execute(
                sa.text(
                    "SELECT sequence, record_count, previous_hash, digest_hash FROM audit_digests ORDER BY sequence"
                )
            )
        ).all()
    assert [(d.sequence, d.record_count) for d in digests] == [(1, 25), (2, 5)]
    assert digests[1].previous_hash == digests[0].digest_hash


async def _tamper(runtime, statement: str, params: dict) -> None:
    """Edits behind the trigger's back, as an attacker with database access would."""
    async with runtime.db.engine.begin() as conn:
        await conn.execute(sa.text("ALTER TABLE audit_logs DISABLE TRIGGER USER"))
        await conn.execute(sa.text(statement), params)
        await conn.execute(sa.text("ALTER TABLE audit_logs ENABLE TRIGGER USER"))


async def test_verification_catches_an_edited_record(client, runtime):
    account = await register(client)
    ids = await _log_many(client, account, 10)
    await sealing.seal_all(runtime.db, runtime.signer)
    await _tamper(runtime, "UPDATE audit_logs SET prompt = 'nothing to see' WHERE id = :id", {"id": ids[6]})
    result = (await gql(client, "VerifyAuditTrail", {}, token=account.token))["data"]["verifyAuditTrail"]
    assert result["ok"] is False
    assert result["firstBrokenRecordId"] == ids[6]
    assert "altered" in result["reason"]


async def test_verification_catches_a_record_edited_with_its_hashes_recomputed(client, runtime):
    """An attacker who also recomputes the record's checksum and entry hash breaks the link to the next record;
    the edited one is named."""
    from app.audit.service import get_record
    from app.integrity import AUDIT_CHAIN, chain_hashes

    account = await register(client)
    ids = await _log_many(client, account, 4)
    await sealing.seal_all(runtime.db, runtime.signer)
    async with runtime.db.engine.connect() as conn:
        previous = (
            await conn.execute(sa.text("SELECT entry_hash FROM audit_logs WHERE id = :id"), {"id": ids[1]})
        ).scalar_one()
    async with runtime.db.tenant_session(account.org_id) as session:
        record = await get_record(session, ids[2])
    record.action = "forged"
    hashes = chain_hashes(AUDIT_CHAIN, record, 3, previous)
    await _tamper(
        runtime,
        "UPDATE audit_logs SET action = 'forged', checksum = :c, entry_hash = :e WHERE id = :id",
        {"c": hashes.checksum, "e": hashes.entry_hash, "id": ids[2]},
    )
    result = (await gql(client, "VerifyAuditTrail", {}, token=account.token))["data"]["verifyAuditTrail"]
    assert result["ok"] is False and "chain breaks after" in result["reason"]
    assert result["firstBrokenRecordId"] == ids[2]


async def test_verification_catches_a_deleted_record_and_a_forged_digest(client, runtime):
    account = await register(client)
    ids = await _log_many(client, account, 6)
    await sealing.seal_all(runtime.db, runtime.signer)
    await _tamper(runtime, "DELETE FROM audit_logs WHERE id = :id", {"id": ids[3]})
    result = (await gql(client, "VerifyAuditTrail", {}, token=account.token))["data"]["verifyAuditTrail"]
    assert result["ok"] is False and "missing" in result["reason"]
    assert result["firstBrokenRecordId"] == ids[4]  # the one after the gap

    async with runtime.db.engine.begin() as conn:
        await conn.execute(sa.text("ALTER TABLE audit_digests DISABLE TRIGGER audit_digests_immutable"))
        await conn.execute(sa.text("UPDATE audit_digests SET record_count = 5"))
        await conn.execute(sa.text("ALTER TABLE audit_digests ENABLE TRIGGER audit_digests_immutable"))
    result = (await gql(client, "VerifyAuditTrail", {}, token=account.token))["data"]["verifyAuditTrail"]
    assert result["ok"] is False and "does not match its content" in result["reason"]
    assert result["firstBrokenDigestId"] is not None


async def test_seal_job_runs_in_a_real_worker(client, runtime):
    from workers.settings import run_worker

    account = await register(client)
    await _log_many(client, account, 3)
    job = await runtime.queue.enqueue_job("seal_audit_trail")
    await run_worker(runtime, burst=True)
    assert await job.result(timeout=10) == 2  # the records, and the activity trail (the registration)
    async with runtime.db.engine.connect() as conn:
        streams = (await conn.execute(sa.text("SELECT stream FROM audit_digests ORDER BY stream"))).scalars().all()
        assert streams == ["activity", "audit"]


async def test_seal_and_verify_commands(client, runtime, database_url, redis_url):
    import asyncio
    import json

    account = await register(client)
    ids = await _log_many(client, account, 4)
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "AGENTRAIL_SECRET_KEY": runtime.secret_key,
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*agentrail_command(), *args], env=env, capture_output=True, text=True, timeout=120)

    sealed = await asyncio.to_thread(run, "seal")
    assert sealed.returncode == 0, sealed.stderr
    assert json.loads(sealed.stdout) == {"digestsWritten": 2}  # records and activity
    verified = await asyncio.to_thread(run, "verify")
    assert verified.returncode == 0, verified.stderr
    report = json.loads(verified.stdout.splitlines()[0])
    assert report["organizationId"] == account.org_id and report["ok"] is True and report["recordsChecked"] == 4

    await _tamper(runtime, "UPDATE audit_logs SET response = 'edited' WHERE id = :id", {"id": ids[1]})
    broken = await asyncio.to_thread(run, "verify", "--org", account.org_id)
    assert broken.returncode == 1
    audit_line, activity_line = map(json.loads, broken.stdout.splitlines())
    assert audit_line["trail"] == "audit" and audit_line["firstBrokenRecordId"] == ids[1]
    assert activity_line["trail"] == "activity" and activity_line["ok"] is True
