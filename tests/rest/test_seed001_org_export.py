"""Seed 001 (an organisation's audit-log CSV export): GET /v1/organizations/{organization_id}/audit-log/export
with its filters and columns, at most 10,000 rows, `audit-log-{org_id}-{date}.csv`; its cURL example verbatim
(host and token aside); another organisation's id is 404; departments, which Agentrail has none of, are a 400."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

from app.exports import routes as export_routes
from support import create_api_key, register, rest_error

# the document's table of columns, in its order
HEADER = "Timestamp, Entity Type, Entity Name, Action, Actor Name, Actor Email, Target Name, Previous Value, New Value"
HEADER = HEADER.split(", ")


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _table(response) -> list[list[str]]:
    assert response.status_code == 200, response.text
    return list(csv.reader(io.StringIO(response.text)))


async def _trail(client, account) -> str:
    agent = (await client.post("/api/v1/agents", json={"name": "writer"}, headers=_auth(account.token))).json()
    await client.patch(f"/api/v1/agents/{agent['id']}", json={"name": "editor"}, headers=_auth(account.token))
    policy = await client.post(
        "/api/v1/policies",
        json={"name": "Refunds", "rules": [{"name": "No SSN", "kind": "PII", "config": {"types": ["ssn"]}}]},
        headers=_auth(account.token),
    )
    attached = await client.post(
        f"/api/v1/policies/{policy.json()['id']}/agents", json={"agentId": agent["id"]}, headers=_auth(account.token)
    )
    assert attached.status_code == 200, attached.text
    return agent["id"]


async def test_curl_example_and_columns(client):
    owner = await register(client, org="Aitronos")
    await _trail(client, owner)
    path = f"/v1/organizations/{owner.org_id}/audit-log/export"

    # curl -s -X GET ".../v1/organizations/org_abc123/audit-log/export?from_date=2025-01-01&to_date=2025-12-31"
    #   -H "Authorization: Bearer YOUR_ACCESS_TOKEN" -o audit-log.csv
    example = await client.get(f"{path}?from_date=2025-01-01&to_date=2025-12-31", headers=_auth(owner.token))
    assert example.headers["content-type"].startswith("text/csv")
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert example.headers["content-disposition"] == f'attachment; filename="audit-log-{owner.org_id}-{today}.csv"'
    assert _table(example) == [HEADER]  # nothing happened in 2025

    rows = _table(await client.get(path, headers=_auth(owner.token)))
    assert rows[0] == HEADER
    by_action = {row[3]: row for row in rows[1:]}
    assert {"organization.created", "agent.created", "agent.updated", "policy.created", "policy.attached"} <= set(
        by_action
    )
    updated = by_action["agent.updated"]
    assert updated[1] == "agent" and updated[2] == "editor"
    assert updated[4] == "Test User" and updated[5] == owner.email
    assert updated[7] == '{"name": "writer"}' and updated[8] == '{"name": "editor"}'
    assert updated[0].endswith("Z") and datetime.fromisoformat(updated[0].replace("Z", "+00:00"))
    attached = by_action["policy.attached"]
    assert attached[1] == "policy" and attached[2] == "Refunds" and attached[6] == "editor"  # the agent


async def test_filters(client):
    owner = await register(client)
    agent_id = await _trail(client, owner)
    path = f"/v1/organizations/{owner.org_id}/audit-log/export"

    async def actions(**filters: str) -> list[str]:
        return [row[3] for row in _table(await client.get(path, params=filters, headers=_auth(owner.token)))[1:]]

    assert set(await actions(entity_type="agent")) == {"agent.created", "agent.updated"}
    assert await actions(entity_type="agent", action_type="updated") == ["agent.updated"]
    assert set(await actions(action_type="created")) == {"organization.created", "agent.created", "policy.created"}
    assert await actions(action_type="assigned") == ["policy.attached"]  # assigned: a policy to an agent
    assert set(await actions(target_id=agent_id)) == {"agent.created", "agent.updated"}
    assert len(await actions(actor_id=owner.user_id)) >= 5 and await actions(actor_id="usr_nobody") == []
    assert set(await actions(search_term="refunds")) == {"policy.created", "policy.attached"}
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert len(await actions(from_date=today, to_date=today)) >= 5  # to_date includes its day
    assert await actions(to_date="2025-12-31") == []
    assert await actions(entity_type="AGENT") == await actions(entity_type="agent")  # any case

    # at most 10,000 rows (the newest)
    export_routes.ORGANIZATION_EXPORT_MAX_ROWS, saved = 2, export_routes.ORGANIZATION_EXPORT_MAX_ROWS
    try:
        assert await actions() == ["policy.attached", "policy.created"]
    finally:
        export_routes.ORGANIZATION_EXPORT_MAX_ROWS = saved


async def test_rejections_and_tenancy(client):
    owner = await register(client)
    other = await register(client)
    key, _ = await create_api_key(client, owner)
    path = f"/v1/organizations/{owner.org_id}/audit-log/export"
    # another organisation's id, or one that does not exist: 404, as if it were not there
    assert "not found" in rest_error(await client.get(path, headers=_auth(other.token)), 404)["error"]
    rest_error(await client.get("/v1/organizations/org_abc123/audit-log/export", headers=_auth(owner.token)), 404)
    # departments do not exist in Agentrail: a 400 that says so, never ignored
    department = rest_error(await client.get(f"{path}?department_id=dep_1", headers=_auth(owner.token)), 400)
    assert "department" in department["error"] and "no departments" in department["error"]
    entity = rest_error(await client.get(f"{path}?entity_type=department", headers=_auth(owner.token)), 400)
    assert "no departments" in entity["error"]
    for value in ("vector_store", "knowledge_slice", "role"):
        rest_error(await client.get(f"{path}?entity_type={value}", headers=_auth(owner.token)), 400)
    assert (
        "departments"
        in rest_error(await client.get(f"{path}?action_type=reparented", headers=_auth(owner.token)), 400)["error"]
    )
    rest_error(await client.get(f"{path}?from_date=soon", headers=_auth(owner.token)), 400)
    rest_error(await client.get(f"{path}?entity_type=a%20b", headers=_auth(owner.token)), 400)
    unknown = rest_error(await client.get(f"{path}?page=2", headers=_auth(owner.token)), 400)
    assert "from_date" in unknown["error"] and "search_term" in unknown["error"]
    rest_error(await client.get(path), 401)
    rest_error(await client.get(path, headers={"X-API-Key": key}), 403)  # the activity trail is for people
