"""Events of background jobs reach webhooks: `report.ready` when a report's file is stored."""

from __future__ import annotations

import orjson
import pytest
from reports import helpers as reports

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
