"""Retention with a clock the test controls (`now` handed to the run): records past the organisation's
retention go with their search rows, alerts and trace summaries, under a signed retention cut that verification
reads as retention; records removed any other way read as tampering, named."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from agentrail_verify import verify_lines

from app.audit import retention, sealing, search
from app.integrity import root_from_inclusion
from support import add_user, error_code, gql, register


async def _log(client, account, records: list[dict]) -> list[str]:
    body = await gql(client, "LogEvents", {"input": records}, token=account.token)
    assert "errors" not in body, body
    return [r["id"] for r in body["data"]["logEvents"]]


async def _seal(runtime) -> None:
    await sealing.seal_all(runtime.db, runtime.signer)


async def _scalar(runtime, statement: str, **params):
    async with runtime.db.engine.connect() as conn:
        return (await conn.execute(sa.text(statement), params)).scalar()


async def _verify(client, account) -> dict:
    body = await gql(client, "VerifyAuditTrail", {}, token=account.token)
    assert "errors" not in body, body
    return body["data"]["verifyAuditTrail"]


async def _offline(client, runtime, account):
    """The proof bundle, checked by the offline verifier (sdk/verify) with the signing key's public half."""
    response = await client.get(
        "/api/v1/audit-logs/export?includeProofs=true", headers={"Authorization": f"Bearer {account.token}"}
    )
    assert response.status_code == 200, response.text
    return verify_lines(response.content.splitlines(), runtime.signer.public_key).as_json()


async def _two_generations(client, runtime, account) -> tuple[list[str], list[str], datetime]:
    """Records received before and after a moment `middle`; the first ones match a PII rule (alerts)."""
    old = await _log(
        client,
        account,
        [{"action": "a", "prompt": f"mail me at old{i}@example.com", "traceId": "trace-old"} for i in range(5)]
        + [{"action": "a", "prompt": "shared trace, old span", "traceId": "trace-shared"}],
    )
    await asyncio.sleep(0.05)
    middle = datetime.now(UTC)
    await asyncio.sleep(0.05)
    new = await _log(client, account, [{"action": "b", "prompt": "new", "traceId": "trace-shared"} for _ in range(3)])
    await search.index_records(runtime.db, account.org_id, old + new)
    await _seal(runtime)
    return old, new, middle


async def test_retention_removes_what_expired_and_verification_reads_it_as_retention(client, runtime):
    account = await register(client)
    # a PII rule, so that the old records have alerts
    rule = {"name": "Email", "kind": "PII", "config": {"types": ["email"]}}
    assert "errors" not in await gql(client, "CreateComplianceRule", {"input": rule}, token=account.token)
    old, new, middle = await _two_generations(client, runtime, account)
    alerts_before = await _scalar(runtime, "SELECT count(*) FROM alerts WHERE audit_log_id = ANY(:ids)", ids=old)
    searched_before = await _scalar(runtime, "SELECT count(*) FROM audit_search WHERE log_id = ANY(:ids)", ids=old)
    assert searched_before == 6

    # an export made before `middle` holds only old records; one made after it may hold new ones
    async with runtime.db.engine.begin() as conn:
        for name, at in (("file_old", middle - timedelta(milliseconds=20)), ("file_new", datetime.now(UTC))):
            await conn.execute(
                sa.text(
                    "INSERT INTO stored_files (id, org_id, filename, content_type, size_bytes, chunk_count, complete,"
                    " created_at, storage) VALUES (:id, :o, 'x.csv', 'text/csv', 0, 0, true, :at, 'postgres')"
                ),
                {"id": name, "o": account.org_id, "at": at},
            )

    # free plan: 7 days. The run's clock is 7 days after `middle`: the first six records are past it
    outcome = await retention.expire_organization(
        runtime.db, account.org_id, runtime.settings, runtime.signer, middle + timedelta(days=7)
    )
    assert (outcome.retention_days, outcome.expired, outcome.removed, outcome.files_expired) == (7, 6, 6, 1)
    assert await runtime.files.delete_expired() == 1
    assert await _scalar(runtime, "SELECT string_agg(id, ',') FROM stored_files") == "file_new"
    assert await _scalar(runtime, "SELECT count(*) FROM audit_logs WHERE org_id = :o", o=account.org_id) == 3
    assert await _scalar(runtime, "SELECT count(*) FROM audit_search WHERE log_id = ANY(:ids)", ids=old) == 0
    assert await _scalar(runtime, "SELECT count(*) FROM alerts WHERE audit_log_id = ANY(:ids)", ids=old) == 0
    assert alerts_before == 5
    assert await _scalar(runtime, "SELECT count(*) FROM audit_traces WHERE trace_id = 'trace-old'") == 0
    assert await _scalar(runtime, "SELECT span_count FROM audit_traces WHERE trace_id = 'trace-shared'") == 3

    cut = await _scalar(
        runtime, "SELECT row_to_json(c)::text FROM audit_retention_cuts c WHERE org_id = :o", o=account.org_id
    )
    assert '"from_index":1' in cut and '"through_index":6' in cut and '"record_count":6' in cut
    verified = await _verify(client, account)
    assert verified["ok"] is True and verified["recordsChecked"] == 3, verified
    assert verified["expiredThroughIndex"] == 6
    offline = await _offline(client, runtime, account)
    assert offline["ok"] is True and offline["recordsChecked"] == 3 and offline["expiredThroughIndex"] == 6, offline
    # a kept record is still proved included in the signed tree (the expired leaves come from the cut)
    answer = await gql(client, "AuditProof", {"recordId": new[0]}, token=account.token)
    assert "errors" not in answer, answer
    proof = answer["data"]["auditProof"]
    root = root_from_inclusion(
        proof["leafIndex"],
        proof["treeSize"],
        bytes.fromhex(proof["entryHash"]),
        [bytes.fromhex(h) for h in proof["auditPath"]],
    )
    assert root.hex() == proof["digest"]["payload"]["merkle_root"] and proof["chainIndex"] == 7
    body = await gql(client, "AuditRetention", {}, token=account.token)
    view = body["data"]["auditRetention"]
    assert view["retentionDays"] == 7 and view["planRetentionDays"] == 7 and view["overrideDays"] is None
    assert view["oldestRecordAt"] is not None and view["oldestRecordAt"] > middle.isoformat()[:19]
    billing = await gql(client, "Billing", {}, token=account.token)
    assert billing["data"]["billing"]["retention"]["retentionDays"] == 7

    # the run is on the activity trail; ingest continues the chain after the cut; a second run removes nothing
    async with runtime.db.engine.connect() as conn:
        actions = (
            (
                await conn.execute(
                    sa.text("SELECT action FROM activity_events WHERE org_id = :o AND action LIKE 'audit.%'"),
                    {"o": account.org_id},
                )
            )
            .scalars()
            .all()
        )
    assert "audit.records_expired" in actions
    await _log(client, account, [{"action": "c"}])
    assert await _scalar(runtime, "SELECT max(chain_index) FROM audit_logs WHERE org_id = :o", o=account.org_id) == 10
    await _seal(runtime)
    again = await retention.expire_organization(
        runtime.db, account.org_id, runtime.settings, runtime.signer, middle + timedelta(days=7)
    )
    assert (again.expired, again.removed) == (0, 0)
    verified = await _verify(client, account)
    assert verified["ok"] is True and verified["recordsChecked"] == 4, verified

    # everything expires (an organisation that stopped writing): the chain head lives on in the cut
    later = datetime.now(UTC) + timedelta(days=8)
    gone = await retention.expire_organization(runtime.db, account.org_id, runtime.settings, runtime.signer, later)
    assert gone.removed == 4
    assert await _scalar(runtime, "SELECT count(*) FROM audit_logs WHERE org_id = :o", o=account.org_id) == 0
    assert (await _verify(client, account))["ok"] is True
    await _log(client, account, [{"action": "d"}, {"action": "e"}])
    await _seal(runtime)  # sealing reads the leaves of the expired part of its block from the cut
    verified = await _verify(client, account)
    assert verified["ok"] is True and verified["recordsChecked"] == 2, verified
    offline = await _offline(client, runtime, account)
    assert offline["ok"] is True and offline["recordsChecked"] == 2 and offline["expiredThroughIndex"] == 10


async def test_records_removed_without_retention_read_as_tampering(client, runtime):
    account = await register(client)
    old, _, _ = await _two_generations(client, runtime, account)
    # the trigger refuses a DELETE that no retention cut covers, even with the setting on
    async with runtime.db.engine.connect() as conn:
        try:
            async with conn.begin():
                await conn.execute(sa.text("SET LOCAL agentrail.retention = 'on'"))
                await conn.execute(sa.text("DELETE FROM audit_logs WHERE id = :id"), {"id": old[0]})
            raise AssertionError("the DELETE went through")
        except sa.exc.DBAPIError as error:
            assert "immutable" in str(error)
    # an attacker with database access removes the two oldest records behind the trigger's back
    async with runtime.db.engine.begin() as conn:
        await conn.execute(sa.text("ALTER TABLE audit_logs DISABLE TRIGGER audit_logs_immutable"))
        await conn.execute(sa.text("DELETE FROM audit_logs WHERE id = ANY(:ids)"), {"ids": old[:2]})
        await conn.execute(sa.text("ALTER TABLE audit_logs ENABLE TRIGGER audit_logs_immutable"))
    verified = await _verify(client, account)
    assert verified["ok"] is False and verified["firstBrokenRecordId"] == old[2], verified
    assert "records are missing before this one (chain index 1 to 2)" in verified["reason"]
    offline = await _offline(client, runtime, account)
    assert offline["ok"] is False and offline["breaks"][0]["recordId"] == old[2], offline


async def test_a_downgrade_gets_a_grace_period(client, runtime):
    account = await register(client)
    _, _, middle = await _two_generations(client, runtime, account)
    async with runtime.db.engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO billing_accounts (org_id, plan, cancel_at_period_end, payment_failed, created_at,"
                " updated_at) VALUES (:o, 'pro', false, false, now(), now())"
            ),
            {"o": account.org_id},
        )
    first = await retention.expire_organization(
        runtime.db, account.org_id, runtime.settings, runtime.signer, middle + timedelta(days=7)
    )
    assert (first.retention_days, first.removed) == (90, 0)
    async with runtime.db.engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE billing_accounts SET plan = 'free' WHERE org_id = :o"), {"o": account.org_id}
        )
    # the downgrade is seen: 90 days stay in force for the grace (14 days), then 7
    seen = middle + timedelta(days=8)
    during = await retention.expire_organization(runtime.db, account.org_id, runtime.settings, runtime.signer, seen)
    assert (during.retention_days, during.removed) == (90, 0)
    body = await gql(client, "AuditRetention", {}, token=account.token)
    view = body["data"]["auditRetention"]
    assert view["retentionDays"] == 90 and view["pendingRetentionDays"] == 7 and view["graceUntil"] is not None
    after = seen + timedelta(days=runtime.settings.retention_grace_days, seconds=1)
    done = await retention.expire_organization(runtime.db, account.org_id, runtime.settings, runtime.signer, after)
    assert (done.retention_days, done.removed) == (7, 9)
    assert (await _verify(client, account))["ok"] is True


async def test_the_retention_override_is_the_owners(client, runtime, settings):
    account = await register(client)
    body = await gql(client, "SetAuditRetention", {"retentionDays": 3}, token=account.token)
    assert "errors" not in body, body
    assert body["data"]["setAuditRetention"]["overrideDays"] == 3
    # a decrease from what a run applied waits for the grace; before any run, 3 days are in force at once
    assert body["data"]["setAuditRetention"]["retentionDays"] == 3
    for bad in (0, 8, -1):
        refused = await gql(client, "SetAuditRetention", {"retentionDays": bad}, token=account.token)
        assert error_code(refused) == "BAD_USER_INPUT", refused
    _, admin_token = await add_user(runtime, settings, account, "admin")
    forbidden = await gql(client, "SetAuditRetention", {"retentionDays": 5}, token=admin_token)
    assert error_code(forbidden) == "FORBIDDEN"
    cleared = await gql(client, "SetAuditRetention", {"retentionDays": None}, token=account.token)
    assert cleared["data"]["setAuditRetention"]["overrideDays"] is None
    assert cleared["data"]["setAuditRetention"]["retentionDays"] == 7
    async with runtime.db.engine.connect() as conn:
        changes = (
            await conn.execute(sa.text("SELECT count(*) FROM activity_events WHERE action = 'audit.retention_changed'"))
        ).scalar()
    assert changes == 2


async def test_the_daily_job_runs_in_a_real_worker(client, runtime):
    from workers.settings import run_worker

    account = await register(client)
    await _log(client, account, [{"action": "a"}])
    await runtime.queue.enqueue_job("expire_audit_records")
    await run_worker(runtime, burst=True)
    ran = await _scalar(runtime, "SELECT last_run_at FROM audit_retention_settings WHERE org_id = :o", o=account.org_id)
    assert ran is not None  # it saw the organisation (free plan: nothing is 7 days old yet)
    assert await _scalar(runtime, "SELECT count(*) FROM audit_logs WHERE org_id = :o", o=account.org_id) == 1


async def test_whole_months_that_cuts_cover_are_dropped_not_deleted(client, runtime):
    from app.audit import partitions

    account = await register(client)
    rule = {"name": "Email", "kind": "PII", "config": {"types": ["email"]}}
    assert "errors" not in await gql(client, "CreateComplianceRule", {"input": rule}, token=account.token)
    ids = await _log(client, account, [{"action": "a", "prompt": f"x{i}@example.com"} for i in range(4)])
    await search.index_records(runtime.db, account.org_id, ids)
    await _seal(runtime)
    this_month = partitions.Partition("audit_logs", partitions.month_of(datetime.now(UTC))).name
    try:
        # a clock 100 days on: this month is past and every record in it is past the 7 days
        report = await retention.run(
            runtime.db, runtime.settings, runtime.signer, datetime.now(UTC) + timedelta(days=100)
        )
        assert report["expired"] == 4 and report["removed"] == 0, report  # nothing deleted row by row
        assert report["recordsInDroppedPartitions"] == 4 and this_month in report["partitionsDropped"]
        assert await _scalar(runtime, "SELECT count(*) FROM alerts WHERE org_id = :o", o=account.org_id) == 0
        assert await _scalar(runtime, "SELECT count(*) FROM audit_traces WHERE org_id = :o", o=account.org_id) == 0
        verified = await _verify(client, account)
        assert verified["ok"] is True and verified["expiredThroughIndex"] == 4, verified
    finally:
        await partitions.ensure_ahead(runtime.db)
    assert this_month in await partitions.existing(runtime.db)
