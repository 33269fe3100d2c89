"""Delivery: real worker and jobs, a real local receiver, signatures checked independently, the retry schedule
and dead-lettering with the clock passed in (not slept), redelivery, rotation, redirects, send-time SSRF
refusals, a worker killed mid-delivery, concurrent claims, auto-disable, and the events the domains emit."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import timedelta

import orjson
import pytest
import sqlalchemy as sa
from standardwebhooks import Webhook

from app.db import TenancyError, utcnow
from app.webhooks import delivery, outbox
from app.webhooks.service import emit_event, emit_events, enqueue_deliveries
from support import create_api_key, error_code, gql, register
from webhooks.receiver import verify_signature

pytestmark = pytest.mark.usefixtures("private_targets")


async def _rows(runtime, sql: str, **params):
    async with runtime.db.engine.connect() as conn:
        return (await conn.execute(sa.text(sql), params)).all()


async def _endpoint(client, account, url, events=("*",)):
    """An endpoint of `account` at `url`. Tests that run the worker subscribe to `test` only: the worker's sealing
    sends `audit.digest_sealed` to every `*` endpoint."""
    result = await gql(
        client, "CreateWebhookEndpoint", {"input": {"url": url, "events": list(events)}}, token=account.token
    )
    assert "errors" not in result, result
    data = result["data"]["createWebhookEndpoint"]
    return data["endpoint"], data["secret"]


async def _emit(runtime, org_id, event_type="test", data=None, now=None):
    async with runtime.db.tenant_session(org_id) as session:
        deliveries = await emit_event(session, event_type, data or {"n": 1}, now=now)
        await session.commit()
    return [d.id for d in deliveries]


async def _deliver(runtime, http, now=None, ids=None):
    return await delivery.deliver_due(
        runtime.db, http, settings=runtime.settings, secret_key=runtime.secret_key, now=now, ids=ids
    )


async def _delivery(client, account, delivery_id):
    result = await gql(client, "WebhookDelivery", {"id": delivery_id}, token=account.token)
    assert "errors" not in result, result
    return result["data"]["webhookDelivery"]


async def _run_worker(runtime):
    from workers.settings import run_worker

    await run_worker(runtime, burst=True)


async def test_alert_created_end_to_end_through_the_worker_with_a_verified_signature(client, runtime, receiver):
    owner = await register(client)
    endpoint, secret = await _endpoint(client, owner, receiver.url(), events=["alert.created"])
    rule = await gql(client, "CreateComplianceRule", {"input": {"name": "No codes", "kind": "KEYWORDS",
                     "config": {"keywords": ["bluebird"]}, "severity": "HIGH"}}, token=owner.token)  # fmt: skip
    assert "errors" not in rule, rule
    key, _ = await create_api_key(client, owner)
    clean = await gql(client, "LogEvent", {"input": {"action": "llm_call", "prompt": "hello"}}, api_key=key)
    assert "errors" not in clean
    assert await _rows(runtime, "SELECT id FROM webhook_deliveries") == []  # no alert, no event
    logged = await gql(client, "LogEvent", {"input": {"action": "llm_call", "prompt": "project bluebird"}},
                       api_key=key)  # fmt: skip
    record_id = logged["data"]["logEvent"]["id"]
    rows = await _rows(runtime, "SELECT id, status, endpoint_id FROM webhook_deliveries")
    assert [(r.status, r.endpoint_id) for r in rows] == [("PENDING", endpoint["id"])]  # committed with the alert

    await _run_worker(runtime)  # the job queued after the commit sends it

    assert len(receiver.completed) == 1
    request = receiver.completed[0]
    assert request.method == "POST" and request.headers["content-type"] == "application/json"
    assert verify_signature(secret, request.headers, request.body) == [True]
    assert Webhook(secret).verify(request.body, request.headers)["type"] == "alert.created"  # reference library
    payload = orjson.loads(request.body)
    assert set(payload) == {"id", "type", "createdAt", "data"}
    assert payload["type"] == "alert.created" and payload["id"] == request.headers["webhook-id"]
    assert payload["id"].startswith("evt_") and payload["createdAt"].endswith("Z")
    alert = payload["data"]["alert"]
    # every time in the event as the API writes times: UTC, milliseconds, `Z`
    iso_ms = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert re.fullmatch(iso_ms, payload["createdAt"]) and re.fullmatch(iso_ms, alert["createdAt"])
    assert alert["auditLogId"] == record_id and alert["ruleName"] == "No codes" and alert["severity"] == "HIGH"
    # enum values as GraphQL spells them (RuleKind, RuleAction, Severity)
    assert (alert["ruleKind"], alert["action"]) == ("KEYWORDS", "ALERT")
    assert "bluebird" not in request.body.decode()  # the excerpt is redacted, as on the alert
    assert abs(int(request.headers["webhook-timestamp"]) - utcnow().timestamp()) < 60

    listed = await gql(client, "WebhookDeliveries", {"filter": {"status": ["DELIVERED"]}}, token=owner.token)
    node = listed["data"]["webhookDeliveries"]["edges"][0]["node"]
    assert node["id"] == rows[0].id and node["eventType"] == "alert.created" and node["attemptCount"] == 1
    assert node["payload"] == payload and node["deliveredAt"] is not None and node["nextAttemptAt"] is None
    [attempt] = node["attempts"]
    assert attempt["succeeded"] and attempt["statusCode"] == 200 and attempt["latencyMs"] >= 0
    assert attempt["responseBody"] == '{"ok": true}' and attempt["error"] is None
    assert secret not in json.dumps(listed)


async def test_retry_schedule_then_success(client, runtime, receiver, http):
    owner = await register(client)
    endpoint, secret = await _endpoint(client, owner, receiver.url("/flaky"))
    receiver.plan("/flaky", [500, 503])
    t0 = utcnow()
    [delivery_id] = await _emit(runtime, owner.org_id, now=t0)

    report = await _deliver(runtime, http, now=t0)
    assert (report.claimed, report.failed) == (1, 1)
    first = await _delivery(client, owner, delivery_id)
    assert first["status"] == "FAILED" and first["attemptCount"] == 1 and first["lastError"] == "HTTP 500"
    due = _time(first["nextAttemptAt"])
    assert t0 + timedelta(seconds=30) <= due <= t0 + timedelta(seconds=33.002)  # 30 s + up to 10 % jitter

    assert (await _deliver(runtime, http, now=t0 + timedelta(seconds=29))).claimed == 0  # not due yet
    assert (await _deliver(runtime, http, now=due)).failed == 1
    second = await _delivery(client, owner, delivery_id)
    due2 = _time(second["nextAttemptAt"])
    assert due + timedelta(seconds=299.99) <= due2 <= due + timedelta(seconds=330.01)  # then 5 min

    assert (await _deliver(runtime, http, now=due2)).delivered == 1
    done = await _delivery(client, owner, delivery_id)
    assert done["status"] == "DELIVERED" and done["nextAttemptAt"] is None and done["attemptCount"] == 3
    assert [a["statusCode"] for a in done["attempts"]] == [500, 503, 200]
    assert [a["succeeded"] for a in done["attempts"]] == [False, False, True]
    # every attempt carried the same message: same id, same body, a valid signature
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
    assert len({r.body for r in receiver.received}) == 1
    assert all(verify_signature(secret, r.headers, r.body) == [True] for r in receiver.received)
    health = await _rows(runtime, "SELECT failing_since FROM webhook_endpoints WHERE id = :id", id=endpoint["id"])
    assert health[0].failing_since is None  # the success cleared it


async def _lateness_probe(runtime, stop: asyncio.Event, found: dict[str, float]) -> None:
    """How late this event loop (the worker's) runs a timer, and how long a database round trip takes, at
    worst while the retries run: what a retry's start may lag its due time by on this machine, now."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        asked = loop.time()
        await asyncio.sleep(0.02)
        found["loop"] = max(found["loop"], loop.time() - asked - 0.02)
        started = loop.time()
        async with runtime.db.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
        found["db"] = max(found["db"], loop.time() - started)


async def test_retries_are_sent_at_their_scheduled_time(client, runtime, receiver, settings, monkeypatch):
    """Delays [1, 1, 1] without jitter, through a real worker and its deferred jobs: each retry is scheduled at
    its failed attempt's time plus its delay (exactly: not rounded up to a time slot), and is sent once due,
    never before, and no later than the worker's poll, the retry grouping and this machine's present
    slowness allow (measured while the retries run: a loaded machine delays every timer and query alike)."""
    import workers.webhooks
    from workers.settings import POLL_DELAY_SECONDS
    from workers.webhooks import RETRY_GROUP_SECONDS

    monkeypatch.setattr(settings, "webhook_retry_delays", [1.0, 1.0, 1.0])
    monkeypatch.setattr(settings, "webhook_retry_jitter", 0.0)
    scheduled = []  # (delivery ids, due) of every deferred retry job the worker queued

    async def recording(queue, ids, *, defer_until=None):
        scheduled.append((list(ids), defer_until))
        await enqueue_deliveries(queue, ids, defer_until=defer_until)

    monkeypatch.setattr(workers.webhooks, "enqueue_deliveries", recording)
    owner = await register(client)
    await _endpoint(client, owner, receiver.url("/gaps"), events=["test"])
    receiver.plan("/gaps", [500, 500, 500])
    ids = await _emit(runtime, owner.org_id)
    await enqueue_deliveries(runtime.queue, ids)
    stop, lateness = asyncio.Event(), {"loop": 0.0, "db": 0.0}
    probe = asyncio.create_task(_lateness_probe(runtime, stop, lateness))
    try:
        await _run_worker(runtime)  # burst: runs until the deferred retries have run too
    finally:
        stop.set()
        await probe
    assert len([r for r in receiver.received if r.path == "/gaps"]) == 4
    rows = await _rows(runtime, "SELECT attempted_at FROM webhook_attempts WHERE delivery_id = :d ORDER BY 1", d=ids[0])
    attempts = [r.attempted_at for r in rows]
    assert len(attempts) == 4
    # each retry was scheduled exactly one delay after the attempt that failed
    assert [ids for ids, _ in scheduled] == [[ids[0]]] * 3
    assert [due for _, due in scheduled] == [at + timedelta(seconds=1.0) for at in attempts[:3]]
    # and sent once due: never early, late by at most a poll, the grouping and what the machine adds now
    # (a job's start is a timer, its claim a few queries)
    allowed = POLL_DELAY_SECONDS + RETRY_GROUP_SECONDS + 2 * lateness["loop"] + 4 * lateness["db"] + 0.1
    late = [(at - due).total_seconds() for at, (_, due) in zip(attempts[1:], scheduled, strict=True)]
    assert all(0 <= x <= allowed for x in late), (late, allowed, lateness)
    assert (await _delivery(client, owner, ids[0]))["status"] == "DELIVERED"


def test_retries_due_together_share_a_job_that_runs_at_the_latest():
    from workers.webhooks import RETRY_GROUP_SECONDS, retry_groups

    t = utcnow()
    due = [("a", t), ("b", t + timedelta(seconds=RETRY_GROUP_SECONDS / 2)), ("c", t + timedelta(seconds=1))]
    assert retry_groups(list(reversed(due))) == [(due[1][1], ["a", "b"]), (due[2][1], ["c"])]


def _time(text):
    """A time as the API shows it (millisecond precision), rounded up to the next millisecond."""
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")) + timedelta(milliseconds=1)


async def test_dead_lettered_after_three_retries_then_redelivered(client, runtime, receiver, http):
    owner = await register(client)
    await _endpoint(client, owner, receiver.url("/down"), events=["test"])
    receiver.plan("/down", [500, 500, 500, 500])
    now = utcnow()
    [delivery_id] = await _emit(runtime, owner.org_id, now=now)
    for expected in ("FAILED", "FAILED", "FAILED", "DEAD_LETTERED"):
        report = await _deliver(runtime, http, now=now)
        assert report.claimed == 1
        state = await _delivery(client, owner, delivery_id)
        assert state["status"] == expected
        now = _time(state["nextAttemptAt"]) if expected == "FAILED" else now + timedelta(days=1)
    assert state["nextAttemptAt"] is None and len(state["attempts"]) == 4
    assert (await _deliver(runtime, http, now=now + timedelta(days=30))).claimed == 0  # never again by itself

    redelivered = await gql(client, "RedeliverWebhook", {"deliveryId": delivery_id}, token=owner.token)
    assert "errors" not in redelivered, redelivered
    node = redelivered["data"]["redeliverWebhook"]
    assert node["status"] == "PENDING" and node["attemptCount"] == 0 and len(node["attempts"]) == 4
    again = await gql(client, "RedeliverWebhook", {"deliveryId": delivery_id}, token=owner.token)
    assert error_code(again) == "CONFLICT"  # already on its way

    await _run_worker(runtime)  # queued by the mutation; the receiver answers 200 now
    final = await _delivery(client, owner, delivery_id)
    assert final["status"] == "DELIVERED" and final["attemptCount"] == 1 and len(final["attempts"]) == 5
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1  # the same message id throughout
    activity = await _rows(runtime, "SELECT action FROM activity_events WHERE action = 'webhook.redelivered'")
    assert len(activity) == 1
    missing = await gql(client, "RedeliverWebhook", {"deliveryId": "dlv_nope"}, token=owner.token)
    assert error_code(missing) == "NOT_FOUND"


async def test_redirects_are_not_followed(client, runtime, receiver, http):
    owner = await register(client)
    await _endpoint(client, owner, receiver.url("/redirect"))
    [delivery_id] = await _emit(runtime, owner.org_id)
    await _deliver(runtime, http)
    state = await _delivery(client, owner, delivery_id)
    assert state["status"] == "FAILED" and state["attempts"][0]["statusCode"] == 302
    assert [r.path for r in receiver.received] == ["/redirect"]  # /landing never reached


async def test_response_body_is_kept_up_to_2_kb(client, runtime, receiver, http):
    owner = await register(client)
    await _endpoint(client, owner, receiver.url("/big"))
    [delivery_id] = await _emit(runtime, owner.org_id)
    await _deliver(runtime, http)
    state = await _delivery(client, owner, delivery_id)
    assert state["status"] == "DELIVERED" and state["attempts"][0]["responseBody"] == "x" * 2048


async def test_send_time_refusal_when_private_targets_are_off(client, runtime, receiver, http, settings, monkeypatch):
    owner = await register(client)
    await _endpoint(client, owner, receiver.url("/hook"))
    await _endpoint(client, owner, receiver.url("/hook", host="localhost"))
    ids = await _emit(runtime, owner.org_id)
    assert len(ids) == 2
    monkeypatch.setattr(settings, "webhook_allow_private_targets", False)  # e.g. the setting was turned off
    report = await _deliver(runtime, http)
    assert report.failed == 2
    for delivery_id in ids:
        state = await _delivery(client, owner, delivery_id)
        [attempt] = state["attempts"]
        assert attempt["statusCode"] is None and attempt["error"].startswith("refused:")
        assert "loopback" in attempt["error"]
    assert receiver.received == []


async def test_a_worker_lost_before_recording_is_sent_again_after_the_lease(
    client, runtime, receiver, http, monkeypatch
):
    """The residual window of at-least-once: a worker that dies after the receiver got the request but before
    the outcome is recorded leaves the row SENDING; after the lease another worker sends it again."""
    owner = await register(client)
    await _endpoint(client, owner, receiver.url("/hook"))
    now = utcnow()
    [delivery_id] = await _emit(runtime, owner.org_id, now=now)

    async def dies(*_args, **_kwargs):
        raise asyncio.CancelledError  # the process ends here: nothing after the send runs

    with monkeypatch.context() as patch:
        patch.setattr(delivery, "_record", dies)
        with pytest.raises(asyncio.CancelledError):
            await _deliver(runtime, http, now=now)
    assert len(receiver.completed) == 1
    [row] = await _rows(runtime, "SELECT status FROM webhook_deliveries")
    assert row.status == "SENDING"

    assert (await _deliver(runtime, http, now=now + timedelta(seconds=5))).claimed == 0  # the lease still holds
    later = now + timedelta(seconds=outbox.lease_seconds(runtime.settings) + 1)
    report = await _deliver(runtime, http, now=later)
    assert report.delivered == 1
    assert (await _deliver(runtime, http, now=later + timedelta(hours=1))).claimed == 0
    assert len(receiver.completed) == 2  # the same webhook-id twice: at least once
    assert len({r.headers["webhook-id"] for r in receiver.completed}) == 1
    state = await _delivery(client, owner, delivery_id)
    assert state["status"] == "DELIVERED"
    assert [a["succeeded"] for a in state["attempts"]] == [False, True]
    assert "lease expired" in state["attempts"][0]["error"]


async def test_a_job_cancelled_mid_delivery_records_what_it_sent(client, runtime, receiver, http):
    """Cancelling a delivery job (arq's timeout, a worker shutting down or losing Redis) once its requests are out
    waits for their outcomes and records them: the delivery is not sent again when the lease expires."""
    owner = await register(client)
    await _endpoint(client, owner, receiver.url("/slow"))
    receiver.hold("/slow")
    now = utcnow()
    [delivery_id] = await _emit(runtime, owner.org_id, now=now)

    task = asyncio.create_task(_deliver(runtime, http, now=now))
    await asyncio.wait_for(receiver.holding.wait(), 10)
    task.cancel()
    await asyncio.sleep(0.2)
    assert not task.done()  # still waiting for the answer
    receiver.release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    state = await _delivery(client, owner, delivery_id)
    assert state["status"] == "DELIVERED"
    later = now + timedelta(seconds=outbox.lease_seconds(runtime.settings) + 1)
    assert (await _deliver(runtime, http, now=later)).claimed == 0
    assert len(receiver.completed) == 1


async def test_concurrent_workers_never_send_a_delivery_twice(client, runtime, receiver, http, settings):
    from app.webhooks.sender import build_client

    owner = await register(client)
    await _endpoint(client, owner, receiver.url("/many"))
    async with runtime.db.tenant_session(owner.org_id) as session:
        await emit_events(session, [("test", {"n": i}) for i in range(60)])
        await session.commit()
    other = build_client(settings)
    try:
        reports = await asyncio.gather(
            *(
                delivery.deliver_due(runtime.db, c, settings=settings, secret_key=runtime.secret_key, limit=7)
                for _ in range(6)
                for c in (http, other)
            )
        )
        while (await _deliver(runtime, http)).claimed:
            pass
    finally:
        await other.aclose()
    assert sum(r.claimed for r in reports) <= 60
    ids = [orjson.loads(r.body)["id"] for r in receiver.completed]
    assert len(ids) == 60 and len(set(ids)) == 60


async def test_rotation_signs_with_both_secrets_for_24_hours(client, runtime, receiver, http):
    owner = await register(client)
    endpoint, old_secret = await _endpoint(client, owner, receiver.url("/rotating"))
    rotated = await gql(client, "RotateWebhookSecret", {"id": endpoint["id"]}, token=owner.token)
    new_secret = rotated["data"]["rotateWebhookSecret"]["secret"]

    now = utcnow()
    await _emit(runtime, owner.org_id, now=now)
    await _deliver(runtime, http, now=now)
    during = receiver.completed[-1]
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    assert any(verify_signature(old_secret, during.headers, during.body))
    assert any(verify_signature(new_secret, during.headers, during.body))
    for secret in (old_secret, new_secret):  # the reference library accepts the message with either secret
        Webhook(secret).verify(during.body, during.headers)

    later = now + timedelta(hours=24, minutes=1)
    await _emit(runtime, owner.org_id, now=later)
    await _deliver(runtime, http, now=later)
    after = receiver.completed[-1]
    assert verify_signature(new_secret, after.headers, after.body) == [True]
    assert not any(verify_signature(old_secret, after.headers, after.body))


async def test_endpoint_failing_for_five_days_is_disabled(client, runtime, receiver, http):
    owner = await register(client)
    endpoint, _ = await _endpoint(client, owner, receiver.url("/broken"))
    receiver.plan("/broken", [500] * 10)
    t0 = utcnow()
    await _emit(runtime, owner.org_id, "alert.resolved", now=t0)
    await _deliver(runtime, http, now=t0)
    [row] = await _rows(runtime, "SELECT enabled, failing_since FROM webhook_endpoints")
    assert row.enabled and row.failing_since is not None

    t1 = t0 + timedelta(days=5, minutes=1)
    await _emit(runtime, owner.org_id, "alert.resolved", now=t1)
    await _deliver(runtime, http, now=t1)
    state = (await gql(client, "WebhookEndpoint", {"id": endpoint["id"]}, token=owner.token))["data"]
    assert state["webhookEndpoint"]["enabled"] is False
    assert "failing continuously" in state["webhookEndpoint"]["disabledReason"]
    events = await _rows(runtime, "SELECT actor_type, target_id, metadata FROM activity_events "
                                  "WHERE action = 'webhook_endpoint.disabled'")  # fmt: skip
    assert [(e.actor_type, e.target_id) for e in events] == [("system", endpoint["id"])]
    assert await _emit(runtime, owner.org_id, "alert.resolved") == []  # a disabled endpoint gets no new events

    enabled = await gql(client, "UpdateWebhookEndpoint", {"id": endpoint["id"], "input": {"enabled": True}},
                        token=owner.token)  # fmt: skip
    assert enabled["data"]["updateWebhookEndpoint"]["disabledReason"] is None
    assert enabled["data"]["updateWebhookEndpoint"]["failingSince"] is None


async def test_test_webhooks_to_an_endpoint_and_to_a_bare_url(client, runtime, receiver):
    owner = await register(client)
    endpoint, secret = await _endpoint(client, owner, receiver.url("/endpoint"), events=["alert.created"])
    to_endpoint = await gql(client, "SendTestWebhook", {"endpointId": endpoint["id"], "payload": {"hello": "world"}},
                            token=owner.token)  # fmt: skip
    assert "errors" not in to_endpoint, to_endpoint
    assert to_endpoint["data"]["sendTestWebhook"]["status"] == "PENDING"
    to_url = await gql(client, "SendTestWebhook", {"url": receiver.url("/bare")}, token=owner.token)
    assert "errors" not in to_url, to_url
    await _run_worker(runtime)

    [signed] = receiver.completed_on("/endpoint")
    assert verify_signature(secret, signed.headers, signed.body) == [True]
    assert orjson.loads(signed.body)["type"] == "test" and orjson.loads(signed.body)["data"] == {"hello": "world"}
    [bare] = receiver.completed_on("/bare")
    assert "webhook-signature" not in bare.headers and "webhook-id" in bare.headers
    listed = await gql(client, "WebhookDeliveries", {"filter": {"eventType": ["test"]}}, token=owner.token)
    assert {e["node"]["status"] for e in listed["data"]["webhookDeliveries"]["edges"]} == {"DELIVERED"}
    actions = await _rows(runtime, "SELECT action FROM activity_events WHERE action = 'webhook.test_sent'")
    assert len(actions) == 2


async def test_the_sweeper_sends_what_a_flushed_redis_forgot(client, runtime, receiver):
    from workers.webhooks import drain_webhook_deliveries, shutdown, startup

    owner = await register(client)
    endpoint, _ = await _endpoint(client, owner, receiver.url("/swept"), events=["test"])
    await gql(client, "SendTestWebhook", {"endpointId": endpoint["id"]}, token=owner.token)
    await runtime.redis.flushdb()  # the queued job is gone; the row is not
    await _run_worker(runtime)
    assert receiver.completed == []
    ctx = {"runtime": runtime}
    await startup(ctx)
    try:
        assert await drain_webhook_deliveries(ctx) == 1
    finally:
        await shutdown(ctx)
    assert len(receiver.completed_on("/swept")) == 1


async def test_policy_and_alert_resolution_events(client, runtime, receiver):
    owner = await register(client)
    await _endpoint(client, owner, receiver.url("/events"), events=["policy.version_created", "alert.resolved"])
    rule = {"name": "Codes", "kind": "KEYWORDS", "config": {"keywords": ["bluebird"]}, "severity": "LOW"}
    created = await gql(client, "CreatePolicy", {"input": {"name": "Base", "rules": [rule]}}, token=owner.token)
    assert "errors" not in created, created
    policy_id = created["data"]["createPolicy"]["id"]
    version = await gql(client, "CreatePolicyVersion", {"policyId": policy_id, "rules": [rule], "note": "v2"},
                        token=owner.token)  # fmt: skip
    assert "errors" not in version, version
    await gql(client, "CreateComplianceRule", {"input": rule}, token=owner.token)
    logged = await gql(client, "LogEvent", {"input": {"action": "x", "prompt": "bluebird"}}, token=owner.token)
    alert_id = (await gql(client, "Alerts", {}, token=owner.token))["data"]["alerts"]["edges"][0]["node"]["id"]
    assert logged["data"]["logEvent"]["id"]
    resolved = await gql(client, "ResolveAlert", {"id": alert_id, "note": "fine"}, token=owner.token)
    assert "errors" not in resolved
    await _run_worker(runtime)

    bodies = [orjson.loads(r.body) for r in receiver.completed_on("/events")]
    by_type = sorted((b["type"], b["data"].get("origin") or b["data"]["alert"]["id"]) for b in bodies)
    assert by_type == [
        ("alert.resolved", alert_id),
        ("policy.version_created", "policy.created"),
        ("policy.version_created", "policy.version_created"),
    ]
    resolved_body = next(b for b in bodies if b["type"] == "alert.resolved")
    assert resolved_body["data"]["alert"]["resolvedAt"] and resolved_body["data"]["alert"]["resolutionNote"] == "fine"
    versions = sorted(b["data"]["version"]["number"] for b in bodies if b["type"] == "policy.version_created")
    assert versions == [1, 2]
    assert {b["data"]["actor"]["type"] for b in bodies if b["type"] == "policy.version_created"} == {"USER"}


async def test_emit_is_a_no_op_without_endpoints_and_rejects_unknown_types(client, runtime):
    owner = await register(client)
    assert await _emit(runtime, owner.org_id, "alert.created") == []
    assert await _rows(runtime, "SELECT id FROM webhook_deliveries") == []
    async with runtime.db.tenant_session(owner.org_id) as session:
        with pytest.raises(ValueError, match="unknown"):
            await emit_event(session, "alert.exploded", {})
    other = await register(client, org="Other")
    async with runtime.db.tenant_session(owner.org_id) as session:
        with pytest.raises(TenancyError):
            await emit_event(session, "report.ready", {}, org_id=other.org_id)
    # from a system session (e.g. a worker finishing a report) the organisation is named explicitly
    async with runtime.db.system_session() as session:
        with pytest.raises(ValueError, match="organisation"):
            await emit_event(session, "report.ready", {})
        assert await emit_event(session, "report.ready", {"reportId": "rep_1"}, org_id=owner.org_id) == []


async def test_delivery_filters_and_pagination(client, runtime, receiver, http):
    owner = await register(client)
    first, _ = await _endpoint(client, owner, receiver.url("/a"), events=["alert.created"])
    second, _ = await _endpoint(client, owner, receiver.url("/b"), events=["*"])
    receiver.plan("/b", [500])
    t0 = utcnow()
    await _emit(runtime, owner.org_id, "alert.created", now=t0)  # to both
    await _emit(runtime, owner.org_id, "alert.resolved", now=t0 + timedelta(seconds=1))  # to the second
    await _deliver(runtime, http, now=t0 + timedelta(seconds=2))

    async def ids(filter_, first_=None, after=None):
        result = await gql(client, "WebhookDeliveries", {"filter": filter_, "first": first_, "after": after},
                           token=owner.token)  # fmt: skip
        assert "errors" not in result, result
        return result["data"]["webhookDeliveries"]

    assert (await ids({}))["totalCount"] == 3
    assert (await ids({"endpointId": first["id"]}))["totalCount"] == 1
    assert (await ids({"endpointId": second["id"], "status": ["FAILED"]}))["totalCount"] == 1
    assert (await ids({"eventType": ["alert.resolved"]}))["totalCount"] == 1
    assert (await ids({"from": (t0 + timedelta(milliseconds=500)).isoformat()}))["totalCount"] == 1
    assert (await ids({"to": (t0 + timedelta(milliseconds=500)).isoformat()}))["totalCount"] == 2
    page = await ids({}, first_=2)
    assert page["pageInfo"]["hasNextPage"] and len(page["edges"]) == 2
    rest = await ids({}, first_=2, after=page["pageInfo"]["endCursor"])
    assert not rest["pageInfo"]["hasNextPage"] and len(rest["edges"]) == 1
    seen = [e["node"]["id"] for e in page["edges"] + rest["edges"]]
    assert len(set(seen)) == 3
    assert error_code(await gql(client, "WebhookDeliveries", {"after": "garbage"}, token=owner.token)) == (
        "BAD_USER_INPUT"
    )
