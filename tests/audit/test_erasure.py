"""Erasure that keeps the proof (issue 21.3): `eraseRecords` removes the content of matching records (and their
search rows and alert excerpts) through the one privileged path past the immutability trigger; the records, their
chain links and every proof stay verifiable, on the server and offline, and erased records say so everywhere."""

from __future__ import annotations

import asyncio
import io
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from app.audit import erasure, retention, sealing, search
from app.reports import data as reports
from support import add_user, create_api_key, error_code, gql, register
from workers.settings import run_worker

VERIFY_SRC = Path(__file__).resolve().parents[2] / "sdk" / "verify" / "src"
sys.path.insert(0, str(VERIFY_SRC))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "exports"))  # export_support
from agentrail_verify import verify_lines  # noqa: E402

SSN = "123-45-6789"
CONTENT = ("prompt", "response", "metadata", "args", "result")


def _record(i: int, **fields) -> dict:
    return {
        "action": "llm_call",
        "prompt": f"prompt {i} of Jane Roe, SSN {SSN}",
        "response": f"response {i} zebracorn",
        "metadata": {"i": i, "customer": "jane"},
        "args": {"to": "jane@example.org"},
        "result": {"ok": True},
        **fields,
    }


async def _log(client, account, records: list[dict]) -> list[str]:
    result = await gql(client, "LogEvents", {"input": records}, token=account.token)
    assert "errors" not in result, result
    return [r["id"] for r in result["data"]["logEvents"]]


async def _erase(client, account, filter_: dict, reason: str = "GDPR Art. 17 request #42", token=None) -> dict:
    return await gql(client, "EraseRecords", {"filter": filter_, "reason": reason}, token=token or account.token)


async def _erased(client, account, filter_: dict) -> dict:
    result = await _erase(client, account, filter_)
    assert "errors" not in result, result
    return result["data"]["eraseRecords"]


async def _rows(runtime, org_id: str) -> dict[str, dict]:
    async with runtime.db.engine.connect() as conn:
        rows = await conn.execute(sa.text("SELECT * FROM audit_logs WHERE org_id = :o"), {"o": org_id})
        return {r.id: dict(r._mapping) for r in rows}


async def _verify(client, account) -> dict:
    result = await gql(client, "VerifyAuditTrail", {}, token=account.token)
    assert "errors" not in result, result
    return result["data"]["verifyAuditTrail"]


async def _offline(client, runtime, key: str):
    response = await client.get("/api/v1/audit-logs/export?includeProofs=true", headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    return verify_lines(response.content.splitlines(), runtime.signer.public_key)


async def _search_rows(runtime, ids) -> int:
    async with runtime.db.engine.connect() as conn:
        found = await conn.execute(
            sa.text("SELECT count(*) FROM audit_search WHERE log_id = ANY(:ids)"), {"ids": list(ids)}
        )
        return int(found.scalar_one())


@pytest.fixture
async def org(client, runtime):
    """An organisation with a PII rule (alerts with excerpts), 300 sealed records and 6 unsealed, indexed."""
    account = await register(client)
    rule = await gql(
        client,
        "CreateComplianceRule",
        {"input": {"name": "SSNs", "kind": "PII", "config": {"types": ["ssn"]}}},
        token=account.token,
    )
    assert "errors" not in rule, rule
    ids = await _log(
        client,
        account,
        [_record(i, traceId="trace-a" if i < 3 else None, tenantId="tenant-x" if i % 50 == 7 else None)
         for i in range(300)],
    )  # fmt: skip
    assert await sealing.seal_all(runtime.db, runtime.signer, runtime=runtime) >= 1
    ids += await _log(client, account, [_record(300 + i, agentId="writer-7") for i in range(6)])
    await search.sweep(runtime.db, lag_seconds=0)
    account.key, _ = await create_api_key(client, account)
    account.ids = ids
    return account


async def test_erasure_by_ids_keeps_every_proof_and_says_erased_everywhere(client, runtime, org):
    target = [org.ids[5], org.ids[301]]  # one sealed, one not
    assert await _search_rows(runtime, target) == 2
    done = await _erased(client, org, {"recordIds": target})
    assert done["status"] == "DONE" and done["recordCount"] == 2 and done["id"].startswith("ers_")
    assert done["requestedBy"] == org.user_id and done["filter"] == {"recordIds": target}

    rows = await _rows(runtime, org.org_id)
    for record_id in target:
        row = rows[record_id]
        assert all(row[name] is None for name in CONTENT)
        assert row["erasure_id"] == done["id"] and row["erased_at"] is not None
        assert row["content_hash"] and row["checksum"].startswith("sha256:")  # kept: the chain still names it
    assert rows[org.ids[6]]["prompt"].startswith("prompt 6")
    # search rows and alert excerpts go with the content
    assert await _search_rows(runtime, target) == 0
    async with runtime.db.engine.connect() as conn:
        excerpts = dict(
            (
                await conn.execute(
                    sa.text("SELECT audit_log_id, excerpt FROM alerts WHERE org_id = :o"), {"o": org.org_id}
                )
            ).all()
        )
    assert excerpts[target[0]] == "[ERASED]" and excerpts[org.ids[6]] != "[ERASED]"

    # GraphQL and REST say so
    one = (await gql(client, "AuditLog", {"id": target[0]}, token=org.token))["data"]["auditLog"]
    assert one["erasedAt"] and one["erasureId"] == done["id"]
    assert [one[name] for name in CONTENT] == [None] * 5
    rest = (await client.get(f"/api/v1/audit-logs/{target[1]}", headers={"X-API-Key": org.key})).json()
    assert rest["erasedAt"].endswith("Z") and rest["erasureId"] == done["id"] and rest["prompt"] is None
    kept = (await client.get(f"/api/v1/audit-logs/{org.ids[6]}", headers={"X-API-Key": org.key})).json()
    assert kept["erasedAt"] is None and kept["erasureId"] is None

    # the trail verifies, erased records counted as erased, before and after sealing them
    for _ in range(2):
        verified = await _verify(client, org)
        assert verified["ok"] is True, verified
        assert verified["recordsErased"] == 2 and verified["recordsChecked"] == 306
        offline = await _offline(client, runtime, org.key)
        assert offline.ok, offline.breaks
        assert offline.erased == 2 and sorted(offline.erased_ids) == sorted(target) and offline.records == 306
        await sealing.seal_all(runtime.db, runtime.signer, runtime=runtime)
    # a proof of an erased record still holds
    proof = await client.get(f"/api/v1/audit-logs/{target[0]}/proof", headers={"X-API-Key": org.key})
    assert proof.status_code == 200, proof.text

    # the erasure is listed, and on the activity trail
    listed = (await gql(client, "AuditErasures", {}, token=org.token))["data"]["auditErasures"]
    assert [e["node"]["id"] for e in listed["edges"]] == [done["id"]]
    assert (await gql(client, "AuditErasure", {"id": done["id"]}, token=org.token))["data"]["auditErasure"][
        "recordCount"
    ] == 2
    async with runtime.db.engine.connect() as conn:
        events = (
            await conn.execute(
                sa.text("SELECT action, target_id, metadata FROM activity_events WHERE org_id = :o AND target_id = :e"),
                {"o": org.org_id, "e": done["id"]},
            )
        ).all()
    assert {e.action for e in events} == {"audit.erasure_requested", "audit.records_erased"}
    completed = next(e for e in events if e.action == "audit.records_erased")
    assert completed.metadata["recordCount"] == 2
    activity = (await gql(client, "VerifyActivityTrail", {}, token=org.token))["data"]["verifyActivityTrail"]
    assert activity["ok"] is True, activity

    # the integrity report counts them and lists the erasure
    async with runtime.db.tenant_session(org.org_id) as session:
        now = datetime.now(UTC)
        window = reports.Window(now - timedelta(days=1), now + timedelta(minutes=1), None)
        report = await reports.audit_integrity(session, window, sealing.Keys(runtime.secret_key, runtime.signer))
    assert report.summary["ok"] is True and report.summary["recordsErased"] == 2
    assert [e["id"] for e in report.data["erasures"]] == [done["id"]]

    # erasing again is a no-op: nothing left to erase
    again = await _erased(client, org, {"recordIds": target})
    assert again["status"] == "DONE" and again["recordCount"] == 0


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("trace", 3),
        ("agent", 6),
        ("tenant", 6),
        ("search", 1),
        ("trace and search", 1),
    ],
)
async def test_each_selector_erases_exactly_its_records(client, runtime, org, selector, expected):
    rows = await _rows(runtime, org.org_id)
    agent_id = rows[org.ids[300]]["agent_id"]
    filters = {
        "trace": {"traceId": "trace-a"},
        "agent": {"agentId": [agent_id]},
        "tenant": {"tenantId": ["tenant-x"]},
        "search": {"search": '"response 2 zebracorn"'},
        "trace and search": {"traceId": "trace-a", "search": '"prompt 1 of"'},
    }
    done = await _erased(client, org, filters[selector])
    assert done["status"] == "DONE" and done["recordCount"] == expected
    after = await _rows(runtime, org.org_id)
    erased = {i for i, r in after.items() if r["erasure_id"] == done["id"]}
    assert len(erased) == expected
    for record_id, row in after.items():
        if record_id in erased:
            assert row["prompt"] is None and row["metadata"] is None
        else:
            assert row["prompt"] is not None and row["erasure_id"] is None
    if selector == "agent":
        assert all(after[i]["agent_id"] == agent_id for i in erased)
    if selector == "tenant":
        assert all(after[i]["tenant_id"] == "tenant-x" for i in erased)
    verified = await _verify(client, org)
    assert verified["ok"] is True and verified["recordsErased"] == expected, verified
    assert (await _offline(client, runtime, org.key)).ok


async def test_redaction_leaves_nothing_searchable(client, runtime, org):
    found = await gql(client, "AuditLogs", {"filter": {"search": "zebracorn"}, "first": 500}, token=org.token)
    assert len(found["data"]["auditLogs"]["edges"]) == 306
    done = await _erased(client, org, {"search": "zebracorn"})
    assert done["recordCount"] == 306 and done["status"] == "DONE"
    for term in ("zebracorn", "jane", "Roe", SSN):
        found = await gql(client, "AuditLogs", {"filter": {"search": term}}, token=org.token)
        assert found["data"]["auditLogs"]["edges"] == [], term
    # the sweeper and the indexing job do not index erased records again
    async with runtime.db.engine.begin() as conn:
        await conn.execute(sa.text("DELETE FROM audit_search_progress WHERE org_id = :o"), {"o": org.org_id})
    await search.sweep(runtime.db, lag_seconds=0)
    assert await search.index_records(runtime.db, org.org_id, org.ids) == 0
    assert await _search_rows(runtime, org.ids) == 0
    # nothing of the content is left in records, search rows or alerts
    async with runtime.db.engine.connect() as conn:
        stored = (
            await conn.execute(
                sa.text(
                    "SELECT coalesce(string_agg(t, ' '), '') FROM (SELECT a::text AS t FROM audit_logs a"
                    " WHERE org_id = :o UNION ALL SELECT x::text FROM alerts x WHERE org_id = :o"
                    " UNION ALL SELECT s::text FROM audit_search s WHERE org_id = :o) q"
                ),
                {"o": org.org_id},
            )
        ).scalar_one()
    for text in ("zebracorn", "Jane Roe", "jane@example.org", SSN, "***-**-6789", '"customer"'):
        assert text not in stored, text


async def test_a_large_erasure_runs_in_batches_in_a_job(client, runtime, org, monkeypatch):
    monkeypatch.setattr(erasure, "INLINE_LIMIT", 40)
    monkeypatch.setattr(erasure, "BATCH_SIZE", 70)
    started = await _erased(client, org, {"search": "zebracorn"})
    assert started["status"] == "RUNNING" and started["recordCount"] == 40
    # ingest goes on meanwhile; records written after the request are not part of it
    late = await _log(client, org, [_record(1000)])
    await search.sweep(runtime.db, lag_seconds=0)
    await asyncio.wait_for(run_worker(runtime, burst=True), 120)
    done = (await gql(client, "AuditErasure", {"id": started["id"]}, token=org.token))["data"]["auditErasure"]
    assert done["status"] == "DONE" and done["recordCount"] == 306 and done["completedAt"]
    rows = await _rows(runtime, org.org_id)
    assert rows[late[0]]["prompt"] is not None
    assert sum(1 for r in rows.values() if r["erasure_id"] == started["id"]) == 306
    verified = await _verify(client, org)
    assert verified["ok"] is True and verified["recordsErased"] == 306, verified
    # the sweeper finds nothing left to queue
    assert await erasure.sweep(runtime) == 0


async def test_exports_say_erased(client, runtime, org):
    done = await _erased(client, org, {"recordIds": [org.ids[0]]})
    headers = {"X-API-Key": org.key}
    body = (await client.get("/api/v1/audit-logs/export", params={"format": "json"}, headers=headers)).json()
    by_id = {r["id"]: r for r in body["records"]}
    assert by_id[org.ids[0]]["erasureId"] == done["id"] and by_id[org.ids[0]]["erasedAt"].endswith("Z")
    assert by_id[org.ids[0]]["prompt"] is None and by_id[org.ids[0]]["metadata"] is None
    assert by_id[org.ids[1]]["erasedAt"] is None and by_id[org.ids[1]]["metadata"]["i"] == 1
    text = (await client.get("/api/v1/audit-logs/export", params={"format": "csv"}, headers=headers)).text
    lines = [line for line in text.splitlines() if line.startswith(org.ids[0])]
    assert lines and lines[0].endswith(done["id"])
    from export_support import export_job, fetch_link, start_export

    for fmt in ("NDJSON", "PARQUET"):
        job = await start_export(client, org, dataset="AUDIT_LOGS", format=fmt)
        await asyncio.wait_for(run_worker(runtime, burst=True), 120)
        ready = await export_job(client, org, job["id"])
        content = (await fetch_link(client, ready["downloadUrl"])).content
        if fmt == "NDJSON":
            records = {r["id"]: r for r in map(json.loads, content.splitlines())}
        else:
            records = {r["id"]: r for r in pq.read_table(io.BytesIO(content)).to_pylist()}
        assert records[org.ids[0]]["erasureId"] == done["id"] and records[org.ids[0]]["erasedAt"] is not None
        assert records[org.ids[1]]["erasedAt"] is None


async def test_only_owners_erase_and_bad_input_leaves_nothing(client, runtime, settings, org):
    _, admin_token = await add_user(runtime, settings, org, "admin")
    for token, api_key in ((admin_token, None), (None, org.key)):
        result = await gql(
            client, "EraseRecords", {"filter": {"recordIds": [org.ids[0]]}, "reason": "x"}, token=token, api_key=api_key
        )
        assert error_code(result) == "FORBIDDEN", result
    for filter_, reason in (({}, "why"), ({"recordIds": []}, "why"), ({"search": "  "}, "why"),
                            ({"recordIds": [org.ids[0]]}, "  "), ({"recordIds": [org.ids[0]]}, "x" * 2001),
                            ({"search": "a " * 40}, "why")):  # fmt: skip
        result = await _erase(client, org, filter_, reason)
        assert error_code(result) == "BAD_USER_INPUT", (filter_, result)
    async with runtime.db.engine.connect() as conn:
        erasures = (await conn.execute(sa.text("SELECT count(*) FROM audit_erasures"))).scalar_one()
        events = (
            await conn.execute(sa.text("SELECT count(*) FROM activity_events WHERE action LIKE 'audit.%erase%'"))
        ).scalar_one()
    assert erasures == 0 and events == 0
    assert all(r["erasure_id"] is None for r in (await _rows(runtime, org.org_id)).values())


async def test_another_organisations_records_are_invisible_and_unaffected(client, runtime, org):
    other = await register(client, org="Other")
    theirs = await _log(client, other, [_record(i, traceId="trace-a", tenantId="tenant-x") for i in range(3)])
    done = await _erased(client, org, {"recordIds": theirs})
    assert done["recordCount"] == 0
    done = await _erased(client, org, {"traceId": "trace-a"})
    assert done["recordCount"] == 3
    mine = await _erased(client, other, {"tenantId": ["tenant-x"]})
    assert mine["recordCount"] == 3
    assert all(r["erasure_id"] == mine["id"] for r in (await _rows(runtime, other.org_id)).values())
    mine_rows = await _rows(runtime, org.org_id)
    assert sum(1 for r in mine_rows.values() if r["erasure_id"]) == 3  # trace-a
    # neither sees the other's erasures
    listed = (await gql(client, "AuditErasures", {}, token=other.token))["data"]["auditErasures"]["edges"]
    assert [e["node"]["id"] for e in listed] == [mine["id"]]
    assert (await gql(client, "AuditErasure", {"id": done["id"]}, token=other.token))["data"]["auditErasure"] is None
    assert (await _verify(client, other))["ok"] is True and (await _verify(client, org))["ok"] is True


async def test_the_trigger_allows_exactly_the_erasure_and_nothing_more(client, runtime, org):
    done = await _erased(client, org, {"recordIds": [org.ids[0]]})
    record = org.ids[1]

    async def attempt(*statements: str, erasure_id: str | None = None) -> bool:
        try:
            async with runtime.db.engine.begin() as conn:
                if erasure_id is not None:
                    await conn.execute(
                        sa.text("SELECT set_config('agentrail.erasure_id', :e, true)"), {"e": erasure_id}
                    )
                for sql in statements:
                    await conn.execute(sa.text(sql), {"id": record})
        except sa.exc.IntegrityError as exc:
            assert "immutable" in str(exc)
            return False
        return True

    erase = (
        "UPDATE audit_logs SET prompt = NULL, response = NULL, metadata = NULL, args = NULL, result = NULL,"
        " erased_at = now(), erasure_id = '{e}'{extra} WHERE id = :id"
    )
    # without the path: refused
    assert not await attempt("UPDATE audit_logs SET prompt = 'edited' WHERE id = :id")
    assert not await attempt(erase.format(e=done["id"], extra=""))
    assert not await attempt("DELETE FROM audit_logs WHERE id = :id")
    # naming an erasure that is not running (done), or another id than the one named: refused
    assert not await attempt(erase.format(e=done["id"], extra=""), erasure_id=done["id"])
    async with runtime.db.engine.begin() as conn:
        await conn.execute(sa.text("UPDATE audit_erasures SET status = 'running' WHERE id = :e"), {"e": done["id"]})
    assert not await attempt(erase.format(e="ers_other", extra=""), erasure_id=done["id"])
    # the path, but more than the content: refused (another column, content left, erasing an erased record)
    assert not await attempt(erase.format(e=done["id"], extra=", action = 'x'"), erasure_id=done["id"])
    assert not await attempt(
        erase.format(e=done["id"], extra="").replace("response = NULL", "response = 'kept'"), erasure_id=done["id"]
    )
    assert not await attempt(
        "UPDATE audit_logs SET prompt = NULL, erased_at = now(), erasure_id = '{e}' WHERE id = :id".format(
            e=done["id"]
        ),
        erasure_id=done["id"],
    )
    record = org.ids[0]
    assert not await attempt(erase.format(e=done["id"], extra=""), erasure_id=done["id"])
    record = org.ids[1]
    # exactly the erasure, on the path: allowed
    assert await attempt(erase.format(e=done["id"], extra=""), erasure_id=done["id"])


async def _superuser(runtime, sql: str, params: dict) -> None:
    async with runtime.db.engine.begin() as conn:
        await conn.execute(sa.text("ALTER TABLE audit_logs DISABLE TRIGGER USER"))
        await conn.execute(sa.text(sql), params)
        await conn.execute(sa.text("ALTER TABLE audit_logs ENABLE TRIGGER USER"))


async def test_content_removed_outside_an_erasure_is_detected(client, runtime, org):
    done = await _erased(client, org, {"recordIds": [org.ids[0]]})
    null_content = "prompt = NULL, response = NULL, metadata = NULL, args = NULL, result = NULL"
    # content removed, no erasure claimed: the content no longer matches its hash
    await _superuser(runtime, f"UPDATE audit_logs SET {null_content} WHERE id = :id", {"id": org.ids[10]})
    verified = await _verify(client, org)
    assert verified["ok"] is False and verified["firstBrokenRecordId"] == org.ids[10]
    offline = await _offline(client, runtime, org.key)
    assert not offline.ok and offline.breaks[0]["recordId"] == org.ids[10]
    # ... claiming an erasure that was never recorded
    async with runtime.db.engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO audit_erasures (id, org_id, reason, filter, status, record_count, through_seq,"
                " requested_at) VALUES ('ers_forged', :o, 'x', '{}', 'done', 1, 0, now())"
            ),
            {"o": org.org_id},
        )
    await _superuser(
        runtime,
        "UPDATE audit_logs SET erased_at = now(), erasure_id = 'ers_forged' WHERE id = :id",
        {"id": org.ids[10]},
    )
    verified = await _verify(client, org)
    assert verified["ok"] is False and verified["firstBrokenRecordId"] == org.ids[10]
    assert "outside any recorded erasure" in verified["reason"]
    # ... claiming the real erasure: its signed count on the activity trail no longer matches
    await _superuser(
        runtime, "UPDATE audit_logs SET erasure_id = :e WHERE id = :id", {"id": org.ids[10], "e": done["id"]}
    )
    async with runtime.db.engine.begin() as conn:
        await conn.execute(sa.text("DELETE FROM audit_erasures WHERE id = 'ers_forged'"))
    verified = await _verify(client, org)
    assert verified["ok"] is False and f"erasure {done['id']} recorded 1" in verified["reason"], verified
    # offline, without the activity trail, the record looks erased: its header and link still hold (README)
    offline = await _offline(client, runtime, org.key)
    assert offline.ok and offline.erased == 2
    # content put back into an erased record: caught
    await _superuser(
        runtime, "UPDATE audit_logs SET erasure_id = NULL, erased_at = NULL WHERE id = :id", {"id": org.ids[10]}
    )
    await _superuser(runtime, "UPDATE audit_logs SET prompt = 'forged' WHERE id = :id", {"id": org.ids[0]})
    verified = await _verify(client, org)
    assert verified["ok"] is False and verified["firstBrokenRecordId"] == org.ids[0]
    assert "still holds content" in verified["reason"]


async def test_retention_after_an_erasure_keeps_the_trail_verifiable(client, runtime):
    account = await register(client)
    old = await _log(client, account, [_record(i, tenantId="subject") for i in range(4)])
    await asyncio.sleep(0.05)
    middle = datetime.now(UTC)
    await asyncio.sleep(0.05)
    new = await _log(client, account, [_record(10 + i, tenantId="subject") for i in range(3)])
    await sealing.seal_all(runtime.db, runtime.signer)
    done = await _erased(client, account, {"tenantId": ["subject"]})  # spans both generations
    assert done["recordCount"] == 7
    outcome = await retention.expire_organization(
        runtime.db, account.org_id, runtime.settings, runtime.signer, middle + timedelta(days=7)
    )
    assert outcome.removed == len(old)
    verified = await _verify(client, account)
    assert verified["ok"] is True and verified["recordsErased"] == len(new), verified
    # an erased record still there, its erasure id moved to another record: caught even after retention
    other = await _log(client, account, [_record(99)])
    await _superuser(
        runtime,
        "UPDATE audit_logs SET prompt = NULL, response = NULL, metadata = NULL, args = NULL, result = NULL,"
        " erased_at = now(), erasure_id = :e WHERE id = :id",
        {"id": other[0], "e": done["id"]},
    )
    verified = await _verify(client, account)
    assert verified["ok"] is False and f"erasure {done['id']}" in verified["reason"], verified
