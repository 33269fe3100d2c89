"""Signed digests (issue 16.2) and proofs (16.3): Ed25519 digests over the RFC 9162 tree of the whole chain, key
rotation and publication, version 1 (HMAC) digests that keep verifying, inclusion and consistency proofs."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from app.audit import proofs, sealing, signing
from app.audit.models import AuditDigest
from app.db import scoped_text
from app.integrity import (
    GENESIS_HASH,
    Signer,
    digest_hash,
    digest_payload,
    digest_signing_key,
    merkle_root,
    root_from_inclusion,
    sign_digest,
    tree_root,
    verify_consistency,
    verify_ed25519,
)
from support import create_api_key, error_code, gql, register


async def _log(client, account, n: int, prefix: str = "r") -> list[str]:
    ids: list[str] = []
    for start in range(0, n, 500):
        batch = [{"action": f"{prefix}{i}", "metadata": {"i": i}} for i in range(start, min(n, start + 500))]
        result = await gql(client, "LogEvents", {"input": batch}, token=account.token)
        assert "errors" not in result, result
        ids += [r["id"] for r in result["data"]["logEvents"]]
    return ids


async def _entries(runtime, org_id: str) -> list[bytes]:
    async with runtime.db.engine.connect() as conn:
        rows = await conn.execute(
            sa.text("SELECT entry_hash FROM audit_logs WHERE org_id = :org ORDER BY chain_index"), {"org": org_id}
        )
        return [bytes(r[0]) for r in rows]


async def _verified(client, account) -> dict:
    result = await gql(client, "VerifyAuditTrail", {}, token=account.token)
    assert "errors" not in result, result
    return result["data"]["verifyAuditTrail"]


async def test_digests_are_signed_over_the_whole_chain_and_proofs_verify(client, runtime):
    account = await register(client)
    ids = await _log(client, account, 300)
    assert await sealing.seal_all(runtime.db, runtime.signer) == 1
    ids += await _log(client, account, 330, "s")
    assert await sealing.seal_all(runtime.db, runtime.signer) == 1
    entries = await _entries(runtime, account.org_id)

    async with runtime.db.tenant_session(account.org_id) as session:
        digests = list((await session.exec(sa.select(AuditDigest).order_by(AuditDigest.sequence))).scalars())
    first, second = digests
    assert (first.version, first.from_index, first.tree_size, first.record_count) == (2, 1, 300, 300)
    assert (second.from_index, second.tree_size, second.record_count) == (301, 630, 330)
    assert second.previous_hash == first.digest_hash and first.previous_hash == GENESIS_HASH
    assert second.merkle_root == tree_root(entries).hex() and first.merkle_root == tree_root(entries[:300]).hex()
    assert second.chain_head == entries[-1].hex()
    assert verify_ed25519(runtime.signer.public_key, sealing.v2_payload(second), second.signature)
    assert digest_hash(sealing.v2_payload(second)) == second.digest_hash

    # inclusion: every record, in the newest tree, through GraphQL for a few and the service for all
    async with runtime.db.tenant_session(account.org_id) as session:
        for index in range(0, 630, 37):
            proof = await proofs.inclusion_proof(session, ids[index])
            assert proofs.inclusion_holds(proof) and proof.tree_size == 630
            older = await proofs.inclusion_proof(session, ids[index], digest_id=first.id) if index < 300 else None
            assert older is None or (proofs.inclusion_holds(older) and older.tree_size == 300)
        consistency = await proofs.consistency_proof(session, first.id, second.id)
        assert proofs.consistency_holds(consistency)
    answer = await gql(client, "AuditProof", {"recordId": ids[257]}, token=account.token)
    assert "errors" not in answer, answer
    proof = answer["data"]["auditProof"]
    root = root_from_inclusion(
        proof["leafIndex"],
        proof["treeSize"],
        bytes.fromhex(proof["entryHash"]),
        [bytes.fromhex(h) for h in proof["auditPath"]],
    )
    assert root.hex() == proof["digest"]["payload"]["merkle_root"] == second.merkle_root
    assert proof["chainIndex"] == 258 and proof["digest"]["keyId"] == runtime.signer.key_id

    answer = await gql(client, "AuditConsistencyProof", {"fromDigestId": first.id}, token=account.token)
    body = answer["data"]["auditConsistencyProof"]
    assert verify_consistency(
        300,
        630,
        bytes.fromhex(body["fromDigest"]["payload"]["merkle_root"]),
        bytes.fromhex(body["toDigest"]["payload"]["merkle_root"]),
        [bytes.fromhex(h) for h in body["proof"]],
    )

    key, _ = await create_api_key(client, account)
    rest = await client.get(f"/api/v1/audit-logs/{ids[3]}/proof", headers={"X-API-Key": key})
    assert rest.status_code == 200, rest.text
    assert rest.json()["treeSize"] == 630 and rest.json()["digest"]["signature"].startswith("ed25519:")
    assert (await client.get(f"/api/v1/audit-logs/{ids[3]}/proof?x=1", headers={"X-API-Key": key})).status_code == 400
    assert (await client.get("/api/v1/audit-logs/log_nope/proof", headers={"X-API-Key": key})).status_code == 404
    assert (await client.get(f"/api/v1/audit-logs/{ids[3]}/proof")).status_code == 401

    verification = await _verified(client, account)
    assert verification["ok"] is True and verification["recordsChecked"] == 630 and verification["digestsChecked"] == 2


async def test_an_unsealed_record_has_no_proof_yet_and_another_organisations_record_none(client, runtime):
    alice, bob = await register(client, org="Alice"), await register(client, org="Bob")
    [alice_id] = await _log(client, alice, 1)
    assert error_code(await gql(client, "AuditProof", {"recordId": alice_id}, token=alice.token)) == "NOT_FOUND"
    await sealing.seal_all(runtime.db, runtime.signer)
    assert "errors" not in await gql(client, "AuditProof", {"recordId": alice_id}, token=alice.token)
    assert error_code(await gql(client, "AuditProof", {"recordId": alice_id}, token=bob.token)) == "NOT_FOUND"
    bad = await gql(client, "AuditConsistencyProof", {"fromDigestId": "dgst_nope"}, token=alice.token)
    assert error_code(bad) == "NOT_FOUND"


async def test_public_keys_are_published_and_rotation_keeps_old_digests_verifying(client, runtime):
    account = await register(client)
    await _log(client, account, 3)
    await sealing.seal_all(runtime.db, runtime.signer)
    published = await client.get("/.well-known/agentrail-audit-keys.json")
    assert published.status_code == 200
    [key] = published.json()["keys"]
    assert key["keyId"] == runtime.signer.key_id == published.json()["current"] and key["validTo"] is None
    assert "BEGIN PUBLIC KEY" in key["publicKeyPem"]

    new = Signer(b"\x07" * 32)
    await signing.register(runtime.db, new, previous=runtime.signer)
    await _log(client, account, 2, "after")
    await sealing.seal_all(runtime.db, new)
    keys = (await gql(client, "AuditSigningKeys", {}, token=account.token))["data"]["auditSigningKeys"]
    assert [k["keyId"] for k in keys] == [runtime.signer.key_id, new.key_id]
    assert keys[0]["validTo"] is not None and keys[1]["previousKeyId"] == runtime.signer.key_id
    assert keys[1]["endorsement"] and keys[1]["previousKeySignature"]
    # the new key is the root of trust now; it vouches for the old one, so both digests verify
    async with runtime.db.tenant_session(account.org_id) as session:
        outcome = await sealing.verify(session, sealing.Keys(runtime.secret_key, new))
        assert outcome.ok and outcome.digests_checked == 2, outcome
        # a verifier that only knows the old key follows the endorsement forwards
        outcome = await sealing.verify(session, sealing.Keys(runtime.secret_key, runtime.signer))
        assert outcome.ok, outcome
        # a stranger's key trusts neither
        outcome = await sealing.verify(session, sealing.Keys(runtime.secret_key, Signer(b"\x09" * 32)))
        assert not outcome.ok and "no trusted key" in (outcome.reason or "")


async def test_version_1_hmac_digests_keep_verifying_and_the_first_signed_digest_covers_the_whole_chain(
    client, runtime
):
    account = await register(client)
    await _log(client, account, 5)
    # a digest as the previous version wrote it: a seq range, a Merkle root over checksums, an HMAC
    async with runtime.db.engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.text("SELECT seq, checksum, occurred_at FROM audit_logs WHERE org_id = :o ORDER BY seq"),
                {"o": account.org_id},
            )
        ).all()
    legacy = AuditDigest(
        id="dgst_legacy",
        org_id=account.org_id,
        sequence=1,
        from_seq=1,
        to_seq=rows[-1].seq,
        first_occurred_at=min(r.occurred_at for r in rows),
        last_occurred_at=max(r.occurred_at for r in rows),
        record_count=5,
        merkle_root=merkle_root([r.checksum for r in rows]),
        previous_hash=GENESIS_HASH,
        digest_hash="",
        signature="",
        created_at=datetime.now(UTC).replace(microsecond=0),
    )
    payload = sealing.v1_payload(legacy)
    legacy.digest_hash = digest_hash(payload)
    legacy.signature = sign_digest(digest_signing_key(runtime.secret_key), payload)
    assert payload == digest_payload(**{k: getattr(legacy, k) for k in payload})
    async with runtime.db.tenant_session(account.org_id) as session:
        session.add(legacy)
        await session.commit()
    await _log(client, account, 3, "new")
    assert await sealing.seal_all(runtime.db, runtime.signer) == 1
    async with runtime.db.tenant_session(account.org_id) as session:
        signed = (await session.exec(sa.select(AuditDigest).where(AuditDigest.version == 2))).scalars().one()
    assert (signed.from_index, signed.tree_size, signed.record_count, signed.sequence) == (6, 8, 3, 2)
    assert signed.merkle_root == tree_root(await _entries(runtime, account.org_id)).hex()
    assert signed.previous_hash == legacy.digest_hash
    assert (await _verified(client, account))["ok"] is True
    async with runtime.db.tenant_session(account.org_id) as session:
        [record_id] = (
            await session.execute(scoped_text("SELECT id FROM audit_logs WHERE org_id = :org AND chain_index = 2"), {})
        ).scalars()
        assert proofs.inclusion_holds(await proofs.inclusion_proof(session, record_id))

    # the legacy digest is still checked: a forged HMAC is caught
    async with runtime.db.engine.begin() as conn:
        await conn.execute(sa.text("ALTER TABLE audit_digests DISABLE TRIGGER audit_digests_immutable"))
        await conn.execute(sa.text("UPDATE audit_digests SET signature = 'hmac-sha256:00' WHERE id = 'dgst_legacy'"))
        await conn.execute(sa.text("ALTER TABLE audit_digests ENABLE TRIGGER audit_digests_immutable"))
    verification = await _verified(client, account)
    assert verification["ok"] is False and verification["firstBrokenDigestId"] == "dgst_legacy"


async def test_rotate_signing_key_command(client, runtime, database_url, redis_url, tmp_path):
    import asyncio
    import json
    import os
    import subprocess

    from app.runtime.secrets import resolve_signing_key
    from app.settings import Settings
    from support import agentrail_command

    env = {k: v for k, v in os.environ.items() if k != "AGENTRAIL_AUDIT_SIGNING_KEY"}
    env |= {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "AGENTRAIL_SECRET_KEY": runtime.secret_key}
    command = [*agentrail_command(), "rotate-signing-key", "--data-dir", str(tmp_path)]
    done = await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    new = Signer(resolve_signing_key(Settings(data_dir=tmp_path)))
    assert answer["keyId"] == new.key_id != answer["previousKeyId"]
    keys = (await gql(client, "AuditSigningKeys", {}, token=(await register(client)).token))["data"]["auditSigningKeys"]
    assert keys[-1]["keyId"] == new.key_id and keys[-1]["endorsement"] and keys[-1]["previousKeySignature"]
    assert keys[-2]["keyId"] == answer["previousKeyId"] and keys[-2]["validTo"] is not None
    assert len(list(tmp_path.glob("audit_signing_key.*"))) == 1  # the old file kept beside the new one
