"""The activity trail: one event per change, who and from where, immutable, filtered, tenant-scoped."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from app.integrity import ACTIVITY_CHAIN, GENESIS_ENTRY, chain_hashes
from support import create_api_key, error_code, gql, register


async def _events(client, account, **filter_):
    result = await gql(client, "Activity", {"filter": filter_ or None, "first": 100}, token=account.token)
    assert "errors" not in result, result
    return [e["node"] for e in result["data"]["activity"]["edges"]]


async def test_each_change_leaves_one_event_with_its_actor(client):
    account = await register(client, email="owner@example.com")
    _, key_id = await create_api_key(client, account, "deploy bot")
    agent = await gql(
        client,
        "CreateAgent",
        {"input": {"name": "support"}},
        token=account.token,
        headers={"User-Agent": "dashboard/1.0"},
    )
    agent_id = agent["data"]["createAgent"]["id"]
    events = await _events(client, account)
    assert [e["action"] for e in events] == ["agent.created", "api_key.created", "organization.created"]
    created = events[0]
    assert created["targetId"] == agent_id and created["targetName"] == "support"
    assert created["actor"] == {
        "type": "user",
        "id": account.user_id,
        "name": "Test User",
        "email": "owner@example.com",
    }
    assert created["userAgent"] == "dashboard/1.0" and created["sourceIp"] == "203.0.113.10"
    assert created["checksum"].startswith("sha256:")
    assert events[1]["targetId"] == key_id


async def test_filters_and_pagination(client):
    account = await register(client)
    for name in ("a", "b", "c"):
        await gql(client, "CreateAgent", {"input": {"name": f"agent-{name}"}}, token=account.token)
    await create_api_key(client, account, "key")
    assert len(await _events(client, account, targetType=["agent"])) == 3
    assert len(await _events(client, account, action=["agent.*"])) == 3
    assert len(await _events(client, account, action=["api_key.created"])) == 1
    assert [e["targetName"] for e in await _events(client, account, search="agent-b")] == ["agent-b"]
    assert len(await _events(client, account, actorId=account.user_id)) == 5
    assert await _events(client, account, search="100%_nothing") == []
    seen, after = [], None
    while True:
        page = await gql(client, "Activity", {"first": 2, "after": after}, token=account.token)
        conn = page["data"]["activity"]
        seen += [e["node"]["id"] for e in conn["edges"]]
        if not conn["pageInfo"]["hasNextPage"]:
            break
        after = conn["pageInfo"]["endCursor"]
    assert len(seen) == len(set(seen)) == 5


async def test_events_are_immutable_and_checksummed(client, runtime):
    await register(client)
    async with runtime.db.engine.connect() as conn:
        row = (await conn.execute(sa.text("SELECT * FROM activity_events"))).mappings().one()
    # the checksum is the record hash of the chain (app/activity/chain.py): header fields, index, content hash
    assert row["chain_index"] == 1  # the organisation's first event
    hashes = chain_hashes(ACTIVITY_CHAIN, dict(row), 1, GENESIS_ENTRY)
    assert row["checksum"] == hashes.checksum and bytes(row["entry_hash"]) == hashes.entry_hash
    for statement in ("UPDATE activity_events SET action = 'x'", "DELETE FROM activity_events"):
        async with runtime.db.engine.connect() as conn:
            with pytest.raises(DBAPIError, match="immutable"):
                await conn.execute(sa.text(statement))


async def test_keys_cannot_read_it_and_organisations_do_not_see_each_other(client):
    alice = await register(client, org="Alice")
    mallory = await register(client, org="Mallory")
    secret, _ = await create_api_key(client, alice)
    assert error_code(await gql(client, "Activity", {}, api_key=secret)) == "FORBIDDEN"
    theirs = await _events(client, mallory)
    assert [e["action"] for e in theirs] == ["organization.created"]
    assert all(e["orgId"] == mallory.org_id for e in theirs)
    assert await _events(client, mallory, actorId=alice.user_id) == []
