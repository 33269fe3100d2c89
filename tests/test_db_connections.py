"""Pooled connections that the server closed are replaced, not handed to a request."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from support import gql, register


async def test_requests_survive_terminated_pool_connections(client, runtime):
    account = await register(client)
    # fill the pool with several idle connections
    sessions = [runtime.db.system_session() for _ in range(3)]
    opened = [await s.__aenter__() for s in sessions]
    for session in opened:
        await session.execute(sa.text("SELECT 1"))
    for s in sessions:
        await s.__aexit__(None, None, None)
    async with runtime.db.engine.connect() as conn:
        own = (await conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one()
        killed = (
            await conn.execute(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> :own AND backend_type = 'client backend'"
                ),
                {"own": own},
            )
        ).scalar_one()
    assert killed >= 1
    await asyncio.sleep(0.2)  # the server's goodbye reaches the idle connections
    for _ in range(5):
        result = await gql(client, "Me", {}, token=account.token)
        assert "errors" not in result, result


async def test_auth_lookups_run_without_a_transaction(runtime):
    query = sa.text("SELECT txid_current()")
    async with runtime.db.system_session(autocommit=True) as session:
        first, second = [(await session.execute(query)).scalar_one() for _ in range(2)]
    assert first != second  # each statement was its own transaction
    async with runtime.db.system_session() as session:
        first, second = [(await session.execute(query)).scalar_one() for _ in range(2)]
    assert first == second
