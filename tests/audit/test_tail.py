"""Tail and truncation (issue 16.4): the newest published digest is remembered outside the database; a trail cut
short there (newest records deleted with their digests, or everything truncated) makes /readyz report it broken
and verification fail, naming what is missing."""

from __future__ import annotations

import sqlalchemy as sa

from app.audit import published, sealing
from support import gql, register


async def _superuser(runtime, *statements: str) -> None:
    async with runtime.db.engine.begin() as conn:
        for table in ("audit_logs", "audit_digests", "audit_merkle_nodes"):
            await conn.execute(sa.text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
        for statement in statements:
            await conn.execute(sa.text(statement))
        for table in ("audit_logs", "audit_digests", "audit_merkle_nodes"):
            await conn.execute(sa.text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))


async def _seal_batches(client, runtime, account, batches: int) -> list[str]:
    ids = []
    for b in range(batches):
        result = await gql(
            client, "LogEvents", {"input": [{"action": f"b{b}-{i}"} for i in range(3)]}, token=account.token
        )
        ids += [r["id"] for r in result["data"]["logEvents"]]
        assert await sealing.seal_all(runtime.db, runtime.signer, runtime=runtime) == 1
    return ids


async def _verify(client, account) -> dict:
    return (await gql(client, "VerifyAuditTrail", {}, token=account.token))["data"]["verifyAuditTrail"]


async def test_cutting_the_tail_with_its_digests_is_reported_by_readyz_and_verify(client, runtime):
    account = await register(client)
    await _seal_batches(client, runtime, account, 3)
    ready = await client.get("/readyz")
    assert ready.json()["checks"]["audit_trail"] == "ok"
    assert await published.floor(runtime.redis, account.org_id) is not None
    assert (await _verify(client, account))["ok"] is True

    # the newest batch and its digest deleted: the chain and the digest chain left are consistent on their own
    await _superuser(
        runtime,
        "DELETE FROM audit_logs WHERE chain_index > 6",
        "DELETE FROM audit_digests WHERE sequence = 3",
    )
    ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert "digest 3 was published but is missing" in ready.json()["checks"]["audit_trail"]
    result = await _verify(client, account)
    assert result["ok"] is False and "digest 3 was published" in result["reason"]


async def test_truncating_everything_is_reported(client, runtime):
    account = await register(client)
    await _seal_batches(client, runtime, account, 1)
    await _superuser(runtime, "TRUNCATE audit_logs, audit_digests, audit_merkle_nodes CASCADE")
    ready = await client.get("/readyz")
    assert ready.status_code == 503 and "was published but is missing" in ready.json()["checks"]["audit_trail"]
    result = await _verify(client, account)
    assert result["ok"] is False and result["recordsChecked"] == 0 and "truncated" in result["reason"]
