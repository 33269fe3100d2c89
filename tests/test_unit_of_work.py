"""One transaction per operation: effects registered on it run once, after its commit, and never after a rollback."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlmodel import select

from app import unit_of_work
from app.activity.models import ActivityEvent
from app.agents.models import Agent
from app.db import new_id
from app.orgs.models import Organization
from support import gql, register


async def _organisations(runtime, org_id: str) -> int:
    async with runtime.db.system_session() as other:
        return len((await other.exec(select(Organization).where(Organization.id == org_id))).all())


async def test_an_effect_runs_exactly_once_after_the_commit(runtime):
    org_id = new_id("org")
    seen: list[int] = []

    async def effect(rt):
        assert rt is runtime
        seen.append(await _organisations(rt, org_id))  # another session already sees the committed row

    async with unit_of_work.system_unit_of_work(runtime) as session:
        session.add(Organization(id=org_id, name="Committed"))
        await session.flush()
        unit_of_work.after_commit(session, effect)
        assert seen == []  # not before the commit
    assert seen == [1]
    await unit_of_work.commit(session, runtime)  # a later commit of the same session does not run it again
    assert seen == [1]


async def test_a_rolled_back_operation_runs_no_effect(runtime):
    org_id = new_id("org")
    seen: list[str] = []

    async def effect(_rt):
        seen.append("ran")

    with pytest.raises(RuntimeError, match="boom"):
        async with unit_of_work.system_unit_of_work(runtime) as session:
            session.add(Organization(id=org_id, name="Rolled back"))
            await session.flush()
            unit_of_work.after_commit(session, effect)
            raise RuntimeError("boom")
    assert seen == []
    assert await _organisations(runtime, org_id) == 0
    # the registry went with the transaction: the session's next commit runs nothing
    await unit_of_work.commit(session, runtime)
    assert seen == []


async def test_a_failed_commit_runs_no_effect(runtime):
    seen: list[str] = []

    async def effect(_rt):
        seen.append("ran")

    with pytest.raises(sa.exc.IntegrityError):
        async with unit_of_work.system_unit_of_work(runtime) as session:
            # violates NOT NULL on name only when the transaction is flushed, at the commit
            session.add(Organization(id=new_id("org"), name=None))  # type: ignore[arg-type]
            unit_of_work.after_commit(session, effect)
    assert seen == []


async def test_keyed_and_collected_effects_run_once_per_transaction(runtime):
    calls: list[object] = []

    async def once(_rt):
        calls.append("once")

    async def collected(_rt, items):
        calls.append(list(items))

    async with unit_of_work.system_unit_of_work(runtime) as session:
        for item in ("a", "b"):
            unit_of_work.after_commit(session, once, key="same")
            unit_of_work.collect(session, "items", collected).append(item)
    assert calls == ["once", ["a", "b"]]


async def test_each_mutation_commits_on_its_own_and_a_failing_one_leaves_nothing(client, runtime):
    account = await register(client)
    result = await gql(
        client,
        'mutation { a: createAgent(input: {name: "bot"}) { id } b: createAgent(input: {name: "BOT"}) { id } }',
        token=account.token,
    )
    # b's error nulls the whole (non-null) answer, yet a was committed before b ran, and b left nothing
    assert [e["extensions"]["code"] for e in result["errors"]] == ["CONFLICT"]
    async with runtime.db.tenant_session(account.org_id) as session:
        names = (await session.exec(select(Agent.name))).all()
        created = (await session.exec(select(ActivityEvent.id).where(ActivityEvent.action == "agent.created"))).all()
    assert names == ["bot"]
    assert len(created) == 1
