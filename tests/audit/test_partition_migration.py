"""Migration 0027 on a populated database: the records of two organisations over four months, with their
search rows, alerts and a signed digest written at 0026, move into the monthly partitions; afterwards every
record, the chain and the digest verify (`agentrail verify`), nothing is lost, and seq continues."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from datetime import UTC, datetime, timedelta

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from app.db import new_id, to_async_url
from app.integrity import (
    AUDIT_CHAIN,
    GENESIS_ENTRY,
    GENESIS_HASH,
    Frontier,
    chain_hashes,
    digest_hash,
    digest_v2_payload,
)
from app.runtime import migrations
from support import agentrail_command

_SEQS = sa.text("SELECT id, seq FROM audit_logs WHERE org_id = :o")
_JSON = ("metadata", "args", "result")
_RECORD = """
INSERT INTO audit_logs (id, org_id, trace_id, span_id, action, prompt, response, metadata, args, result,
    occurred_at, received_at, status, credential_masked, checksum, chain_index, content_hash, entry_hash,
    idempotency_key)
VALUES (:id, :org_id, :trace_id, :span_id, :action, :prompt, :response, CAST(:metadata AS jsonb),
    CAST(:args AS jsonb), CAST(:result AS jsonb), :occurred_at, :received_at, :status, false, :checksum,
    :chain_index, :content_hash, :entry_hash, :idempotency_key)
"""


def _records(org_id: str, start: datetime, count: int) -> list[dict]:
    rows, previous = [], GENESIS_ENTRY
    for i in range(count):
        at = start + timedelta(days=i * 100 / count)  # four calendar months or so
        row = {
            "id": new_id("log"),
            "org_id": org_id,
            "trace_id": f"trace-{i // 5}",
            "span_id": f"span-{i}",
            "parent_span_id": None,
            "agent_id": None,
            "action": "tool.call",
            "prompt": f"prompt {i} about invoices",
            "response": "ok",
            "metadata": {"n": i},
            "args": [i, 2.5],
            "result": None,
            "occurred_at": at,
            "received_at": at,
            "status": "ok",
            "idempotency_key": f"key-{i}",
            "credential_masked": False,
        }
        for name in ("duration_ms", "execution_id", "verb", "provider", "risk_level", "governance_status"):
            row[name] = None
        for name in ("dry_run", "idempotent", "tenant_id"):
            row[name] = None
        hashes = chain_hashes(AUDIT_CHAIN, row, i + 1, previous)
        row |= {
            "checksum": hashes.checksum,
            "chain_index": i + 1,
            "content_hash": hashes.content_hash,
            "entry_hash": hashes.entry_hash,
        }
        previous = hashes.entry_hash
        rows.append(row)
    return rows


def _digest(org_id: str, rows: list[dict], signer) -> dict:
    frontier = Frontier.empty()
    for row in rows:
        frontier.append(row["entry_hash"])
    fields = {
        "version": 2,
        "org_id": org_id,
        "sequence": 1,
        "from_index": 1,
        "tree_size": len(rows),
        "record_count": len(rows),
        "merkle_root": frontier.root().hex(),
        "chain_head": rows[-1]["entry_hash"].hex(),
        "previous_hash": GENESIS_HASH,
        "created_at": datetime.now(UTC).replace(microsecond=0),
        "key_id": signer.key_id,
    }
    payload = digest_v2_payload(**fields)
    return {
        **fields,
        "id": new_id("dgst"),
        "from_seq": 0,
        "to_seq": 0,
        "first_occurred_at": rows[0]["occurred_at"],
        "last_occurred_at": rows[-1]["occurred_at"],
        "digest_hash": digest_hash(payload),
        "signature": signer.sign(payload),
        "frontier": json.dumps(frontier.to_json()),
    }


async def _populate(url: str, signer) -> dict[str, int]:
    engine = create_async_engine(to_async_url(url))
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=110)
    try:
        async with engine.begin() as conn:
            for org_id, count in (("org_migrated_a", 300), ("org_migrated_b", 40)):
                await conn.execute(
                    sa.text(
                        "INSERT INTO organizations (id, name, created_at, sso_required) VALUES (:o, :o, now(), false)"
                    ),
                    {"o": org_id},
                )
                rows = _records(org_id, start, count)
                params = [
                    {
                        **r,
                        **{
                            k: None if r[k] is None else orjson.dumps(r[k]).decode()
                            for k in ("metadata", "args", "result")
                        },
                    }
                    for r in rows
                ]
                await conn.execute(sa.text(_RECORD), params)
                seqs = dict((await conn.execute(_SEQS, {"o": org_id})).all())
                digest = _digest(org_id, rows, signer)
                digest["from_seq"], digest["to_seq"] = min(seqs.values()), max(seqs.values())
                await conn.execute(
                    sa.text(
                        "INSERT INTO audit_digests (id, org_id, stream, sequence, from_seq, to_seq, first_occurred_at,"
                        " last_occurred_at, record_count, merkle_root, previous_hash, digest_hash, signature,"
                        " created_at, version, key_id, from_index, tree_size, chain_head, frontier)"
                        " VALUES (:id, :org_id, 'audit',"
                        " :sequence, :from_seq, :to_seq, :first_occurred_at, :last_occurred_at, :record_count,"
                        " :merkle_root, :previous_hash, :digest_hash, :signature, :created_at, 2, :key_id, :from_index,"
                        " :tree_size, :chain_head, CAST(:frontier AS jsonb))"
                    ),
                    digest,
                )
            await conn.execute(
                sa.text(
                    "INSERT INTO audit_search (log_id, org_id, document) "
                    "SELECT id, org_id, to_tsvector('simple', prompt) FROM audit_logs"
                )
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO alerts (id, org_id, rule_id, rule_name, rule_kind, severity, action, message, field,"
                    " excerpt, audit_log_id, trace_id, created_at) SELECT 'alrt_' || seq, org_id, 'rule_x', 'x', 'pii',"
                    " 'high', 'alert', 'm', 'prompt', 'e', id, trace_id, received_at FROM audit_logs WHERE seq % 10 = 0"
                )
            )
            counts = {}
            for table in ("audit_logs", "audit_search", "alerts", "audit_digests"):
                counts[table] = (await conn.execute(sa.text(f"SELECT count(*) FROM {table}"))).scalar_one()
            counts["max_seq"] = (await conn.execute(sa.text("SELECT max(seq) FROM audit_logs"))).scalar_one()
            return counts
    finally:
        await engine.dispose()


async def _scalars(url: str, statement: str) -> list:
    engine = create_async_engine(to_async_url(url))
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(sa.text(statement))).scalars().all())
    finally:
        await engine.dispose()


async def _admin(url: str, statement: str) -> None:
    engine = create_async_engine(to_async_url(url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text(statement))
    finally:
        await engine.dispose()


async def test_partitioning_a_populated_database(database_url, runtime):
    base = make_url(database_url)
    name = f"{base.database}_partitions"
    await _admin(database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await _admin(database_url, f'CREATE DATABASE "{name}"')
    url = base.set(database=name).render_as_string(hide_password=False)
    try:
        await migrations.upgrade(url, "0026")
        before = await _populate(url, runtime.signer)
        await migrations.upgrade(url)

        for table in ("audit_logs", "audit_search", "alerts", "audit_digests"):
            assert (await _scalars(url, f"SELECT count(*) FROM {table}")) == [before[table]], table
        assert await _scalars(url, "SELECT count(*) FROM ONLY audit_logs_default") == [0]
        months = await _scalars(url, "SELECT DISTINCT tableoid::regclass::text FROM audit_logs ORDER BY 1")
        assert len(months) >= 4 and all(m.startswith("audit_logs_p") for m in months), months
        assert (await _scalars(url, "SELECT count(DISTINCT tableoid) FROM audit_search")) == [len(months)]

        env = {
            **os.environ,
            "DATABASE_URL": url,
            "REDIS_URL": runtime.settings.redis_url or "",
            "AGENTRAIL_SECRET_KEY": runtime.secret_key,
        }
        env.pop("AGENTRAIL_AUDIT_SIGNING_KEY", None)

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*agentrail_command(), *args, "--data-dir", str(runtime.settings.data_dir)],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )

        verified = await asyncio.to_thread(run, "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        audit = [json.loads(line) for line in verified.stdout.splitlines() if json.loads(line)["trail"] == "audit"]
        assert {(r["organizationId"], r["recordsChecked"], r["digestsChecked"]) for r in audit} == {
            ("org_migrated_a", 300, 1),
            ("org_migrated_b", 40, 1),
        }

        # still immutable; seq continues after the copied values
        engine = create_async_engine(to_async_url(url))
        try:
            async with engine.begin() as conn:
                try:
                    async with conn.begin_nested():
                        await conn.execute(sa.text("UPDATE audit_logs SET prompt = 'x' WHERE chain_index = 1"))
                    raise AssertionError("an UPDATE went through")
                except sa.exc.DBAPIError as error:
                    assert "immutable" in str(error)
                await conn.execute(
                    sa.text(
                        "INSERT INTO audit_logs (id, org_id, trace_id, span_id, action, metadata, occurred_at,"
                        " received_at, status, credential_masked, checksum, chain_index, content_hash, entry_hash)"
                        " VALUES ('log_new', 'org_migrated_b', 't', 's', 'a', '{}', now(), now(), 'ok', false, 'c',"
                        " 41, '\\x00', '\\x00')"
                    )
                )
                seq = (await conn.execute(sa.text("SELECT seq FROM audit_logs WHERE id = 'log_new'"))).scalar_one()
                assert seq == before["max_seq"] + 1
                await conn.rollback()
        finally:
            await engine.dispose()

        await migrations.downgrade(url, "0026")
        assert (await _scalars(url, "SELECT count(*) FROM audit_logs")) == [before["audit_logs"]]
        assert (await _scalars(url, "SELECT count(*) FROM audit_search")) == [before["audit_search"]]
    finally:
        await _admin(database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
