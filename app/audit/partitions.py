"""Time partitions of the tables that grow with the audit records: `audit_logs` and `audit_search`.

Both are range-partitioned by `received_at` (the server's clock at ingest, never the sender's), one partition
per calendar month (UTC), named `<table>_pYYYYMM`, plus a DEFAULT partition (`<table>_default`) that stays
empty as long as partitions are made ahead: the migration makes them up to `AHEAD_MONTHS` after the current
month and the worker's daily job keeps that horizon, so an insert always finds its partition, and the DEFAULT
partition only catches rows if the worker was stopped for months (they stay readable and are removed by
retention like any other; the month they belong to is then not created until they are gone).

Why `received_at`: the server sets it, so a sender's clock (a record dated 1970 or 2100) never decides where
a row goes; and ingest order is chain order, so what retention removes, the oldest received records, is the
start of each organisation's chain, which a signed retention entry can name as one range (app.audit.retention).
Why monthly: retention removes by batch inside partitions anyway (a 7-day and a 365-day organisation share
every partition), and a partition is dropped whole only once every organisation's retention has passed it;
monthly keeps the count small (13 to 15 for a year of records), which keeps planning and the per-partition
index probes of an org-wide query cheap, where weekly would mean 4 times as many.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
import structlog

from app.db import global_text

log = structlog.get_logger(__name__)

PARTITIONED_TABLES = ("audit_logs", "audit_search")
AHEAD_MONTHS = 3  # partitions exist up to this many months after the current one


def month_of(moment: datetime | date) -> date:
    return date(moment.year, moment.month, 1)


def next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def months(first: date, last: date) -> list[date]:
    out, month = [], month_of(first)
    while month <= last:
        out.append(month)
        month = next_month(month)
    return out


def ahead(now: datetime, count: int = AHEAD_MONTHS) -> date:
    month = month_of(now)
    for _ in range(count):
        month = next_month(month)
    return month


def _bound(month: date) -> str:
    return datetime(month.year, month.month, 1, tzinfo=UTC).isoformat()


@dataclass(frozen=True)
class Partition:
    table: str
    month: date

    @property
    def name(self) -> str:
        return f"{self.table}_p{self.month:%Y%m}"

    @property
    def end(self) -> datetime:
        end = next_month(self.month)
        return datetime(end.year, end.month, 1, tzinfo=UTC)

    def create_sql(self) -> str:
        # names and bounds come from PARTITIONED_TABLES and dates, never from input
        return (
            f'CREATE TABLE IF NOT EXISTS "{self.name}" PARTITION OF "{self.table}" '
            f"FOR VALUES FROM ('{_bound(self.month)}') TO ('{_bound(next_month(self.month))}')"
        )


def default_partition_sql(table: str) -> str:
    return f'CREATE TABLE IF NOT EXISTS "{table}_default" PARTITION OF "{table}" DEFAULT'


def parse_name(name: str) -> Partition | None:
    """The partition a table name stands for (`audit_logs_p202612`), None for any other name."""
    for table in PARTITIONED_TABLES:
        prefix = f"{table}_p"
        rest = name.removeprefix(prefix)
        if rest != name and len(rest) == 6 and rest.isdigit() and 1 <= int(rest[4:]) <= 12:
            return Partition(table, date(int(rest[:4]), int(rest[4:]), 1))
    return None


# the partitions that exist, per table (pg_inherits: children of the partitioned tables)
LIST_SQL = """
SELECT child.relname FROM pg_inherits i
JOIN pg_class parent ON parent.oid = i.inhparent
JOIN pg_class child ON child.oid = i.inhrelid
WHERE parent.relname IN ('audit_logs', 'audit_search') AND parent.relnamespace = to_regnamespace(current_schema())
"""


async def existing(db: Any) -> set[str]:
    async with db.engine.connect() as conn:
        return set((await conn.execute(global_text(LIST_SQL))).scalars().all())


async def ensure_ahead(db: Any, now: datetime | None = None, count: int = AHEAD_MONTHS) -> list[str]:
    """Creates the monthly partitions missing from the current month to `count` months ahead (the worker's
    daily job; the migration made them first). Each in its own short transaction: creating a partition locks
    its parent for an instant, and one that cannot be made (the DEFAULT partition holds rows of its month,
    left there while the worker was stopped) is logged and skipped, never in ingest's way."""
    now = now or datetime.now(UTC)
    have = await existing(db)
    made: list[str] = []
    for table in PARTITIONED_TABLES:
        for month in months(month_of(now), ahead(now, count)):
            partition = Partition(table, month)
            if partition.name in have:
                continue
            try:
                async with db.engine.begin() as conn:
                    await conn.execute(global_text("SET LOCAL lock_timeout = '5s'"))
                    await conn.execute(global_text(partition.create_sql()))
            except sa.exc.DBAPIError as error:
                log.warning("partition not created", partition=partition.name, error=str(error.orig)[:200])
                continue
            made.append(partition.name)
    return made


async def drop(db: Any, names: list[str]) -> bool:
    """Drops these partitions in one short transaction (an instant's lock on their parents); False, and nothing
    dropped, when a parent is busy past the lock timeout (the next run tries again)."""
    try:
        async with db.engine.begin() as conn:
            await conn.execute(global_text("SET LOCAL lock_timeout = '2s'"))
            for name in names:
                await conn.execute(global_text(f'DROP TABLE IF EXISTS "{name}"'))
    except sa.exc.DBAPIError as error:
        log.warning("partitions not dropped", partitions=names, error=str(error.orig)[:200])
        return False
    return True


async def drop_empty_before(db: Any, month: date) -> list[str]:
    """Drops the monthly partitions (of records and search rows together) before `month` that hold no row:
    retention emptied them, every organisation's retention having passed them."""
    have = await existing(db)
    dropped: list[str] = []
    for name in sorted(have):
        partition = parse_name(name)
        if partition is None or partition.table != "audit_logs" or partition.month >= month:
            continue
        names = [n for n in (name, Partition("audit_search", partition.month).name) if n in have]
        async with db.engine.connect() as conn:
            held = [
                (await conn.execute(global_text(f'SELECT EXISTS (SELECT 1 FROM "{n}")'))).scalar()  # noqa: S608
                for n in names
            ]
        if not any(held) and await drop(db, names):
            dropped.extend(names)
    return dropped
