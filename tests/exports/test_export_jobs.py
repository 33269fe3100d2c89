"""Export jobs under stress: workers dying, sweeping, cancelling, bad input, other tenants, expiry, live updates."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import timedelta

import pytest
import sqlalchemy as sa
from export_support import (
    count_rows,
    export_job,
    fetch_link,
    job_row,
    run_jobs,
    seed_audit,
    start_export,
    stored_files,
    wait_for,
)

from app.db import utcnow
from app.exports import service
from app.exports.models import ExportJob
from app.runtime.signed_links import sign_path
from support import GraphQLWebSocket, create_api_key, gql, register
from workers.exports import sweep_export_jobs
from workers.settings import run_worker


@pytest.fixture
def small_batches(runtime):
    """Small batches and a heartbeat after each, so that an export of a few thousand rows takes many visible
    steps."""
    settings = runtime.settings
    before = settings.export_batch_rows, settings.export_progress_interval_seconds
    settings.export_batch_rows, settings.export_progress_interval_seconds = 50, 0.0
    yield
    settings.export_batch_rows, settings.export_progress_interval_seconds = before


async def _csv_ids(response) -> list[str]:
    return [r[0] for r in list(csv.reader(io.StringIO(response.text)))[1:]]


async def test_a_worker_killed_mid_export_is_restarted_and_the_job_completes_once(client, runtime, small_batches):
    account = await register(client)
    await seed_audit(runtime, account.org_id, 20_000)
    job = await start_export(client, account, dataset="AUDIT_LOGS", format="CSV")
    worker = asyncio.create_task(run_worker(runtime))

    async def half_way() -> bool:
        return (await job_row(runtime, job["id"])).row_count >= 2_000

    await wait_for(half_way)
    worker.cancel()  # the worker dies mid-export
    with pytest.raises(asyncio.CancelledError):
        await worker
    row = await job_row(runtime, job["id"])
    assert row.status == "PENDING" and row.attempts == 1 and row.row_count < 20_000  # handed back at once
    assert await stored_files(runtime, account.org_id) == []  # the partial file is gone
    await run_jobs(runtime)  # a new worker: arq runs the cancelled job again
    row = await job_row(runtime, job["id"])
    assert row.status == "READY" and row.attempts == 2 and row.row_count == 20_000
    files = await stored_files(runtime, account.org_id)
    assert [f.id for f in files] == [row.file_id] and files[0].complete
    done = await export_job(client, account, job["id"])
    ids = await _csv_ids(await fetch_link(client, done["downloadUrl"]))
    assert len(ids) == len(set(ids)) == 20_000  # rewritten from the start: every row once
    await run_jobs(runtime)  # nothing runs it again
    assert (await job_row(runtime, job["id"])).completed_at == row.completed_at


async def test_a_silent_running_job_is_swept_claimed_by_one_worker_and_completes_once(client, runtime):
    account = await register(client)
    await seed_audit(runtime, account.org_id, 500)
    job = await start_export(client, account, dataset="AUDIT_LOGS", format="NDJSON")
    await runtime.redis.flushdb()  # the queue is lost: only the row remembers the job
    # a worker claimed it, then died without a word (killed: no hand-back)
    dead = await service.claim(runtime, account.org_id, job["id"])
    assert dead is not None
    assert await service.claim(runtime, account.org_id, job["id"]) is None  # alive: nobody else may take it
    assert await sweep_export_jobs({"runtime": runtime}) == 0  # a live job is not swept
    stale = utcnow() - timedelta(seconds=runtime.settings.export_heartbeat_timeout_seconds + 5)
    async with runtime.db.system_session() as session:
        await session.execute(
            sa.update(ExportJob).where(ExportJob.id == job["id"]).values(heartbeat_at=stale, enqueued_at=stale)
        )
        await session.commit()
    # two workers try to take over at the same moment: exactly one gets it
    claims = await asyncio.gather(*(service.claim(runtime, account.org_id, job["id"]) for _ in range(2)))
    winners = [c for c in claims if c is not None]
    assert len(winners) == 1
    # the dead attempt can neither report progress nor finish the job
    assert not await service.heartbeat(runtime.db, dead, row_count=1, total=500)
    assert not await service.mark_ready(runtime, dead, row_count=1, size_bytes=1, expires_at=utcnow())
    # the winner dies too; the sweeper re-queues the job and a real worker finishes it
    async with runtime.db.system_session() as session:
        await session.execute(
            sa.update(ExportJob).where(ExportJob.id == job["id"]).values(heartbeat_at=stale, enqueued_at=stale)
        )
        await session.commit()
    assert await sweep_export_jobs({"runtime": runtime}) == 1
    await run_jobs(runtime)
    row = await job_row(runtime, job["id"])
    assert row.status == "READY" and row.row_count == 500 and row.attempts == 3
    assert [f.id for f in await stored_files(runtime, account.org_id)] == [row.file_id]
    assert await sweep_export_jobs({"runtime": runtime}) == 0


async def test_a_job_that_keeps_dying_is_given_up(client, runtime):
    account = await register(client)
    job = await start_export(client, account, dataset="AUDIT_LOGS", format="CSV")
    stale = utcnow() - timedelta(hours=1)
    async with runtime.db.system_session() as session:
        await session.execute(
            sa.update(ExportJob)
            .where(ExportJob.id == job["id"])
            .values(
                status="RUNNING", attempts=runtime.settings.export_max_attempts, heartbeat_at=stale, enqueued_at=stale
            )
        )
        await session.commit()
    assert await sweep_export_jobs({"runtime": runtime}) == 1
    done = await export_job(client, account, job["id"])
    assert done["status"] == "FAILED" and "gave up" in done["error"]


async def test_cancel_stops_a_running_export_and_deletes_its_file(client, runtime, small_batches):
    account = await register(client)
    await seed_audit(runtime, account.org_id, 20_000)
    job = await start_export(client, account, dataset="AUDIT_LOGS", format="CSV")
    worker = asyncio.create_task(run_worker(runtime))
    try:

        async def running() -> bool:
            return (await job_row(runtime, job["id"])).row_count >= 500

        await wait_for(running)
        assert await stored_files(runtime, account.org_id)  # a partial file exists
        cancelled = await gql(client, "CancelExport", {"id": job["id"]}, token=account.token)
        assert cancelled["data"]["cancelExport"]["status"] == "CANCELLED"

        async def stopped() -> bool:
            return not await stored_files(runtime, account.org_id)

        await wait_for(stopped, timeout=5)
        rows_at_stop = (await job_row(runtime, job["id"])).row_count
        await asyncio.sleep(0.5)
        row = await job_row(runtime, job["id"])
        assert row.status == "CANCELLED" and row.row_count == rows_at_stop < 20_000
        assert await stored_files(runtime, account.org_id) == []
    finally:
        worker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await worker
    again = await gql(client, "CancelExport", {"id": job["id"]}, token=account.token)
    assert again["errors"][0]["extensions"]["code"] == "CONFLICT"
    # a PENDING job cancelled before any worker saw it never runs
    pending = await start_export(client, account, dataset="AUDIT_LOGS", format="JSON")
    assert (await gql(client, "CancelExport", {"id": pending["id"]}, token=account.token))["data"]
    await run_jobs(runtime)
    row = await job_row(runtime, pending["id"])
    assert row.status == "CANCELLED" and row.attempts == 0 and await stored_files(runtime, account.org_id) == []
    trail = await count_rows(runtime, "activity_events", "action = 'export.cancelled'")
    assert trail == 2


@pytest.mark.parametrize(
    ("input", "code"),
    [
        ({"dataset": "AUDIT_LOGS", "format": "XLSX"}, None),
        ({"dataset": "EVERYTHING", "format": "CSV"}, None),
        ({"dataset": "AUDIT_LOGS", "format": "CSV", "activityFilter": {"action": ["agent.*"]}}, "BAD_USER_INPUT"),
        ({"dataset": "ACTIVITY", "format": "CSV", "auditLogFilter": {"action": ["x"]}}, "BAD_USER_INPUT"),
        ({"dataset": "AUDIT_LOGS", "format": "CSV", "auditLogFilter": {"from": "yesterday"}}, None),
        (
            {
                "dataset": "AUDIT_LOGS",
                "format": "CSV",
                "auditLogFilter": {"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
            },
            "BAD_USER_INPUT",
        ),
        ({"dataset": "ACTIVITY", "format": "CSV", "activityFilter": {"to": "2026-13-01T00:00:00Z"}}, None),
    ],
)
async def test_bad_inputs_are_rejected_and_nothing_is_written(client, runtime, input, code):
    account = await register(client)
    result = await gql(client, "StartExport", {"input": input}, token=account.token)
    assert result.get("errors"), result
    if code:
        assert result["errors"][0]["extensions"]["code"] == code
    assert await count_rows(runtime, "export_jobs") == 0
    assert await count_rows(runtime, "activity_events", "action = 'export.started'") == 0
    assert [j for j in await runtime.queue.queued_jobs() if j.function != "send_emails"] == []  # sign-up mail aside


async def test_other_organisations_get_nothing(client, runtime):
    alice = await register(client, org="Alice")
    mallory = await register(client, org="Mallory")
    await seed_audit(runtime, alice.org_id, 10)
    job = await start_export(client, alice, dataset="AUDIT_LOGS", format="CSV")
    other = await start_export(client, alice, dataset="AUDIT_LOGS", format="JSON")
    own = {fmt: await start_export(client, mallory, dataset="AUDIT_LOGS", format=fmt) for fmt in ("CSV", "PARQUET")}
    await run_jobs(runtime)
    for fmt, theirs in own.items():  # Mallory's own exports hold none of Alice's records
        mine = await export_job(client, mallory, theirs["id"])
        assert mine["status"] == "READY" and mine["rowCount"] == 0, fmt
    done = await export_job(client, alice, job["id"])
    assert await export_job(client, mallory, job["id"]) is None
    listed = await gql(client, "ExportJobs", {}, token=mallory.token)
    listed_ids = {e["node"]["id"] for e in listed["data"]["exportJobs"]["edges"]}
    assert listed_ids == {j["id"] for j in own.values()}  # only Mallory's own
    mallory_key, _ = await create_api_key(client, mallory)
    for headers in ({"Authorization": f"Bearer {mallory.token}"}, {"X-API-Key": mallory_key}):
        assert (await client.get(f"/api/v1/exports/{job['id']}/download", headers=headers)).status_code == 404
        assert (await client.get(f"/api/v1/exports/{job['id']}", headers=headers)).status_code == 404
    cancel = await gql(client, "CancelExport", {"id": job["id"]}, token=mallory.token)
    assert cancel["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert (await client.get(f"/api/v1/exports/{job['id']}/download")).status_code == 401
    # signed links: only for the file, organisation and time they were made for
    path = f"/api/v1/exports/{job['id']}/download"
    assert (await fetch_link(client, done["downloadUrl"])).status_code == 200
    other_link = (await export_job(client, alice, other["id"]))["downloadUrl"]
    forged = other_link.replace(other["id"], job["id"])
    assert (await fetch_link(client, forged)).status_code == 403  # a link for another file
    expired = sign_path(runtime.secret_key, path, alice.org_id, utcnow() - timedelta(seconds=1))
    assert (await client.get(expired)).status_code == 403
    # a valid link signed for Mallory's organisation finds nothing of Alice's
    theirs = sign_path(runtime.secret_key, path, mallory.org_id, utcnow() + timedelta(minutes=5))
    assert (await client.get(theirs)).status_code == 404


async def test_ready_exports_expire(client, runtime):
    account = await register(client)
    job = await start_export(client, account, dataset="AUDIT_LOGS", format="CSV")
    await run_jobs(runtime)
    row = await job_row(runtime, job["id"])
    retention = timedelta(hours=runtime.settings.export_retention_hours)
    assert row.status == "READY" and abs(row.expires_at - (row.started_at + retention)) < timedelta(seconds=5)
    assert await service.expire(runtime, now=row.expires_at - timedelta(seconds=1)) == 0
    assert await service.expire(runtime, now=row.expires_at) == 1
    done = await export_job(client, account, job["id"])
    assert done["status"] == "EXPIRED" and done["downloadUrl"] is None
    headers = {"Authorization": f"Bearer {account.token}"}
    assert (await client.get(f"/api/v1/exports/{job['id']}/download", headers=headers)).status_code == 404
    assert await runtime.files.delete_expired(row.expires_at) == 1  # the existing cron removes the file
    assert await stored_files(runtime, account.org_id) == []


async def test_export_jobs_page_and_filter_by_status(client, runtime):
    account = await register(client)
    ids = [(await start_export(client, account, dataset="AUDIT_LOGS", format="CSV"))["id"] for _ in range(3)]
    await gql(client, "CancelExport", {"id": ids[0]}, token=account.token)
    first = await gql(client, "ExportJobs", {"first": 2}, token=account.token)
    page = first["data"]["exportJobs"]
    assert [e["node"]["id"] for e in page["edges"]] == [ids[2], ids[1]] and page["pageInfo"]["hasNextPage"]
    rest = await gql(client, "ExportJobs", {"first": 2, "after": page["pageInfo"]["endCursor"]}, token=account.token)
    assert [e["node"]["id"] for e in rest["data"]["exportJobs"]["edges"]] == [ids[0]]
    cancelled = await gql(client, "ExportJobs", {"filter": {"status": ["CANCELLED"]}}, token=account.token)
    assert [e["node"]["id"] for e in cancelled["data"]["exportJobs"]["edges"]] == [ids[0]]
    bad = await gql(client, "ExportJobs", {"first": 501}, token=account.token)
    assert bad["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    unauthenticated = await gql(client, "ExportJobs", {})
    assert unauthenticated["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    event = await gql(client, "Activity", {"filter": {"action": ["export.*"]}}, token=account.token)
    actions = [e["node"]["action"] for e in event["data"]["activity"]["edges"]]
    assert sorted(actions) == ["export.cancelled", "export.started", "export.started", "export.started"]


async def test_job_updates_arrive_over_a_websocket_until_ready(client, live_server, runtime):
    account = await register(client)
    await seed_audit(runtime, account.org_id, 100)
    ws = await GraphQLWebSocket.connect(live_server, {"authorization": f"Bearer {account.token}"})
    try:
        assert (await ws.receive())["type"] == "connection_ack"
        await ws.subscribe("JobUpdates", {})
        await asyncio.sleep(0.2)
        job = await start_export(client, account, dataset="AUDIT_LOGS", format="PARQUET")
        await run_jobs(runtime)
        seen = []
        while not seen or seen[-1]["status"] != "READY":
            message = await ws.receive()
            assert message["type"] == "next", message
            seen.append(message["payload"]["data"]["jobUpdates"])
        assert {u["jobId"] for u in seen} == {job["id"]} and seen[0]["status"] == "RUNNING"
        ready = seen[-1]
        assert ready["kind"] == "EXPORT" and ready["rowCount"] == 100 and ready["progress"] == 1.0
        response = await fetch_link(client, ready["downloadUrl"])
        assert response.status_code == 200 and response.content[:4] == b"PAR1"
    finally:
        await ws.close()
