"""The one place tenancy lives (app.db): scoped sessions see only their organisation."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import select

from app.audit import sealing, search
from app.audit import service as audit
from app.db import SYSTEM, TenancyError, global_text, new_id, scoped_text
from app.metrics import service as metrics
from app.orgs.models import ApiKey, Organization
from app.runtime.copy_out import copy_lines
from app.usage import quota
from support import ROOT, gql, register


async def _seed(runtime) -> tuple[str, str]:
    async with runtime.db.system_session() as session:
        a, b = Organization(id=new_id("org"), name="A"), Organization(id=new_id("org"), name="B")
        session.add_all([a, b])
        await session.flush()
        for org in (a, b):
            session.add(
                ApiKey(
                    id=new_id("key"),
                    org_id=org.id,
                    name=org.name,
                    prefix="aa_live_x",
                    secret_hash=new_id("h"),
                )
            )
        await session.commit()
        return a.id, b.id


async def test_scoped_session_sees_only_its_organisation(runtime):
    org_a, org_b = await _seed(runtime)
    async with runtime.db.tenant_session(org_a) as session:
        keys = (await session.exec(select(ApiKey))).all()
        assert [k.org_id for k in keys] == [org_a]
        other = (await session.exec(select(ApiKey).where(ApiKey.org_id == org_b))).all()
        assert other == []
    async with runtime.db.system_session() as session:
        assert len((await session.exec(select(ApiKey))).all()) == 2


async def test_unscoped_session_is_refused(runtime):
    await _seed(runtime)
    async with runtime.db.session(org_id=None) as session:
        with pytest.raises(TenancyError):
            await session.exec(select(ApiKey))


async def test_writing_into_another_organisation_is_refused(runtime):
    org_a, org_b = await _seed(runtime)
    async with runtime.db.tenant_session(org_a) as session:
        session.add(ApiKey(id=new_id("key"), org_id=org_b, name="x", prefix="p", secret_hash="h2"))
        with pytest.raises(TenancyError):
            await session.flush()
    async with runtime.db.tenant_session(org_a) as session:
        key = ApiKey(id=new_id("key"), name="stamped", prefix="p", secret_hash="h3")
        session.add(key)
        await session.commit()
        assert key.org_id == org_a
    with pytest.raises(TenancyError):
        async with runtime.db.tenant_session(SYSTEM):
            pass


# --- raw SQL -------------------------------------------------------------------------------------
_KEYS = "SELECT org_id FROM api_keys"


async def test_unmarked_raw_sql_in_a_tenant_session_is_refused(runtime):
    org_a, _ = await _seed(runtime)
    async with runtime.db.tenant_session(org_a) as session:
        with pytest.raises(TenancyError):
            await session.execute(sa.text(_KEYS))
        with pytest.raises(TenancyError):
            await session.execute(sa.text(_KEYS).columns(sa.column("org_id")))
        with pytest.raises(TenancyError):
            await session.scalars(sa.text(_KEYS))
        connection = await session.connection()
        with pytest.raises(TenancyError):
            await connection.execute(sa.text(_KEYS))
        with pytest.raises(TenancyError):
            await connection.exec_driver_sql(_KEYS)
        with pytest.raises(TenancyError):
            [piece async for piece in copy_lines(session, sa.text(_KEYS))]
    async with runtime.db.session(org_id=None) as session:
        with pytest.raises(TenancyError):
            await session.execute(sa.text(_KEYS))
        with pytest.raises(TenancyError):
            await session.execute(scoped_text(_KEYS + " WHERE org_id = :org"))
    async with runtime.db.system_session() as session:  # declared unscoped: raw SQL as it is
        assert len((await session.execute(sa.text(_KEYS))).all()) == 2
        assert len((await (await session.connection()).exec_driver_sql(_KEYS)).all()) == 2


async def test_scoped_raw_sql_is_bound_to_the_sessions_organisation(runtime):
    org_a, org_b = await _seed(runtime)
    scoped = scoped_text(_KEYS + " WHERE org_id = :org")
    async with runtime.db.tenant_session(org_a) as session:
        assert (await session.execute(scoped)).scalars().all() == [org_a]
        assert (await session.execute(scoped, {"org": org_a})).scalars().all() == [org_a]
        assert (await (await session.connection()).execute(scoped)).scalars().all() == [org_a]
        assert (await session.execute(scoped.columns(sa.column("org_id")))).scalars().all() == [org_a]
        with pytest.raises(TenancyError):
            await session.execute(scoped, {"org": org_b})
        # what reveals nothing of one organisation is marked so, and runs
        assert (await session.execute(global_text("SELECT 1"))).scalar() == 1
    async with runtime.db.system_session() as session:  # no organisation of its own: the caller names one
        with pytest.raises(TenancyError):
            await session.execute(scoped)
        assert (await session.execute(scoped, {"org": org_b})).scalars().all() == [org_b]
    with pytest.raises(ValueError):
        scoped_text(_KEYS)  # a scoped statement limits itself with :org


async def test_raw_connections_are_reached_only_through_the_scoped_copy():
    """The driver's own connection runs SQL no check above sees: only COPY (of a statement scoped by
    `tenant_scoped`) and the pool's closed-connection check reach it."""
    allowed = {"app/db.py", "app/runtime/copy_out.py"}
    pattern = re.compile(r"\.(get_raw_connection|exec_driver_sql|raw_connection)\(|\.(driver|dbapi)_connection\b")
    found = [
        str(path.relative_to(ROOT))
        for folder in ("app", "workers")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if pattern.search(path.read_text()) and str(path.relative_to(ROOT)) not in allowed
    ]
    assert found == []


async def test_marked_raw_sql_keeps_other_organisations_rows_invisible(client, runtime):
    """Every raw statement of the services, run for one organisation, where another has the same trace,
    span ids and hours: nothing of the other one is read, counted, indexed or sealed."""
    alice, bob = await register(client, org="A"), await register(client, org="B")
    now = datetime.now(UTC).replace(minute=30)
    spans = {
        alice: [("root", None), ("child", "root")],
        bob: [("root", None), ("child", "root"), ("grandchild", "child")],
    }
    ids = {}
    for account, trace in spans.items():
        events = [
            {"action": "step", "traceId": "t", "spanId": span, "parentSpanId": parent, "prompt": f"word {span}",
             "occurredAt": (now - timedelta(hours=2, minutes=len(trace) - i)).isoformat()}
            for i, (span, parent) in enumerate(trace)
        ]  # fmt: skip
        result = await gql(client, "LogEvents", {"input": events}, token=account.token)
        assert "errors" not in result, result
        ids[account] = [r["id"] for r in result["data"]["logEvents"]]

    async with runtime.db.tenant_session(alice.org_id) as session:
        child = await audit.get_record(session, ids[alice][1])
        assert [r.id for r in await audit.chain(session, child)] == [ids[alice][0]]
        with pytest.raises(TenancyError):  # another organisation's record, read through this session
            await audit.chain(session, dataclasses.replace(child, org_id=bob.org_id))
        counted = await metrics.metrics(session, metrics.MetricsQuery(start=now - timedelta(days=1)))
        assert [row.count for row in counted] == [2]
    # rolled up: only its own records, in its own rows (bob's hour is the same)
    rolled = await metrics.rollup_organization(runtime.db, alice.org_id)
    assert rolled.hours == 1
    async with runtime.db.tenant_session(alice.org_id) as session:
        counted = await metrics.metrics(session, metrics.MetricsQuery(start=now - timedelta(days=1)))
        assert [row.count for row in counted] == [2]
    # indexed for search: asked for bob's ids, alice's indexing finds none of them
    assert await search.index_records(runtime.db, alice.org_id, ids[bob]) == 0
    assert await search.index_records(runtime.db, alice.org_id, ids[alice]) == 2
    assert await search.sweep(runtime.db, lag_seconds=0) == 3  # bob's, in bob's session
    # the quota counts only its own records
    async with runtime.db.tenant_session(alice.org_id) as session:
        await quota.consume_records(session, alice.org_id, 10)
        await session.commit()
    # sealed: one digest per organisation, each of its own records
    async with runtime.db.tenant_session(alice.org_id) as session:
        digest = await sealing.seal_organization(session, runtime.signer)
        assert digest is not None and digest.record_count == 2
    async with runtime.db.engine.begin() as conn:
        rollups = (await conn.execute(sa.text("SELECT org_id, sum(count) FROM metric_rollups GROUP BY 1"))).all()
        assert rollups == [(alice.org_id, 2)]
        indexed = (await conn.execute(sa.text("SELECT org_id, count(*) FROM audit_search GROUP BY 1"))).all()
        assert sorted(indexed) == sorted([(alice.org_id, 2), (bob.org_id, 3)])
        used = (await conn.execute(sa.text("SELECT org_id, records FROM usage_counters"))).all()
        assert sorted(used) == sorted([(alice.org_id, 12), (bob.org_id, 3)])
        state = (await conn.execute(sa.text("SELECT org_id FROM metric_rollup_state"))).scalars().all()
        assert state == [alice.org_id]
