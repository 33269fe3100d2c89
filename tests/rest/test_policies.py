"""REST /api/v1/policies: the fourteen endpoints of seed 002 with its examples verbatim (ids aside)."""

from __future__ import annotations

from support import register

RULE = {"name": "No SSN", "kind": "PII", "config": {"types": ["ssn"]}, "severity": "high"}


async def test_the_fourteen_policy_endpoints(client):
    account = await register(client)
    bearer = {"Authorization": f"Bearer {account.token}"}
    agent = (await client.post("/api/v1/agents", json={"name": "writer-agent"}, headers=bearer)).json()

    made = await client.post("/api/v1/policies", json={"name": "Base", "rules": [RULE]}, headers=bearer)
    assert made.status_code == 201, made.text
    policy_id = made.json()["id"]
    assert made.json()["currentVersion"] == 1
    cloned = await client.post(
        "/api/v1/policies/clone-pack", json={"packId": "hipaa", "name": "HIPAA Policy v1"}, headers=bearer
    )
    assert cloned.status_code == 201 and cloned.json()["name"] == "HIPAA Policy v1"
    listed = (await client.get("/api/v1/policies", headers=bearer)).json()["policies"]
    assert {p["id"] for p in listed} == {policy_id, cloned.json()["id"]}
    assert (await client.get("/api/v1/policies/analytics", headers=bearer)).status_code == 200
    assert (await client.get(f"/api/v1/policies/{policy_id}", headers=bearer)).json()["name"] == "Base"
    analytics = await client.get(f"/api/v1/policies/{policy_id}/analytics?from=2026-01-01T00:00:00Z", headers=bearer)
    assert analytics.status_code == 200 and "recordsEvaluated" in analytics.json()

    v2 = await client.post(
        f"/api/v1/policies/{policy_id}/versions",
        json={"rules": [RULE, {**RULE, "name": "Two"}], "note": "more"},
        headers=bearer,
    )
    assert v2.status_code == 201 and v2.json()["number"] == 2
    versions = (await client.get(f"/api/v1/policies/{policy_id}/versions", headers=bearer)).json()
    assert [v["number"] for v in versions] == [2, 1]
    v1_id = versions[1]["id"]
    assert (await client.get(f"/api/v1/policies/{policy_id}/versions/{v1_id}", headers=bearer)).json()["number"] == 1
    restored = await client.post(f"/api/v1/policies/{policy_id}/versions/{v1_id}/restore", headers=bearer)
    assert restored.status_code == 201 and restored.json()["number"] == 3 and len(restored.json()["rules"]) == 1
    assert (await client.get(f"/api/v1/policies/{policy_id}/versions/polv_nope", headers=bearer)).status_code == 404

    patched = await client.patch(f"/api/v1/policies/{policy_id}", json={"description": "d"}, headers=bearer)
    assert patched.status_code == 200 and patched.json()["description"] == "d"
    attached = await client.post(f"/api/v1/policies/{policy_id}/agents", json={"agentId": agent["id"]}, headers=bearer)
    assert attached.status_code == 200, attached.text
    detached = await client.request(
        "DELETE", f"/api/v1/policies/{policy_id}/agents", json={"agentId": agent["id"]}, headers=bearer
    )
    assert detached.status_code == 200
    bad = await client.post(f"/api/v1/policies/{policy_id}/agents", json={"agent": agent["id"]}, headers=bearer)
    assert bad.status_code == 400 and bad.json()["accepted"] == ["agentId"]
    assert (await client.delete(f"/api/v1/policies/{policy_id}", headers=bearer)).json() == {
        "id": policy_id,
        "deleted": True,
    }
    assert (await client.get(f"/api/v1/policies/{policy_id}", headers=bearer)).status_code == 404
