"""Monthly partitions made ahead by the worker; records land in the month they were received."""

from __future__ import annotations

from datetime import UTC, date, datetime

import sqlalchemy as sa

from app.audit import partitions
from support import gql, register


def test_partition_names_and_months():
    assert partitions.months(date(2026, 11, 1), date(2027, 2, 1)) == [
        date(2026, 11, 1),
        date(2026, 12, 1),
        date(2027, 1, 1),
        date(2027, 2, 1),
    ]
    assert partitions.ahead(datetime(2026, 12, 31, 23, tzinfo=UTC)) == date(2027, 3, 1)
    p = partitions.Partition("audit_logs", date(2026, 12, 1))
    assert p.name == "audit_logs_p202612" and partitions.parse_name(p.name) == p
    assert partitions.parse_name("audit_logs_default") is None and partitions.parse_name("audit_logs_p202613") is None
    assert "FROM ('2026-12-01T00:00:00+00:00') TO ('2027-01-01T00:00:00+00:00')" in p.create_sql()


async def test_the_worker_makes_partitions_ahead(runtime):
    from workers.settings import run_worker

    far = datetime(2031, 5, 17, tzinfo=UTC)
    made = await partitions.ensure_ahead(runtime.db, far, count=1)
    assert made == ["audit_logs_p203105", "audit_logs_p203106", "audit_search_p203105", "audit_search_p203106"]
    assert await partitions.ensure_ahead(runtime.db, far, count=1) == []  # idempotent
    # the cron job keeps three months ahead of now: the migration made them, so nothing is missing
    job = await runtime.queue.enqueue_job("create_audit_partitions")
    await run_worker(runtime, burst=True)
    assert await job.result(timeout=10) == 0
    have = await partitions.existing(runtime.db)
    assert {
        partitions.Partition("audit_logs", m).name
        for m in partitions.months(datetime.now(UTC), partitions.ahead(datetime.now(UTC)))
    } <= have
    async with runtime.db.engine.begin() as conn:
        for name in made:
            await conn.execute(sa.text(f'DROP TABLE "{name}"'))


async def test_records_land_in_their_month(client, runtime):
    account = await register(client)
    body = await gql(client, "LogEvents", {"input": [{"action": "a"}, {"action": "b"}]}, token=account.token)
    assert "errors" not in body
    async with runtime.db.engine.connect() as conn:
        where = (
            (await conn.execute(sa.text("SELECT DISTINCT tableoid::regclass::text FROM audit_logs"))).scalars().all()
        )
    assert where == [partitions.Partition("audit_logs", partitions.month_of(datetime.now(UTC))).name]


async def test_past_partitions_retention_emptied_are_dropped(client, runtime):
    account = await register(client)
    async with runtime.db.engine.begin() as conn:
        for month in (date(2020, 1, 1), date(2020, 2, 1)):
            for table in partitions.PARTITIONED_TABLES:
                await conn.execute(sa.text(partitions.Partition(table, month).create_sql()))
        # February still holds a record (an organisation whose retention has not passed it)
        await conn.execute(
            sa.text(
                "INSERT INTO audit_logs (id, org_id, trace_id, span_id, action, metadata, occurred_at, received_at,"
                " status, credential_masked, checksum, chain_index, content_hash, entry_hash) VALUES ('log_feb', :o,"
                " 't', 's', 'a', '{}', '2020-02-10', '2020-02-10', 'ok', false, 'c', 1, '\\x00', '\\x00')"
            ),
            {"o": account.org_id},
        )
    dropped = await partitions.drop_empty_before(runtime.db, partitions.month_of(datetime.now(UTC)))
    assert dropped == ["audit_logs_p202001", "audit_search_p202001"]
    have = await partitions.existing(runtime.db)
    assert "audit_logs_p202002" in have and "audit_logs_p202001" not in have
    async with runtime.db.engine.begin() as conn:
        for table in partitions.PARTITIONED_TABLES:
            await conn.execute(sa.text(f'DROP TABLE "{table}_p202002"'))
