"""What one person may do to another's things (issue 15, item 13), as the declarations decide it: another's API
key, webhook deliveries (payloads and receivers' response bodies), another's export and report files."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from support import add_user, create_api_key, error_code, gql, register
from workers.settings import run_worker


async def test_a_member_revokes_only_the_keys_they_created(client, runtime, settings):
    owner = await register(client)
    _, owners_key = await create_api_key(client, owner, "owner's")
    _, member = await add_user(runtime, settings, owner, "member")
    _, admin = await add_user(runtime, settings, owner, "admin")
    mine = (await gql(client, "CreateApiKey", {"name": "member's"}, token=member))["data"]["createApiKey"]["apiKey"]
    refused = await gql(client, "RevokeApiKey", {"id": owners_key}, token=member)
    assert error_code(refused) == "FORBIDDEN" and "owner or admin" in refused["errors"][0]["message"]
    keys = (await gql(client, "ApiKeys", {}, token=owner.token))["data"]["apiKeys"]["edges"]
    assert {k["node"]["id"]: k["node"]["revokedAt"] for k in keys}[owners_key] is None
    assert (await gql(client, "RevokeApiKey", {"id": mine["id"]}, token=member))["data"]["revokeApiKey"]["revokedAt"]
    assert (await gql(client, "RevokeApiKey", {"id": owners_key}, token=admin))["data"]["revokeApiKey"]["revokedAt"]
    # another organisation's key is still simply not found
    stranger = await register(client)
    assert error_code(await gql(client, "RevokeApiKey", {"id": owners_key}, token=stranger.token)) == "NOT_FOUND"


async def test_webhook_deliveries_are_for_owners_and_admins(client, runtime, settings):
    owner = await register(client)
    _, member = await add_user(runtime, settings, owner, "member")
    _, admin = await add_user(runtime, settings, owner, "admin")
    assert error_code(await gql(client, "WebhookDeliveries", {}, token=member)) == "FORBIDDEN"
    assert error_code(await gql(client, "WebhookDelivery", {"id": "dlv_x"}, token=member)) == "FORBIDDEN"
    assert "errors" not in await gql(client, "WebhookDeliveries", {}, token=admin)
    # members still see the endpoints (never their secrets)
    assert "errors" not in await gql(client, "WebhookEndpoints", {}, token=member)


def _local(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


async def test_an_export_file_is_for_its_requester_owners_and_admins(client, runtime, settings):
    owner = await register(client)
    _, member = await add_user(runtime, settings, owner, "member")
    _, admin = await add_user(runtime, settings, owner, "admin")
    started = await gql(client, "StartExport", {"input": {"dataset": "ACTIVITY", "format": "CSV"}}, token=owner.token)
    job = started["data"]["startExport"]
    pending = await gql(client, "StartExport", {"input": {"dataset": "ACTIVITY", "format": "CSV"}}, token=owner.token)
    await asyncio.wait_for(run_worker(runtime, burst=True), 120)
    path = f"/api/v1/exports/{job['id']}"

    seen = (await gql(client, "ExportJob", {"id": job["id"]}, token=member))["data"]["exportJob"]
    assert seen["status"] == "READY" and seen["downloadUrl"] is None  # the job, not its file
    assert (await client.get(path, headers={"Authorization": f"Bearer {member}"})).json()["downloadUrl"] is None
    assert (await client.get(f"{path}/download", headers={"Authorization": f"Bearer {member}"})).status_code == 404

    for token in (owner.token, admin):
        link = (await gql(client, "ExportJob", {"id": job["id"]}, token=token))["data"]["exportJob"]["downloadUrl"]
        assert link and (await client.get(_local(link))).status_code == 200
        assert (await client.get(f"{path}/download", headers={"Authorization": f"Bearer {token}"})).status_code == 200

    # a member's own export is theirs
    own = await gql(client, "StartExport", {"input": {"dataset": "ACTIVITY", "format": "CSV"}}, token=member)
    await asyncio.wait_for(run_worker(runtime, burst=True), 120)
    mine = (await gql(client, "ExportJob", {"id": own["data"]["startExport"]["id"]}, token=member))["data"]
    assert mine["exportJob"]["downloadUrl"]
    # cancelling: NOT_FOUND/CONFLICT rules as before, FORBIDDEN for another's export below an admin
    pending_id = pending["data"]["startExport"]["id"]
    async with runtime.db.engine.begin() as conn:
        import sqlalchemy as sa

        await conn.execute(sa.text("UPDATE export_jobs SET status = 'PENDING' WHERE id = :id"), {"id": pending_id})
    assert error_code(await gql(client, "CancelExport", {"id": pending_id}, token=member)) == "FORBIDDEN"
    assert (await gql(client, "CancelExport", {"id": pending_id}, token=admin))["data"]["cancelExport"]


async def test_a_report_file_is_for_its_requester_owners_and_admins(client, runtime, settings):
    owner = await register(client)
    _, member = await add_user(runtime, settings, owner, "member")
    _, admin = await add_user(runtime, settings, owner, "admin")
    now = datetime.now(UTC)
    window = {"from": (now - timedelta(hours=1)).isoformat(), "to": (now + timedelta(hours=1)).isoformat()}
    requested = await gql(
        client, "RequestReport", {"input": {**window, "type": "AUDIT_INTEGRITY", "format": "JSON"}}, token=owner.token
    )
    report_id = requested["data"]["requestReport"]["id"]
    await asyncio.wait_for(run_worker(runtime, burst=True), 120)
    path = f"/api/v1/reports/{report_id}/download"

    seen = (await gql(client, "Report", {"id": report_id}, token=member))["data"]["report"]
    assert seen["status"] == "READY" and seen["downloadUrl"] is None
    assert (await client.get(path, headers={"Authorization": f"Bearer {member}"})).status_code == 404
    for token in (owner.token, admin):
        link = (await gql(client, "Report", {"id": report_id}, token=token))["data"]["report"]["downloadUrl"]
        assert link and (await client.get(_local(link))).status_code == 200
        assert (await client.get(path, headers={"Authorization": f"Bearer {token}"})).status_code == 200


async def test_getters_answer_unauthenticated_without_credentials(client):
    """Single-item getters used to swallow every error into null: without credentials they now say so, and
    with credentials an unknown id is still null."""
    owner = await register(client)
    for op in ("Alert", "Policy", "Report", "AuditLog", "Agent", "ExportJob", "WebhookEndpoint"):
        variables = {"id": "x_unknown", "number": 1, "against": 1}
        assert error_code(await gql(client, op, variables)) == "UNAUTHENTICATED", op
        answer = await gql(client, op, variables, token=owner.token)
        assert "errors" not in answer and next(iter(answer["data"].values())) is None, (op, answer)
