"""Full-text search over prompts and responses, indexed off the ingest path.

`index_records` runs in a worker job right after a batch commits; `sweep` runs every minute and indexes
whatever a lost job (Redis flushed, worker killed) left out, so every record becomes searchable.
"""

from __future__ import annotations

import re
import time
from typing import Any

import sqlalchemy as sa
from sqlmodel import col

from app.audit.models import AuditLog, AuditSearch
from app.db import Database, lock_organisation, scoped_text
from app.errors import BadUserInput
from app.runtime.isolation import each_organization
from app.unit_of_work import transaction

TEXT_CONFIG = "simple"  # language-neutral: prompts come in every language, and no stemming surprises
MAX_INDEXED_CHARS = 100_000  # per field: a tsvector is capped at 1 MB, and later text adds little
SWEEP_CHUNK = 5_000
MAX_QUERY_CHARS = 1_000  # a search is a few words; longer is abuse (PostgreSQL would parse megabytes per row batch)
SWEEP_LAG_SECONDS = 120  # longer than any ingest transaction runs: no record commits behind the sweeper
# indexing holds it shared per organisation, an erasure exclusively (app.audit.erasure): an erasure's delete of
# search rows then sees every row an indexing statement made from content read before the erasure committed
SEARCH_LOCK_NAMESPACE = 0x53524348  # "SRCH"

_DOCUMENT = (
    f"to_tsvector('{TEXT_CONFIG}', left(coalesce(a.prompt, ''), {MAX_INDEXED_CHARS}) || ' ' || "
    f"left(coalesce(a.response, ''), {MAX_INDEXED_CHARS}))"
)

# the f-strings below interpolate only the module constants above, never input
_INDEX_IDS = scoped_text(
    f"""
    INSERT INTO audit_search (log_id, org_id, received_at, document)
    SELECT a.id, a.org_id, a.received_at, {_DOCUMENT}
    FROM audit_logs a
    WHERE a.org_id = :org AND a.id = ANY(CAST(:ids AS text[])) AND a.erased_at IS NULL
    ON CONFLICT (log_id, received_at) DO NOTHING
    """
)

_SWEEP = scoped_text(
    f"""
    WITH chunk AS (
        SELECT a.id, a.seq FROM audit_logs a
        WHERE a.org_id = :org AND a.seq > :after AND a.received_at < now() - make_interval(secs => :lag)
        ORDER BY a.seq LIMIT :limit
    ), indexed AS (
        INSERT INTO audit_search (log_id, org_id, received_at, document)
        SELECT a.id, a.org_id, a.received_at, {_DOCUMENT}
        FROM audit_logs a JOIN chunk c ON c.id = a.id
        WHERE a.org_id = :org AND a.erased_at IS NULL
          AND NOT EXISTS (SELECT 1 FROM audit_search s WHERE s.log_id = a.id AND s.received_at = a.received_at)
        ON CONFLICT (log_id, received_at) DO NOTHING
        RETURNING 1
    )
    SELECT (SELECT max(seq) FROM chunk) AS last_seq, (SELECT count(*) FROM chunk) AS checked,
           (SELECT count(*) FROM indexed) AS indexed
    """
)


PENDING_TTL_SECONDS = 3600
JOB_WINDOW_SECONDS = 0.25  # ingests within one window share one indexing job


_LAST_WINDOW: dict[str, int] = {}  # per process: the last window whose job it enqueued, per organisation


def pending_key(org_id: str) -> str:
    return f"agentrail:search-pending:{org_id}"


async def queue_for_indexing(runtime: Any, created_ids_by_org: dict[str, list[str]]) -> None:
    """Remembers the new ids in Redis and makes sure one indexing job per organisation and window runs.

    The job is deferred by the window length and named after the window, so it starts only when the
    window is over: every id pushed in that window is in the list when it drains it. Many small ingests
    thus cost one job, which indexes their records in one statement.
    """
    async with runtime.redis.pipeline(transaction=False) as pipe:
        for org_id, ids in created_ids_by_org.items():
            pipe.rpush(pending_key(org_id), *ids)
            pipe.expire(pending_key(org_id), PENDING_TTL_SECONDS)
        await pipe.execute()
    window = int(time.time() / JOB_WINDOW_SECONDS)
    for org_id in created_ids_by_org:
        if _LAST_WINDOW.get(org_id) == window:
            continue  # this process already asked for this window's job: it will drain these ids too
        _LAST_WINDOW[org_id] = window
        await runtime.queue.enqueue_job(
            "index_audit_search", org_id, _job_id=f"search:{org_id}:{window}", _defer_by=JOB_WINDOW_SECONDS
        )


async def drain_pending(db: Database, redis: Any, org_id: str, *, chunk: int = SWEEP_CHUNK) -> int:
    """The job: indexes every id waiting for the organisation."""
    total = 0
    while raw := await redis.lpop(pending_key(org_id), chunk):
        total += await index_records(db, org_id, [i.decode() if isinstance(i, bytes) else i for i in raw])
    return total


async def index_records(db: Database, org_id: str, record_ids: list[str]) -> int:
    async with transaction(db, org_id) as session:
        await lock_organisation(session, SEARCH_LOCK_NAMESPACE, shared=True)
        result = await session.execute(_INDEX_IDS, {"ids": record_ids})
    return int(result.rowcount or 0)


async def sweep(db: Database, *, lag_seconds: float = SWEEP_LAG_SECONDS) -> int:
    """Indexes records no job indexed; returns how many it found."""
    async with db.system_session() as session:
        orgs = (
            await session.execute(
                sa.text(
                    "SELECT o.id, coalesce(p.swept_seq, 0) FROM organizations o "
                    "LEFT JOIN audit_search_progress p ON p.org_id = o.id"
                )
            )
        ).all()
    swept_by_org = dict(orgs)

    async def sweep_one(org_id: str) -> int:
        swept, found = swept_by_org[org_id], 0
        while True:
            async with transaction(db, org_id) as session:
                await lock_organisation(session, SEARCH_LOCK_NAMESPACE, shared=True)
                row = (await session.execute(_SWEEP, {"after": swept, "limit": SWEEP_CHUNK, "lag": lag_seconds})).one()
                if not row.checked:
                    return found
                found += int(row.indexed)
                swept = int(row.last_seq)
                await session.execute(
                    scoped_text(
                        "INSERT INTO audit_search_progress (org_id, swept_seq) VALUES (:org, :seq) "
                        "ON CONFLICT (org_id) DO UPDATE SET swept_seq = EXCLUDED.swept_seq"
                    ),
                    {"seq": swept},
                )
            if row.checked < SWEEP_CHUNK:
                return found

    # one organisation that fails is skipped (and retried on the next run)
    return sum(await each_organization("sweep_audit_search", swept_by_org, sweep_one))


MAX_QUERY_TERMS = 32  # words and quoted phrases; an OR of 2,000 terms took PostgreSQL 18.8 s


def check_query(query: str) -> None:
    """BAD_USER_INPUT for a search longer than MAX_QUERY_CHARS, with more than MAX_QUERY_TERMS terms, or holding
    NUL (PostgreSQL refuses it): far more than any person's search costs, refused before any work."""
    if len(query) > MAX_QUERY_CHARS:
        raise BadUserInput(f"search must be at most {MAX_QUERY_CHARS} characters", field="search")
    if "\x00" in query:
        raise BadUserInput("search must not contain NUL characters", field="search")
    terms = [t for t in _TERM.findall(query) if t.upper() != "OR" and t != "-"]
    if len(terms) > MAX_QUERY_TERMS:
        raise BadUserInput(f"search must have at most {MAX_QUERY_TERMS} terms (it has {len(terms)})", field="search")


_TERM = re.compile(r'"[^"]*"|[^\s"]+')


def matches(query: str) -> Any:
    """SQL condition on AuditLog: prompt or response matches the web-search style `query` (checked first)."""
    check_query(query)
    tsquery = sa.func.websearch_to_tsquery(TEXT_CONFIG, query)
    return col(AuditLog.id).in_(sa.select(col(AuditSearch.log_id)).where(col(AuditSearch.document).op("@@")(tsquery)))
