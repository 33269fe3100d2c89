"""Endpoint management: create (secret once), list, read, update, delete, rotate; permissions, validation,
tenancy (another organisation's ids are NOT_FOUND), activity events, and secrets kept out of lists and logs."""

from __future__ import annotations

import json
import logging

import sqlalchemy as sa

from support import error_code, gql, register

URL = "https://93.184.216.34/hooks/agentrail"


async def _rows(runtime, sql: str, **params):
    async with runtime.db.engine.connect() as conn:
        return (await conn.execute(sa.text(sql), params)).all()


async def _create(client, account, **input_):
    result = await gql(
        client,
        "CreateWebhookEndpoint",
        {"input": {"url": URL, "events": ["alert.created"], **input_}},
        token=account.token,
    )
    assert "errors" not in result, result
    return result["data"]["createWebhookEndpoint"]


async def test_endpoint_lifecycle_and_activity(client, runtime):
    owner = await register(client)
    created = await _create(client, owner, description="pager", events=["alert.resolved", "alert.created"])
    endpoint, secret = created["endpoint"], created["secret"]
    assert endpoint["id"].startswith("whk_") and secret.startswith("whsec_")
    assert endpoint["events"] == ["alert.created", "alert.resolved"] and endpoint["enabled"] is True
    assert endpoint["description"] == "pager"

    listed = await gql(client, "WebhookEndpoints", token=owner.token)
    assert [e["id"] for e in listed["data"]["webhookEndpoints"]] == [endpoint["id"]]
    one = await gql(client, "WebhookEndpoint", {"id": endpoint["id"]}, token=owner.token)
    assert one["data"]["webhookEndpoint"]["url"] == URL
    assert secret not in json.dumps(listed) and secret not in json.dumps(one)

    updated = await gql(
        client,
        "UpdateWebhookEndpoint",
        {"id": endpoint["id"], "input": {"events": ["*"], "enabled": False, "description": ""}},
        token=owner.token,
    )
    assert "errors" not in updated, updated
    node = updated["data"]["updateWebhookEndpoint"]
    assert node["events"] == ["*"] and node["enabled"] is False and node["description"] == ""

    rotated = await gql(client, "RotateWebhookSecret", {"id": endpoint["id"]}, token=owner.token)
    new_secret = rotated["data"]["rotateWebhookSecret"]["secret"]
    assert new_secret.startswith("whsec_") and new_secret != secret
    assert rotated["data"]["rotateWebhookSecret"]["endpoint"]["previousSecretExpiresAt"] is not None

    deleted = await gql(client, "DeleteWebhookEndpoint", {"id": endpoint["id"]}, token=owner.token)
    assert deleted["data"]["deleteWebhookEndpoint"]["id"] == endpoint["id"]
    again = await gql(client, "DeleteWebhookEndpoint", {"id": endpoint["id"]}, token=owner.token)
    assert error_code(again) == "NOT_FOUND"

    actions = [r.action for r in await _rows(runtime, "SELECT action FROM activity_events WHERE target_type = "
                                              "'webhook_endpoint' ORDER BY occurred_at, id")]  # fmt: skip
    assert actions == [
        "webhook_endpoint.created",
        "webhook_endpoint.updated",
        "webhook_endpoint.secret_rotated",
        "webhook_endpoint.deleted",
    ]
    trail = json.dumps([list(r) for r in await _rows(runtime, "SELECT metadata::text FROM activity_events")])
    assert secret not in trail and new_secret not in trail


async def test_secret_is_encrypted_at_rest_and_never_logged(client, runtime, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    owner = await register(client)
    created = await _create(client, owner)
    secret = created["secret"]
    dump = repr(await _rows(runtime, "SELECT * FROM webhook_endpoints"))
    assert secret not in dump and secret[len("whsec_") :] not in dump
    rotated = await gql(client, "RotateWebhookSecret", {"id": created["endpoint"]["id"]}, token=owner.token)
    new_secret = rotated["data"]["rotateWebhookSecret"]["secret"]
    captured = capsys.readouterr()
    logs = caplog.text + captured.out + captured.err
    assert secret not in logs and new_secret not in logs


async def test_rejections_write_nothing(client, runtime):
    owner = await register(client)
    cases = [
        {"url": URL, "events": ["alert.exploded"]},
        {"url": URL, "events": []},
        {"url": URL, "events": ["alert.created"], "description": "x" * 501},
        {"url": "not a url", "events": ["alert.created"]},
        {"url": "ftp://93.184.216.34/", "events": ["alert.created"]},
    ]
    for input_ in cases:
        result = await gql(client, "CreateWebhookEndpoint", {"input": input_}, token=owner.token)
        assert error_code(result) == "BAD_USER_INPUT", input_
    assert await _rows(runtime, "SELECT id FROM webhook_endpoints") == []
    endpoint = (await _create(client, owner))["endpoint"]
    bad_update = await gql(
        client, "UpdateWebhookEndpoint", {"id": endpoint["id"], "input": {"events": ["nope"]}}, token=owner.token
    )
    assert error_code(bad_update) == "BAD_USER_INPUT"
    assert [r.events for r in await _rows(runtime, "SELECT events FROM webhook_endpoints")] == [["alert.created"]]
    test_both = await gql(client, "SendTestWebhook", {"endpointId": endpoint["id"], "url": URL}, token=owner.token)
    assert error_code(test_both) == "BAD_USER_INPUT"
    assert error_code(await gql(client, "SendTestWebhook", {}, token=owner.token)) == "BAD_USER_INPUT"
    not_object = await gql(client, "SendTestWebhook", {"endpointId": endpoint["id"], "payload": [1]}, token=owner.token)
    assert error_code(not_object) == "BAD_USER_INPUT"
    bad_filter = await gql(client, "WebhookDeliveries", {"first": 501}, token=owner.token)
    assert error_code(bad_filter) == "BAD_USER_INPUT"
    assert await _rows(runtime, "SELECT id FROM webhook_deliveries") == []


async def test_api_keys_cannot_manage_or_read_webhooks(client, runtime):
    """Endpoints are managed by people. A full-scope key may send tests and read deliveries (seed 000's
    POST /v1/webhooks/test and GET /v1/webhooks take the API key): a key without the full scope may not."""
    owner = await register(client)
    endpoint = (await _create(client, owner))["endpoint"]
    made = await gql(client, "CreateApiKey", {"name": "reader", "scopes": ["READ", "INGEST"]}, token=owner.token)
    assert "errors" not in made, made
    key = made["data"]["createApiKey"]["secret"]
    attempts = [
        ("CreateWebhookEndpoint", {"input": {"url": URL, "events": ["*"]}}),
        ("UpdateWebhookEndpoint", {"id": endpoint["id"], "input": {"enabled": False}}),
        ("DeleteWebhookEndpoint", {"id": endpoint["id"]}),
        ("RotateWebhookSecret", {"id": endpoint["id"]}),
        ("SendTestWebhook", {"endpointId": endpoint["id"]}),
        ("RedeliverWebhook", {"deliveryId": "dlv_x"}),
        ("WebhookEndpoints", {}),
        ("WebhookDeliveries", {}),
    ]
    for name, variables in attempts:
        assert error_code(await gql(client, name, variables, api_key=key)) == "FORBIDDEN", name
    rows = await _rows(runtime, "SELECT enabled FROM webhook_endpoints")
    assert [r.enabled for r in rows] == [True]
    assert await _rows(runtime, "SELECT id FROM webhook_deliveries") == []
    unauthenticated = await gql(client, "WebhookEndpoints")
    assert error_code(unauthenticated) == "UNAUTHENTICATED"


async def test_another_organisations_endpoints_and_deliveries_are_not_found(client, runtime):
    alice = await register(client, org="Alice Inc")
    bob = await register(client, org="Bob Ltd")
    endpoint = (await _create(client, alice))["endpoint"]
    sent = await gql(client, "SendTestWebhook", {"endpointId": endpoint["id"]}, token=alice.token)
    delivery_id = sent["data"]["sendTestWebhook"]["id"]
    assert delivery_id.startswith("dlv_")

    for name, variables in [
        ("UpdateWebhookEndpoint", {"id": endpoint["id"], "input": {"enabled": False}}),
        ("DeleteWebhookEndpoint", {"id": endpoint["id"]}),
        ("RotateWebhookSecret", {"id": endpoint["id"]}),
        ("SendTestWebhook", {"endpointId": endpoint["id"]}),
        ("RedeliverWebhook", {"deliveryId": delivery_id}),
    ]:
        assert error_code(await gql(client, name, variables, token=bob.token)) == "NOT_FOUND", name
    assert (await gql(client, "WebhookEndpoint", {"id": endpoint["id"]}, token=bob.token))["data"] == {
        "webhookEndpoint": None
    }
    assert (await gql(client, "WebhookDelivery", {"id": delivery_id}, token=bob.token))["data"] == {
        "webhookDelivery": None
    }
    assert (await gql(client, "WebhookEndpoints", token=bob.token))["data"]["webhookEndpoints"] == []
    bobs = await gql(client, "WebhookDeliveries", {"filter": {"endpointId": endpoint["id"]}}, token=bob.token)
    assert bobs["data"]["webhookDeliveries"]["edges"] == []
    rows = await _rows(runtime, "SELECT enabled, previous_secret_encrypted FROM webhook_endpoints")
    assert [(r.enabled, r.previous_secret_encrypted) for r in rows] == [(True, None)]
    assert len(await _rows(runtime, "SELECT id FROM webhook_deliveries")) == 1


async def test_plan_limits_the_number_of_endpoints(client, runtime, settings, monkeypatch):
    monkeypatch.setattr(settings, "enforce_limits", True)
    owner = await register(client)  # free plan: one endpoint
    await _create(client, owner)
    second = await gql(client, "CreateWebhookEndpoint", {"input": {"url": URL, "events": ["*"]}}, token=owner.token)
    assert error_code(second) == "QUOTA_EXCEEDED"
    assert len(await _rows(runtime, "SELECT id FROM webhook_endpoints")) == 1
