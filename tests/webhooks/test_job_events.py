"""Events of background jobs reach webhooks: `report.ready` and `export.ready` when their file is stored."""

from __future__ import annotations

import orjson
import pytest
from exports import export_support as exports
from reports import helpers as reports
from standardwebhooks import Webhook

from support import gql, register
from webhooks.receiver import verify_signature

pytestmark = pytest.mark.usefixtures("private_targets")


async def test_report_ready_is_delivered_with_the_report(client, runtime, receiver):
    owner = await register(client)
    created = await gql(client, "CreateWebhookEndpoint", {"input": {"url": receiver.url(), "events": ["report.ready"]}},
                        token=owner.token)  # fmt: skip
    assert "errors" not in created, created
    secret = created["data"]["createWebhookEndpoint"]["secret"]
    report = await reports.request(client, owner, type="POLICY_CHANGES", format="JSON")
    await reports.build(runtime)  # builds the report, then sends the event it queued
    await reports.build(runtime)
    done = await reports.read(client, owner, report["id"])
    assert done["status"] == "READY"
    [request] = receiver.completed
    assert verify_signature(secret, request.headers, request.body) == [True]
    payload = orjson.loads(request.body)
    assert payload["type"] == "report.ready"
    assert payload["data"]["reportId"] == report["id"] and payload["data"]["format"] == "JSON"
    assert payload["data"]["type"] == "POLICY_CHANGES"  # GraphQL's ReportType spelling
    assert Webhook(secret).verify(request.body, request.headers)["data"]["type"] == "POLICY_CHANGES"


async def test_export_ready_is_delivered_with_the_export(client, runtime, receiver):
    owner = await register(client)
    created = await gql(client, "CreateWebhookEndpoint", {"input": {"url": receiver.url(), "events": ["export.ready"]}},
                        token=owner.token)  # fmt: skip
    assert "errors" not in created, created
    await exports.seed_audit(runtime, owner.org_id, 25)
    job = await exports.start_export(client, owner, dataset="AUDIT_LOGS", format="NDJSON")
    await exports.run_jobs(runtime)  # writes the file, then sends the event it queued
    await exports.run_jobs(runtime)
    assert (await exports.export_job(client, owner, job["id"]))["status"] == "READY"
    [request] = receiver.completed
    payload = orjson.loads(request.body)
    assert payload["type"] == "export.ready"
    assert payload["data"]["exportId"] == job["id"] and payload["data"]["rowCount"] == 25
    assert (payload["data"]["dataset"], payload["data"]["format"]) == ("AUDIT_LOGS", "NDJSON")
