"""Requesting, listing, deleting, downloading and building reports: rejections, tenancy, live updates,
failures, and the sweeper that picks up builds whose worker died."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from app.db import utcnow
from app.reports import service
from app.runtime.signed_links import sign_path
from reports.helpers import agent, build, count, download, local, read, ready, request, window
from support import GraphQLWebSocket, add_user, create_api_key, error_code, gql, register
from workers.reports import sweep_reports


async def test_bad_input_is_rejected_and_nothing_is_written(client, runtime):
    account = await register(client)
    stranger = await register(client, org="Elsewhere")
    foreign_agent = await agent(client, stranger, "theirs")
    mine = await agent(client, account, "mine")
    now = datetime.now(UTC)
    tomorrow, later = (now + timedelta(days=1)).isoformat(), (now + timedelta(days=2)).isoformat()
    rejections = [
        {**window(), "type": "AGENT_ACTIVITY", "from": now.isoformat(), "to": (now - timedelta(hours=1)).isoformat()},
        {"type": "AGENT_ACTIVITY", "from": now.isoformat(), "to": now.isoformat()},
        {"type": "AGENT_ACTIVITY", "from": (now - timedelta(days=400)).isoformat(), "to": now.isoformat()},
        {"type": "AGENT_ACTIVITY", "from": tomorrow, "to": later},
        {**window(), "type": "COMPLIANCE_SUMMARY", "format": "CSV"},
        {**window(), "type": "AUDIT_INTEGRITY", "format": "CSV"},
        {**window(), "type": "AUDIT_INTEGRITY", "agentIds": [mine]},
        {**window(), "type": "AGENT_ACTIVITY", "agentIds": []},
        {**window(), "type": "AGENT_ACTIVITY", "agentIds": [foreign_agent]},
        {**window(), "type": "AGENT_ACTIVITY", "agentIds": [mine, "agent_nope"]},
        {**window(), "type": "NOT_A_TYPE"},
        {**window(), "type": "AGENT_ACTIVITY", "format": "XLSX"},
        {**window(), "type": "AGENT_ACTIVITY", "from": "yesterday"},
    ]
    for input_ in rejections:
        result = await gql(client, "RequestReport", {"input": input_}, token=account.token)
        assert error_code(result) == "BAD_USER_INPUT", (input_, result)
    csv_for = await gql(
        client, "RequestReport", {"input": {**window(), "type": "COMPLIANCE_SUMMARY", "format": "CSV"}},
        token=account.token,
    )  # fmt: skip
    assert "AGENT_ACTIVITY" in csv_for["errors"][0]["message"] or "agent_activity" in csv_for["errors"][0]["message"]
    other_org = await gql(
        client, "RequestReport", {"input": {**window(), "type": "AGENT_ACTIVITY", "agentIds": [foreign_agent]}},
        token=account.token,
    )  # fmt: skip
    assert other_org["errors"][0]["extensions"]["agentIds"] == [foreign_agent]

    # API keys cannot ask for reports, nor read them
    secret, _ = await create_api_key(client, account)
    by_key = await gql(client, "RequestReport", {"input": {**window(), "type": "AGENT_ACTIVITY"}}, api_key=secret)
    assert error_code(by_key) == "FORBIDDEN"
    assert error_code(await gql(client, "Reports", {}, api_key=secret)) == "FORBIDDEN"
    assert error_code(await gql(client, "RequestReport", {"input": {**window(), "type": "AGENT_ACTIVITY"}})) == (
        "UNAUTHENTICATED"
    )

    assert await count(runtime, "reports") == 0 and await count(runtime, "stored_files") == 0
    assert await count(runtime, "activity_events", "action LIKE 'report.%'") == 0
    assert [j for j in await runtime.queue.queued_jobs() if j.function != "send_emails"] == []  # sign-up mail aside


async def test_request_list_read_and_activity(client, runtime):
    account = await register(client)
    first = await request(client, account, type="AGENT_ACTIVITY", format="CSV")
    assert first["id"].startswith("rep_") and first["status"] == "PENDING" and first["format"] == "CSV"
    assert first["requestedBy"] == account.user_id and first["downloadUrl"] is None and first["completedAt"] is None
    assert first["type"] == "AGENT_ACTIVITY" and first["agentIds"] is None and first["summary"] == {}
    second = await request(client, account, type="AUDIT_INTEGRITY")
    assert second["format"] == "PDF"  # the default
    third = await request(client, account, type="POLICY_CHANGES", format="JSON")

    page = (await gql(client, "Reports", {"first": 2}, token=account.token))["data"]["reports"]
    assert [e["node"]["id"] for e in page["edges"]] == [third["id"], second["id"]]
    assert page["pageInfo"]["hasNextPage"] is True
    rest = (await gql(client, "Reports", {"first": 2, "after": page["pageInfo"]["endCursor"]}, token=account.token))[
        "data"
    ]["reports"]
    assert [e["node"]["id"] for e in rest["edges"]] == [first["id"]] and rest["pageInfo"]["hasNextPage"] is False

    filtered = await gql(client, "Reports", {"filter": {"type": ["AUDIT_INTEGRITY"]}}, token=account.token)
    assert [e["node"]["id"] for e in filtered["data"]["reports"]["edges"]] == [second["id"]]

    await build(runtime)
    done = await gql(client, "Reports", {"filter": {"status": ["READY"]}}, token=account.token)
    assert len(done["data"]["reports"]["edges"]) == 3
    report = await read(client, account, first["id"])
    assert report["completedAt"] is not None and report["sizeBytes"] > 0 and report["expiresAt"] is not None
    # the link is signed at read time: a fresh one on every read
    await asyncio.sleep(1.1)
    again = await read(client, account, first["id"])
    assert again["downloadUrl"] != report["downloadUrl"]

    events = await gql(client, "Activity", {"filter": {"action": ["report.*"]}}, token=account.token)
    actions = [e["node"]["action"] for e in events["data"]["activity"]["edges"]]
    assert actions == ["report.requested"] * 3
    assert events["data"]["activity"]["edges"][0]["node"]["targetId"] == third["id"]


async def test_downloads_are_refused_to_other_organisations_and_after_expiry(client, runtime):
    alice = await register(client, org="Alice")
    mallory = await register(client, org="Mallory")
    report = await ready(client, runtime, alice, type="AGENT_ACTIVITY", format="JSON")
    path = service.download_path(report["id"])

    # the owner, with credentials
    own = await client.get(path, headers={"Authorization": f"Bearer {alice.token}"})
    assert own.status_code == 200 and own.headers["content-type"] == "application/json"
    # another organisation: the report does not exist for them
    assert await read(client, mallory, report["id"]) is None
    theirs = await client.get(path, headers={"Authorization": f"Bearer {mallory.token}"})
    assert theirs.status_code == 404 and theirs.json()["status"] == 404
    assert error_code(await gql(client, "DeleteReport", {"id": report["id"]}, token=mallory.token)) == "NOT_FOUND"
    # without credentials or a signature
    assert (await client.get(path)).status_code == 401
    # an API key of the same organisation: reports are for users, the file is not there for it either
    secret, _ = await create_api_key(client, alice)
    assert (await client.get(path, headers={"X-API-Key": secret})).status_code == 404
    # the signed link works without credentials; it is bound to its organisation and path
    assert (await download(client, report)).status_code == 200
    signed = local(report["downloadUrl"])
    assert (await client.get(signed.replace(alice.org_id, mallory.org_id))).status_code == 403
    other = await ready(client, runtime, mallory, type="AGENT_ACTIVITY", format="JSON")
    assert (await client.get(signed.replace(report["id"], other["id"]))).status_code == 403
    # a link signed for Mallory's organisation finds nothing of Alice's
    forged = sign_path(runtime.secret_key, path, mallory.org_id, utcnow() + timedelta(minutes=5))
    assert (await client.get(forged)).status_code == 404
    # an expired link is refused
    expired = sign_path(runtime.secret_key, path, alice.org_id, utcnow() - timedelta(seconds=1))
    refused = await client.get(expired)
    assert refused.status_code == 403 and "expired" in refused.json()["error"]

    # once the file's retention has passed, no link is given and the file is gone
    await runtime.files.delete_expired(utcnow() + timedelta(days=31))
    async with runtime.db.engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE reports SET expires_at = :t WHERE id = :id"),
            {"t": utcnow() - timedelta(seconds=1), "id": report["id"]},
        )
    assert (await read(client, alice, report["id"]))["downloadUrl"] is None
    assert (await client.get(path, headers={"Authorization": f"Bearer {alice.token}"})).status_code == 404


async def test_delete_report_removes_its_file(client, runtime):
    account = await register(client)
    report = await ready(client, runtime, account, type="POLICY_CHANGES", format="CSV")
    assert await runtime.files.get(account.org_id, report["id"]) is not None

    deleted = await gql(client, "DeleteReport", {"id": report["id"]}, token=account.token)
    assert deleted["data"]["deleteReport"] == report["id"]
    assert await read(client, account, report["id"]) is None
    assert await runtime.files.get(account.org_id, report["id"]) is None
    assert await count(runtime, "stored_files") == 0 and await count(runtime, "stored_file_chunks") == 0
    path = service.download_path(report["id"])
    assert (await client.get(path, headers={"Authorization": f"Bearer {account.token}"})).status_code == 404
    assert (await client.get(local(report["downloadUrl"]))).status_code == 404
    again = await gql(client, "DeleteReport", {"id": report["id"]}, token=account.token)
    assert error_code(again) == "NOT_FOUND"
    events = await gql(client, "Activity", {"filter": {"action": ["report.deleted"]}}, token=account.token)
    [event] = [e["node"] for e in events["data"]["activity"]["edges"]]
    assert event["targetId"] == report["id"] and event["metadata"]["status"] == "READY"


async def test_a_report_deleted_while_building_leaves_no_file(client, runtime):
    account = await register(client)
    report = await request(client, account, type="AGENT_ACTIVITY", format="JSON")
    claimed = await service.claim(runtime.db, account.org_id, report["id"], runtime.settings)
    assert claimed is not None and claimed.status == "RUNNING" and claimed.attempts == 1
    assert await service.claim(runtime.db, account.org_id, report["id"], runtime.settings) is None  # taken
    assert "errors" not in await gql(client, "DeleteReport", {"id": report["id"]}, token=account.token)
    # the queued build finds nothing to do
    await build(runtime)
    assert await count(runtime, "reports") == 0 and await count(runtime, "stored_files") == 0


async def test_job_updates_arrive_over_a_real_websocket(client, live_server, runtime):
    account = await register(client)
    ws = await GraphQLWebSocket.connect(live_server, {"authorization": f"Bearer {account.token}"})
    try:
        assert (await ws.receive())["type"] == "connection_ack"
        await ws.subscribe("JobUpdates", {})
        await asyncio.sleep(0.2)
        report = await request(client, account, type="COMPLIANCE_SUMMARY", format="PDF")
        await build(runtime)
        running = (await ws.receive())["payload"]["data"]["jobUpdates"]
        assert running["jobId"] == report["id"] and running["kind"] == "REPORT" and running["status"] == "RUNNING"
        done = (await ws.receive())["payload"]["data"]["jobUpdates"]
        assert done["status"] == "READY" and done["progress"] == 1.0
        assert f"/api/v1/reports/{report['id']}/download?" in done["downloadUrl"]
        assert (await client.get(local(done["downloadUrl"]))).status_code == 200
    finally:
        await ws.close()


async def test_a_failing_build_is_failed_with_its_reason(client, runtime, monkeypatch):
    account = await register(client)
    ws_updates: list[bytes] = []
    monkeypatch.setattr(runtime.settings, "report_max_bytes", 200)
    report = await request(client, account, type="COMPLIANCE_SUMMARY", format="PDF")
    channel = f"jobs:{account.org_id}:{account.user_id}"
    async with runtime.broadcaster.subscribe(channel) as messages:
        await build(runtime)

        async def collect():
            async for message in messages:
                ws_updates.append(message)
                if len(ws_updates) == 2:
                    return

        await asyncio.wait_for(collect(), 5)
    failed = await read(client, account, report["id"])
    assert failed["status"] == "FAILED" and failed["downloadUrl"] is None and failed["completedAt"] is not None
    assert "more than the limit of 200" in failed["error"]
    assert await count(runtime, "stored_files") == 0
    assert b'"FAILED"' in ws_updates[1] and b"limit of 200" in ws_updates[1]
    assert "errors" not in await gql(client, "Reports", {"filter": {"status": ["FAILED"]}}, token=account.token)


async def _age(runtime, report_id: str, *, claimed_seconds_ago: int | None = None, created_seconds_ago: int = 0):
    async with runtime.db.engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE reports SET claimed_at = :c, created_at = :k WHERE id = :id"),
            {
                "c": utcnow() - timedelta(seconds=claimed_seconds_ago) if claimed_seconds_ago is not None else None,
                "k": utcnow() - timedelta(seconds=created_seconds_ago),
                "id": report_id,
            },
        )


async def test_the_sweeper_rebuilds_a_report_whose_worker_died(client, runtime):
    account = await register(client)
    report = await request(client, account, type="AGENT_ACTIVITY", format="CSV")
    await runtime.redis.flushdb()  # the queued job is lost with it
    # a worker claims the report, writes half a file and dies
    claimed = await service.claim(runtime.db, account.org_id, report["id"], runtime.settings)
    writer = runtime.files.writer(account.org_id, report["id"], filename="x.csv", content_type="text/csv")
    await writer.__aenter__()
    await writer.write(b"half a file" * 200_000)
    assert await runtime.files.get(account.org_id, report["id"]) is None  # never served half-written

    ctx = {"runtime": runtime}
    assert await sweep_reports(ctx) == 0  # still within its timeout
    await _age(runtime, report["id"], claimed_seconds_ago=runtime.settings.report_timeout_seconds + 1)
    assert await sweep_reports(ctx) == 1
    assert (await read(client, account, report["id"]))["status"] == "PENDING"
    await build(runtime)
    done = await read(client, account, report["id"])
    assert done["status"] == "READY"
    body = (await download(client, done)).text
    assert body.startswith("agentId,agentName,records") and "half a file" not in body
    async with runtime.db.tenant_session(account.org_id) as session:
        assert (await service.get_report(session, report["id"])).attempts == claimed.attempts + 1

    # a PENDING report whose queue entry was lost is queued again
    lost = await request(client, account, type="AGENT_ACTIVITY", format="JSON")
    await runtime.redis.flushdb()
    await build(runtime)
    assert (await read(client, account, lost["id"]))["status"] == "PENDING"
    await _age(runtime, lost["id"], created_seconds_ago=120)
    assert await sweep_reports(ctx) == 1
    await build(runtime)
    assert (await read(client, account, lost["id"]))["status"] == "READY"


async def test_the_sweeper_gives_up_after_the_last_attempt(client, runtime):
    account = await register(client)
    report = await request(client, account, type="AUDIT_INTEGRITY", format="JSON")
    await runtime.redis.flushdb()
    stale = runtime.settings.report_timeout_seconds + 1
    for _ in range(runtime.settings.report_max_attempts):
        assert await service.claim(runtime.db, account.org_id, report["id"], runtime.settings) is not None
        await _age(runtime, report["id"], claimed_seconds_ago=stale)
        await sweep_reports({"runtime": runtime})
    failed = await read(client, account, report["id"])
    assert failed["status"] == "FAILED" and "interrupted 3 times" in failed["error"]
    await build(runtime)
    assert (await read(client, account, report["id"]))["status"] == "FAILED"


async def test_members_delete_only_their_own_reports(client, runtime, settings):

    owner = await register(client)
    member_id, member = await add_user(runtime, settings, owner, "member")
    owners = await request(client, owner, type="AUDIT_INTEGRITY", format="JSON")
    mine = (await gql(client, "RequestReport", {"input": {**window(), "type": "AUDIT_INTEGRITY"}}, token=member))[
        "data"
    ]["requestReport"]
    assert mine["requestedBy"] == member_id
    # members read the organisation's reports, but delete only their own
    listed = await gql(client, "Reports", {}, token=member)
    assert {e["node"]["id"] for e in listed["data"]["reports"]["edges"]} == {owners["id"], mine["id"]}
    refused = await gql(client, "DeleteReport", {"id": owners["id"]}, token=member)
    assert error_code(refused) == "FORBIDDEN"
    assert await count(runtime, "reports") == 2
    assert (await gql(client, "DeleteReport", {"id": mine["id"]}, token=member))["data"]["deleteReport"] == mine["id"]
    assert (await gql(client, "DeleteReport", {"id": owners["id"]}, token=owner.token))["data"]["deleteReport"]
    assert await count(runtime, "reports") == 0
