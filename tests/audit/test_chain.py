"""The chain (issue 16.1): every record names its predecessor at write time; one canonical form, exact for every
JSON value ingest accepts; the migration's backfill gives the hashes ingest gives."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import orjson
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.db import MAX_JSON_NUMBER, MIN_JSON_NUMBER, json_loads, json_value_problem
from app.integrity import AUDIT_CHAIN, GENESIS_ENTRY, canonical_json, chain_hashes, chain_link
from support import gql, register

# every JSON value ingest accepts: the 64-bit integer range, finite floats, any unicode but NUL and lone surrogates
_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=12)
accepted_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=MIN_JSON_NUMBER, max_value=MAX_JSON_NUMBER)
    | st.integers(min_value=-(2**54), max_value=2**54)
    | st.floats(allow_nan=False, allow_infinity=False, min_value=-(2.0**63), max_value=2.0**63 - 1024)
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | _text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_text, children, max_size=4),
    max_leaves=16,
)


def _same(a: object, b: object) -> bool:
    number = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, number) and isinstance(b, number):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


async def test_canonical_form_survives_postgres_for_every_accepted_value(runtime):
    """canonical(value) == canonical(value as jsonb gives it back), and distinct stored values stay distinct:
    what ingest hashes is what verification recomputes, exactly."""
    examples: list[object] = []

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(value=accepted_values)
    def draw(value):
        examples.append(value)

    draw()
    examples += [2**64 - 1, str(2**64 - 1), 2**63, -(2**63), 1e18, 1e-7, -0.0, 0.1 + 0.2, "é\u2028\U0001f600", 2.0]
    examples = [v for v in examples if json_value_problem(v) is None]
    async with runtime.db.engine.connect() as conn:
        texts = list(
            (
                await conn.execute(
                    sa.text("SELECT CAST(v AS jsonb)::text FROM unnest(CAST(:vs AS text[])) AS v"),
                    {"vs": [orjson.dumps(v).decode() for v in examples]},
                )
            ).scalars()
        )
    by_canonical: dict[bytes, object] = {}
    for value, text in zip(examples, texts, strict=True):
        back = json_loads(text)
        assert canonical_json(value) == canonical_json(back), (value, back)
        # no two different JSON values share a canonical form (an int and a string, say); JSON numbers are
        # numbers (0 and 0.0 are one value, as jsonb equality says too)
        assert _same(by_canonical.setdefault(canonical_json(back), back), back), (value, text)
    assert canonical_json({"n": 2**64 - 1}) != canonical_json({"n": str(2**64 - 1)})
    assert canonical_json({"n": 2**64 - 1}) == b'{"n":18446744073709551615}'


def test_chain_hashes_are_the_documented_formula():
    import hashlib

    record = {f: None for f in AUDIT_CHAIN.header_fields + AUDIT_CHAIN.content_fields}
    record |= {"id": "log_1", "org_id": "org_1", "action": "a", "metadata": {"b": [1, 2.5]}, "prompt": "p"}
    hashes = chain_hashes(AUDIT_CHAIN, record, 1, GENESIS_ENTRY)
    content = {f: record[f] for f in AUDIT_CHAIN.content_fields}
    assert hashes.content_hash == hashlib.sha256(canonical_json(content)).digest()
    header = {f: record[f] for f in AUDIT_CHAIN.header_fields} | {
        "chain_index": 1,
        "content_hash": hashes.content_hash.hex(),
    }
    assert hashes.record_hash == hashlib.sha256(canonical_json(header)).digest()
    assert (
        hashes.entry_hash
        == hashlib.sha256(bytes(32) + hashes.record_hash).digest()
        == chain_link(GENESIS_ENTRY, hashes.record_hash)
    )
    assert hashes.checksum == "sha256:" + hashes.record_hash.hex()
    # erasing the content keeps the record hash: it names the content's hash, not the content
    erased = record | {"prompt": None, "metadata": {}}
    assert chain_hashes(AUDIT_CHAIN, erased, 1, GENESIS_ENTRY, content_digest=hashes.content_hash) == hashes


async def _chain_rows(runtime, org_id: str):
    async with runtime.db.engine.connect() as conn:
        return (
            await conn.execute(
                sa.text(
                    "SELECT id, chain_index, content_hash, entry_hash, checksum FROM audit_logs "
                    "WHERE org_id = :org ORDER BY chain_index"
                ),
                {"org": org_id},
            )
        ).all()


async def test_concurrent_batches_form_one_unbroken_chain_per_organisation(client, runtime):
    accounts = [await register(client, org=name) for name in ("Chain A", "Chain B")]

    async def send(account, n: int):
        records = [{"action": f"c{n}-{i}", "metadata": {"i": i}, "idempotencyKey": f"k{n % 3}-{i}"} for i in range(5)]
        result = await gql(client, "LogEvents", {"input": records}, token=account.token)
        assert "errors" not in result, result

    await asyncio.gather(*(send(account, n) for account in accounts for n in range(6)))
    for account in accounts:
        rows = await _chain_rows(runtime, account.org_id)
        assert [r.chain_index for r in rows] == list(range(1, len(rows) + 1))
        assert len(rows) == 15  # three distinct idempotency key families of five: replays take no place
        result = (await gql(client, "VerifyAuditTrail", {}, token=account.token))["data"]["verifyAuditTrail"]
        assert result["ok"] is True and result["recordsChecked"] == 15, result


def _migration():
    path = Path(__file__).resolve().parents[2] / "migrations" / "versions" / "0022_audit_chain.py"
    spec = importlib.util.spec_from_file_location("migration_0022", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_the_migration_backfill_gives_the_hashes_ingest_gives(client, runtime):
    account = await register(client)
    records = [
        {"action": "x", "prompt": "héllo", "metadata": {"big": 2**64 - 1, "f": 0.5, "n": [1, None]}, "args": [1e18]},
        {"action": "y", "result": {"ok": True}, "durationMs": 12.5},
        {"action": "z", "response": "r" * 3000},
    ]
    assert "errors" not in await gql(client, "LogEvents", {"input": records}, token=account.token)
    before = await _chain_rows(runtime, account.org_id)
    migration = _migration()
    async with runtime.db.engine.begin() as conn:
        await conn.execute(sa.text("ALTER TABLE audit_logs DISABLE TRIGGER USER"))
        await conn.execute(
            sa.text("UPDATE audit_logs SET content_hash = '', entry_hash = '', chain_index = -chain_index")
        )
        await conn.run_sync(lambda sync: migration._backfill(sync))
        await conn.execute(sa.text("ALTER TABLE audit_logs ENABLE TRIGGER USER"))
    assert await _chain_rows(runtime, account.org_id) == before


async def test_many_concurrent_writers_of_one_organisation_never_fork_either_chain(client, runtime):
    """The lock and the head come in one round trip (app.db.lock_chain_head): each writer still reads the head its
    predecessor committed, for records (single and batches, no idempotency keys) and for activity events alike."""
    account = await register(client, org="Chain C")

    async def one(n: int):
        result = await gql(client, "LogEvent", {"input": {"action": f"s{n}"}}, token=account.token)
        assert "errors" not in result, result

    async def batch(n: int):
        records = [{"action": f"b{n}-{i}"} for i in range(7)]
        assert "errors" not in await gql(client, "LogEvents", {"input": records}, token=account.token)

    async def agent(n: int):
        created = await gql(client, "CreateAgent", {"input": {"name": f"racer {n}"}}, token=account.token)
        assert "errors" not in created, created

    await asyncio.gather(*(f(n) for n in range(12) for f in (one, batch, agent)))
    rows = await _chain_rows(runtime, account.org_id)
    assert [r.chain_index for r in rows] == list(range(1, 12 * 8 + 1))
    async with runtime.db.engine.connect() as conn:
        events = (
            (
                await conn.execute(
                    sa.text("SELECT chain_index FROM activity_events WHERE org_id = :o ORDER BY chain_index"),
                    {"o": account.org_id},
                )
            )
            .scalars()
            .all()
        )
    assert list(events) == list(range(1, len(events) + 1)) and len(events) >= 12
    result = (await gql(client, "VerifyAuditTrail", {}, token=account.token))["data"]["verifyAuditTrail"]
    assert result["ok"] is True and result["recordsChecked"] == 12 * 8, result
    activity = await gql(client, "query { verifyActivityTrail { ok recordsChecked } }", token=account.token)
    assert activity["data"]["verifyActivityTrail"]["ok"] is True, activity
