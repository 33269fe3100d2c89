"""The activity trail is chained, sealed and provable like audit records (issue 16.5): each event names its
predecessor when its transaction flushes; digests seal it; verifyActivityTrail and the offline verifier on an
export with includeProofs catch an edited or removed event, naming it."""

from __future__ import annotations

import sys
from pathlib import Path

import sqlalchemy as sa

from app.audit import sealing
from app.audit.streams import STREAMS
from app.integrity import root_from_inclusion
from support import gql, register

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sdk" / "verify" / "src"))
from agentrail_verify import verify_lines


async def _events(runtime, org_id: str) -> list:
    async with runtime.db.engine.connect() as conn:
        return (
            await conn.execute(
                sa.text("SELECT id, chain_index FROM activity_events WHERE org_id = :o ORDER BY chain_index"),
                {"o": org_id},
            )
        ).all()


async def _verify(client, account) -> dict:
    result = await gql(
        client,
        "query { verifyActivityTrail { ok recordsChecked digestsChecked firstBrokenRecordId reason } }",
        token=account.token,
    )
    assert "errors" not in result, result
    return result["data"]["verifyActivityTrail"]


async def _offline(client, runtime, account):
    response = await client.get(
        "/api/v1/activity/export?includeProofs=true", headers={"Authorization": f"Bearer {account.token}"}
    )
    assert response.status_code == 200, response.text
    return verify_lines(response.content.splitlines(), runtime.signer.public_key)


async def test_activity_is_chained_sealed_and_tampering_is_named(client, runtime):
    account = await register(client)
    for i in range(4):
        created = await gql(client, "CreateAgent", {"input": {"name": f"agent {i}"}}, token=account.token)
        assert "errors" not in created, created
    events = await _events(runtime, account.org_id)
    assert len(events) >= 4 and [e.chain_index for e in events] == list(range(1, len(events) + 1))
    assert (
        await sealing.seal_all(runtime.db, runtime.signer, runtime=runtime, streams=STREAMS) == 1
    )  # no records: the activity only
    await gql(client, "CreateAgent", {"input": {"name": "after the seal"}}, token=account.token)
    result = await _verify(client, account)
    assert result["ok"] is True and result["recordsChecked"] == len(events) + 1 and result["digestsChecked"] == 1
    report = await _offline(client, runtime, account)
    assert report.ok and report.roots_checked == 1, report.breaks
    proved = (await gql(client, "ActivityProof", {"eventId": events[2].id}, token=account.token))["data"][
        "activityProof"
    ]
    root = root_from_inclusion(
        proved["leafIndex"],
        proved["treeSize"],
        bytes.fromhex(proved["entryHash"]),
        [bytes.fromhex(h) for h in proved["auditPath"]],
    )
    assert proved["digest"]["stream"] == "activity" and root.hex() == proved["digest"]["payload"]["merkle_root"]

    target = events[1].id
    async with runtime.db.engine.begin() as conn:
        await conn.execute(sa.text("ALTER TABLE activity_events DISABLE TRIGGER USER"))
        await conn.execute(
            sa.text("UPDATE activity_events SET actor_email = 'someone.else@example.com' WHERE id = :id"),
            {"id": target},
        )
        await conn.execute(sa.text("ALTER TABLE activity_events ENABLE TRIGGER USER"))
    result = await _verify(client, account)
    assert result["ok"] is False and result["firstBrokenRecordId"] == target, result
    report = await _offline(client, runtime, account)
    assert not report.ok and report.breaks[0]["recordId"] == target

    async with runtime.db.engine.begin() as conn:
        await conn.execute(sa.text("ALTER TABLE activity_events DISABLE TRIGGER USER"))
        await conn.execute(sa.text("DELETE FROM activity_events WHERE id = :id"), {"id": target})
        await conn.execute(sa.text("ALTER TABLE activity_events ENABLE TRIGGER USER"))
    result = await _verify(client, account)
    assert result["ok"] is False and result["firstBrokenRecordId"] == events[2].id and "missing" in result["reason"]
    report = await _offline(client, runtime, account)
    assert not report.ok and report.breaks[0]["recordId"] == events[2].id
