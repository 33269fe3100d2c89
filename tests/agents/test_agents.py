"""Agents: CRUD through graphql/agents.graphql, rejections that write nothing, soft delete, read-only keys,
tenancy, pagination, search, activity events; and the service helpers the ingest and DataLoaders use."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from app.agents import service
from app.api.loaders import Loaders
from app.errors import BadUserInput
from app.runtime.resources import Runtime
from support import Account, create_api_key, error_code, gql, operation, register

NAN = float("nan")


async def _create(client, account: Account, name: str, **fields: Any) -> dict[str, Any]:
    result = await gql(client, "CreateAgent", {"input": {"name": name, **fields}}, token=account.token)
    assert "errors" not in result, result
    return result["data"]["createAgent"]


async def _count(runtime: Runtime, sql: str, **params: Any) -> int:
    async with runtime.db.engine.connect() as conn:
        return int((await conn.execute(sa.text(sql), params)).scalar_one())


async def _agent_rows(runtime: Runtime) -> list[Any]:
    async with runtime.db.engine.connect() as conn:
        return list((await conn.execute(sa.text("SELECT * FROM agents ORDER BY id"))).all())


async def _activity(runtime: Runtime, org_id: str) -> list[Any]:
    async with runtime.db.engine.connect() as conn:
        query = sa.text(
            "SELECT action, actor_type, actor_id, target_type, target_id, metadata, source_ip"
            " FROM activity_events WHERE org_id = :org AND action LIKE 'agent.%' ORDER BY occurred_at, id"
        )
        return list((await conn.execute(query, {"org": org_id})).all())


def _names(result: dict[str, Any]) -> list[str]:
    return [edge["node"]["name"] for edge in result["data"]["agents"]["edges"]]


async def test_crud_round_trip(client, runtime):
    account = await register(client)
    created = await _create(
        client,
        account,
        "  Support Bot  ",
        description="Answers tickets",
        metadata={"model": "gpt-x", "team": {"name": "support"}},
    )
    agent_id = created["id"]
    assert agent_id.startswith("agent_")
    assert created["name"] == "Support Bot"  # trimmed
    assert created["description"] == "Answers tickets"
    assert created["metadata"] == {"model": "gpt-x", "team": {"name": "support"}}
    assert created["createdAt"].endswith("Z") and created["updatedAt"].endswith("Z")
    assert created["deletedAt"] is None and created["lastSeenAt"] is None and created["isDeleted"] is False

    fetched = await gql(client, "Agent", {"id": agent_id}, token=account.token)
    assert fetched["data"]["agent"] == created
    listed = await gql(client, "Agents", token=account.token)
    assert [e["node"] for e in listed["data"]["agents"]["edges"]] == [created]
    assert listed["data"]["agents"]["totalCount"] == 1

    # partial update: only the name; description and metadata stay
    renamed = await gql(client, "UpdateAgent", {"id": agent_id, "input": {"name": "Helpdesk"}}, token=account.token)
    node = renamed["data"]["updateAgent"]
    assert node["name"] == "Helpdesk"
    assert node["description"] == "Answers tickets" and node["metadata"] == created["metadata"]
    assert node["updatedAt"] > created["updatedAt"] and node["createdAt"] == created["createdAt"]

    changed = await gql(
        client,
        "UpdateAgent",
        {"id": agent_id, "input": {"description": "", "metadata": {"model": "gpt-y", "tier": 2}}},
        token=account.token,
    )
    node = changed["data"]["updateAgent"]
    assert node["name"] == "Helpdesk" and node["description"] == ""
    assert node["metadata"] == {"model": "gpt-y", "tier": 2}

    deleted = await gql(client, "DeleteAgent", {"id": agent_id}, token=account.token)
    node = deleted["data"]["deleteAgent"]
    assert node["isDeleted"] is True and node["deletedAt"].endswith("Z")

    # the row stays: records keep pointing at it
    rows = await _agent_rows(runtime)
    assert len(rows) == 1 and rows[0].deleted_at is not None and rows[0].org_id == account.org_id

    # every mutation left exactly one activity event, by this user, from the client's address
    events = await _activity(runtime, account.org_id)
    assert [e.action for e in events] == ["agent.created", "agent.updated", "agent.updated", "agent.deleted"]
    for event in events:
        assert (event.actor_type, event.actor_id) == ("user", account.user_id)
        assert (event.target_type, event.target_id) == ("agent", agent_id)
        assert event.source_ip == "203.0.113.10"
    assert events[0].metadata == {"name": "Support Bot"}
    assert events[1].metadata["fields"] == ["name"]
    assert events[1].metadata["changes"]["name"] == {"from": "Support Bot", "to": "Helpdesk"}
    assert events[2].metadata["fields"] == ["description", "metadata"]
    assert events[2].metadata["changes"]["description"] == {"from": "Answers tickets", "to": ""}
    assert events[2].metadata["changes"]["metadata"] == {
        "keysAdded": ["tier"],
        "keysRemoved": ["team"],
        "keysChanged": ["model"],
        "from": {"team": {"name": "support"}, "model": "gpt-x"},
        "to": {"tier": 2, "model": "gpt-y"},
    }
    assert events[3].metadata == {"name": "Helpdesk"}


async def test_metadata_change_records_previous_and_new_values_masked(client, runtime):
    account = await register(client)
    created = await _create(client, account, "Keys")
    big = "x" * 5000
    first = {"apiKey": "sk_live_" + "a" * 30, "region": "eu", "notes": "token ghp_" + "b" * 36, "blob": big}
    second = {"region": "us", "notes": "plain", "blob": big + "y"}
    for metadata in (first, second):
        result = await gql(client, "UpdateAgent", {"id": created["id"], "input": {"metadata": metadata}},
                           token=account.token)  # fmt: skip
        assert "errors" not in result, result
    changes = (await _activity(runtime, account.org_id))[-1].metadata["changes"]["metadata"]
    assert (changes["keysChanged"], changes["keysRemoved"]) == (["blob", "notes", "region"], ["apiKey"])
    assert changes["from"]["region"] == "eu" and changes["to"]["region"] == "us"
    assert changes["from"]["apiKey"] == "[REDACTED]" and "apiKey" not in changes["to"]
    assert "[REDACTED]" in changes["from"]["notes"] and changes["to"]["notes"] == "plain"
    assert changes["from"]["blob"] == "[5002 bytes, too large for the activity trail]"
    assert "sk_live_" not in str(changes) and "ghp_" not in str(changes)


async def test_defaults_and_an_update_that_changes_nothing_writes_nothing(client, runtime):
    account = await register(client)
    created = await _create(client, account, "Bare")
    assert created["description"] == "" and created["metadata"] == {}
    for same in ({}, {"name": " Bare "}, {"description": "", "metadata": {}}, {"name": None}):
        result = await gql(client, "UpdateAgent", {"id": created["id"], "input": same}, token=account.token)
        assert result["data"]["updateAgent"]["updatedAt"] == created["updatedAt"], same
    # JSON values compare as JSON: true is not 1
    await gql(client, "UpdateAgent", {"id": created["id"], "input": {"metadata": {"a": 1}}}, token=account.token)
    flipped = await gql(
        client, "UpdateAgent", {"id": created["id"], "input": {"metadata": {"a": True}}}, token=account.token
    )
    assert flipped["data"]["updateAgent"]["metadata"] == {"a": True}
    assert [e.action for e in await _activity(runtime, account.org_id)] == [
        "agent.created",
        "agent.updated",
        "agent.updated",
    ]


async def test_create_rejections_write_nothing(client, runtime):
    account = await register(client)
    await _create(client, account, "Bot")
    before_rows = await _agent_rows(runtime)
    before_events = await _count(runtime, "SELECT count(*) FROM activity_events")
    cases = [
        ({"name": ""}, "BAD_USER_INPUT"),
        ({"name": "   "}, "BAD_USER_INPUT"),
        ({"name": "x" * 201}, "BAD_USER_INPUT"),
        ({"name": "tab\there"}, "BAD_USER_INPUT"),
        ({"name": "nul\x00"}, "BAD_USER_INPUT"),
        ({"description": "d" * 2001}, "BAD_USER_INPUT"),
        ({"metadata": [1, 2]}, "BAD_USER_INPUT"),
        ({"metadata": "a string"}, "BAD_USER_INPUT"),
        ({"metadata": 42}, "BAD_USER_INPUT"),
        ({"metadata": {"blob": "x" * (64 * 1024)}}, "BAD_USER_INPUT"),
        ({"metadata": {"nested": ["ok", {"bad": "nul\x00"}]}}, "BAD_USER_INPUT"),
        ({"name": "Bot"}, "CONFLICT"),
        ({"name": "bOT"}, "CONFLICT"),
        ({"name": "  BOT "}, "CONFLICT"),
    ]
    for override, code in cases:
        result = await gql(client, "CreateAgent", {"input": {"name": "Fresh", **override}}, token=account.token)
        assert error_code(result) == code, (override, result)
        assert result.get("data") is None
    # NaN is not JSON, but Python's parser accepts it; jsonb would not
    body = json.dumps(
        {"query": operation("CreateAgent"), "variables": {"input": {"name": "N", "metadata": {"n": NAN}}}}
    )
    response = await client.post(
        "/graphql",
        content=body,
        headers={"Authorization": f"Bearer {account.token}", "Content-Type": "application/json"},
    )
    assert error_code(response.json()) == "BAD_USER_INPUT", response.text
    assert await _agent_rows(runtime) == before_rows
    assert await _count(runtime, "SELECT count(*) FROM activity_events") == before_events

    # the limits themselves are allowed
    at_limit = await _create(client, account, "n" * 200, description="d" * 2000)
    assert len(at_limit["name"]) == 200


async def test_update_rejections_write_nothing(client, runtime):
    account = await register(client)
    bot = await _create(client, account, "Bot", metadata={"keep": True})
    await _create(client, account, "Other")
    before_rows = await _agent_rows(runtime)
    before_events = await _count(runtime, "SELECT count(*) FROM activity_events")
    cases = [
        ({"name": ""}, "BAD_USER_INPUT"),
        ({"name": "x" * 201}, "BAD_USER_INPUT"),
        ({"description": "d" * 2001}, "BAD_USER_INPUT"),
        ({"metadata": ["not", "an", "object"]}, "BAD_USER_INPUT"),
        ({"metadata": {"blob": "x" * (64 * 1024)}}, "BAD_USER_INPUT"),
        # a valid field next to an invalid one: nothing of either lands
        ({"description": "new", "metadata": "nope"}, "BAD_USER_INPUT"),
        ({"name": "other"}, "CONFLICT"),
        ({"name": "OTHER", "description": "changed too"}, "CONFLICT"),
    ]
    for change, code in cases:
        result = await gql(client, "UpdateAgent", {"id": bot["id"], "input": change}, token=account.token)
        assert error_code(result) == code, (change, result)
    for unknown in ("agent_00000000000000000000000000", "nonsense"):
        result = await gql(client, "UpdateAgent", {"id": unknown, "input": {"name": "x"}}, token=account.token)
        assert error_code(result) == "NOT_FOUND"
    assert await _agent_rows(runtime) == before_rows
    assert await _count(runtime, "SELECT count(*) FROM activity_events") == before_events

    # renaming to a different case of its own name is fine
    result = await gql(client, "UpdateAgent", {"id": bot["id"], "input": {"name": "BOT"}}, token=account.token)
    assert result["data"]["updateAgent"]["name"] == "BOT"


async def test_api_key_reads_but_cannot_write(client, runtime):
    account = await register(client)
    secret, _key_id = await create_api_key(client, account)
    agent = await _create(client, account, "Bot")
    before_rows = await _agent_rows(runtime)
    before_events = await _count(runtime, "SELECT count(*) FROM activity_events")

    for name, variables in (
        ("CreateAgent", {"input": {"name": "From key"}}),
        ("CreateAgent", {"input": {"name": ""}}),  # FORBIDDEN comes before validation
        ("UpdateAgent", {"id": agent["id"], "input": {"name": "Renamed"}}),
        ("DeleteAgent", {"id": agent["id"]}),
    ):
        result = await gql(client, name, variables, api_key=secret)
        assert error_code(result) == "FORBIDDEN", (name, result)
    assert await _agent_rows(runtime) == before_rows
    assert await _count(runtime, "SELECT count(*) FROM activity_events") == before_events

    listed = await gql(client, "Agents", api_key=secret)
    assert _names(listed) == ["Bot"]
    fetched = await gql(client, "Agent", {"id": agent["id"]}, api_key=secret)
    assert fetched["data"]["agent"]["name"] == "Bot"

    for name, variables in (
        ("Agents", {}),
        ("Agent", {"id": agent["id"]}),
        ("DeleteAgent", {"id": agent["id"]}),
    ):
        assert error_code(await gql(client, name, variables)) == "UNAUTHENTICATED"


async def test_deleted_agents(client, runtime):
    account = await register(client)
    old = await _create(client, account, "Bot", description="first")
    await _create(client, account, "Keeper")
    deleted = await gql(client, "DeleteAgent", {"id": old["id"]}, token=account.token)
    assert deleted["data"]["deleteAgent"]["isDeleted"] is True

    # not listed by default; listed on request
    assert _names(await gql(client, "Agents", token=account.token)) == ["Keeper"]
    everything = await gql(client, "Agents", {"filter": {"includeDeleted": True}}, token=account.token)
    assert _names(everything) == ["Keeper", "Bot"]
    assert everything["data"]["agents"]["totalCount"] == 2

    # still readable by id (its records point at it), marked deleted
    fetched = (await gql(client, "Agent", {"id": old["id"]}, token=account.token))["data"]["agent"]
    assert fetched["isDeleted"] is True and fetched["deletedAt"] == deleted["data"]["deleteAgent"]["deletedAt"]

    # a deleted agent can be neither changed nor deleted again
    before_events = await _count(runtime, "SELECT count(*) FROM activity_events")
    again = await gql(client, "DeleteAgent", {"id": old["id"]}, token=account.token)
    assert error_code(again) == "NOT_FOUND"
    update = await gql(client, "UpdateAgent", {"id": old["id"], "input": {"name": "Zombie"}}, token=account.token)
    assert error_code(update) == "NOT_FOUND"
    assert await _count(runtime, "SELECT count(*) FROM activity_events") == before_events

    # its name is free again, in any case; two deleted agents may share a name
    reborn = await _create(client, account, "bot")
    assert reborn["id"] != old["id"]
    await gql(client, "DeleteAgent", {"id": reborn["id"]}, token=account.token)
    third = await _create(client, account, "BOT")
    # and a deleted agent's old name is taken by the active one
    conflict = await gql(client, "UpdateAgent", {"id": third["id"], "input": {"name": "Keeper"}}, token=account.token)
    assert error_code(conflict) == "CONFLICT"
    assert await _count(runtime, "SELECT count(*) FROM agents WHERE lower(name) = 'bot'") == 3


async def test_another_organisations_agents_are_invisible(client, runtime):
    alice = await register(client, org="Alice Org")
    mallory = await register(client, org="Mallory Org")
    alices = await _create(client, alice, "Shared Name", description="alice's")
    mallorys = await _create(client, mallory, "Shared Name")  # names are unique per organisation only
    assert mallorys["id"] != alices["id"]
    mallory_key, _ = await create_api_key(client, mallory)

    for creds in ({"token": mallory.token}, {"api_key": mallory_key}):
        assert (await gql(client, "Agent", {"id": alices["id"]}, **creds))["data"]["agent"] is None
        listed = await gql(client, "Agents", {"filter": {"includeDeleted": True, "search": "alice"}}, **creds)
        assert listed["data"]["agents"]["edges"] == [] and listed["data"]["agents"]["totalCount"] == 0
        everything = await gql(client, "Agents", {"filter": {"includeDeleted": True}}, **creds)
        assert [e["node"]["id"] for e in everything["data"]["agents"]["edges"]] == [mallorys["id"]]

    before_rows = await _agent_rows(runtime)
    before_events = await _count(runtime, "SELECT count(*) FROM activity_events")
    update = await gql(client, "UpdateAgent", {"id": alices["id"], "input": {"name": "Pwned"}}, token=mallory.token)
    assert error_code(update) == "NOT_FOUND" and update.get("data") is None
    delete = await gql(client, "DeleteAgent", {"id": alices["id"]}, token=mallory.token)
    assert error_code(delete) == "NOT_FOUND" and delete.get("data") is None
    assert await _agent_rows(runtime) == before_rows
    assert await _count(runtime, "SELECT count(*) FROM activity_events") == before_events
    still = await gql(client, "Agent", {"id": alices["id"]}, token=alice.token)
    assert still["data"]["agent"]["name"] == "Shared Name" and still["data"]["agent"]["isDeleted"] is False


async def test_pagination(client):
    account = await register(client)
    ids = [(await _create(client, account, f"agent {i}"))["id"] for i in range(5)]
    await gql(client, "DeleteAgent", {"id": ids[2]}, token=account.token)

    async def walk(filter_: dict[str, Any] | None) -> list[str]:
        seen: list[str] = []
        after = None
        while True:
            page = await gql(client, "Agents", {"first": 2, "after": after, "filter": filter_}, token=account.token)
            conn = page["data"]["agents"]
            assert len(conn["edges"]) <= 2
            seen += [e["node"]["id"] for e in conn["edges"]]
            if not conn["pageInfo"]["hasNextPage"]:
                return seen
            after = conn["pageInfo"]["endCursor"]
            assert after == conn["edges"][-1]["cursor"]

    newest_first = list(reversed(ids))
    assert await walk(None) == [i for i in newest_first if i != ids[2]]
    assert await walk({"includeDeleted": True}) == newest_first

    for bad in ({"first": 0}, {"first": 501}, {"after": "garbage!"}, {"after": "WyJ4Il0"}):
        result = await gql(client, "Agents", bad, token=account.token)
        assert error_code(result) == "BAD_USER_INPUT", bad


async def test_search(client):
    account = await register(client)
    await _create(client, account, "Billing Assistant", description="handles invoices")
    await _create(client, account, "Support Bot", description="Answers BILLING questions too")
    await _create(client, account, "Researcher", description="100% autonomous")
    await _create(client, account, "web_scraper")
    gone = await _create(client, account, "Old billing bot")
    await gql(client, "DeleteAgent", {"id": gone["id"]}, token=account.token)

    async def search(term: str, **extra: Any) -> list[str]:
        result = await gql(client, "Agents", {"filter": {"search": term, **extra}}, token=account.token)
        assert result["data"]["agents"]["totalCount"] == len(result["data"]["agents"]["edges"])
        return sorted(_names(result))

    assert await search("billing") == ["Billing Assistant", "Support Bot"]  # name or description, any case
    assert await search("BILL", includeDeleted=True) == [
        "Billing Assistant",
        "Old billing bot",
        "Support Bot",
    ]
    assert await search("INVOICE") == ["Billing Assistant"]
    # LIKE wildcards are taken literally
    assert await search("%") == ["Researcher"]
    assert await search("_") == ["web_scraper"]
    assert await search("nothing like it") == []
    assert len(await search("  ")) == 4  # a blank search does not filter


async def test_service_helpers_for_ingest_and_loaders(client, runtime, monkeypatch):
    alice = await register(client, org="Alice Org")
    mallory = await register(client, org="Mallory Org")
    active = await _create(client, alice, "Active")
    gone = await _create(client, alice, "Gone")
    await gql(client, "DeleteAgent", {"id": gone["id"]}, token=alice.token)
    foreign = await _create(client, mallory, "Foreign")
    unknown = "agent_00000000000000000000000000"

    async with runtime.db.tenant_session(alice.org_id) as session:
        await service.require_active_agent_ids(session, [active["id"], active["id"]])
        await service.require_active_agent_ids(session, [])
        with pytest.raises(BadUserInput) as caught:
            await service.require_active_agent_ids(session, [active["id"], gone["id"], foreign["id"], unknown])
        bad = sorted([gone["id"], foreign["id"], unknown])
        assert caught.value.extensions["agentIds"] == bad
        assert all(agent_id in caught.value.message for agent_id in bad)
        assert active["id"] not in caught.value.message

        found = await service.agents_by_ids(session, [active["id"], gone["id"], foreign["id"], unknown])
        assert set(found) == {active["id"], gone["id"]}
        assert found[gone["id"]].deleted_at is not None

        async def db():
            return session

        batches: list[list[str]] = []
        original = service.agents_by_ids

        async def counting(session_, ids):
            batches.append(sorted(ids))
            return await original(session_, ids)

        monkeypatch.setattr(service, "agents_by_ids", counting)
        loaders = Loaders(db)
        loader = loaders.agent
        assert loaders.agent is loader  # one per request
        loaded = await asyncio.gather(*(loader.load(i) for i in (gone["id"], foreign["id"], active["id"])))
        assert [a.id if a else None for a in loaded] == [gone["id"], None, active["id"]]
        assert batches == [sorted([gone["id"], foreign["id"], active["id"]])]  # one batch, one query


async def test_touch_last_seen_moves_forward_only_and_stays_in_the_organisation(client, runtime):
    alice = await register(client, org="Alice Org")
    mallory = await register(client, org="Mallory Org")
    first = await _create(client, alice, "First")
    second = await _create(client, alice, "Second")
    foreign = await _create(client, mallory, "Foreign")
    t1 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    t2 = t1 + timedelta(minutes=5)

    async def touch(seen: dict[str, datetime]) -> None:
        async with runtime.db.tenant_session(alice.org_id) as session:
            await service.touch_last_seen(session, seen)
            await session.commit()

    async def last_seen(account: Account, agent_id: str) -> str | None:
        result = await gql(client, "Agent", {"id": agent_id}, token=account.token)
        return result["data"]["agent"]["lastSeenAt"]

    await touch({})
    await touch({first["id"]: t2, second["id"]: t1, foreign["id"]: t2, "agent_unknown": t2})
    assert await last_seen(alice, first["id"]) == "2026-01-01T12:05:00.000Z"
    assert await last_seen(alice, second["id"]) == "2026-01-01T12:00:00.000Z"
    assert await last_seen(mallory, foreign["id"]) is None  # another organisation's agent is untouched
    await touch({first["id"]: t1, second["id"]: t2})  # never backwards
    assert await last_seen(alice, first["id"]) == "2026-01-01T12:05:00.000Z"
    assert await last_seen(alice, second["id"]) == "2026-01-01T12:05:00.000Z"
    # a touch is not an edit
    listed = await gql(client, "Agents", token=alice.token)
    by_id = {e["node"]["id"]: e["node"] for e in listed["data"]["agents"]["edges"]}
    assert by_id[first["id"]]["updatedAt"] == first["updatedAt"]
