"""REST agents, compliance rules and packs, alerts as seed 002 documents them, with its examples verbatim
(host, keys and ids aside), and their rejections (nothing written)."""

from __future__ import annotations

from support import create_api_key, register


async def _bearer(client):
    account = await register(client, org="Acme Corp")
    return account, {"Authorization": f"Bearer {account.token}"}


async def test_agents_crud_as_documented(client):
    account, bearer = await _bearer(client)
    made = await client.post(
        "/api/v1/agents",
        json={"name": "writer-agent", "metadata": {"version": "1.0", "team": "content"}},
        headers=bearer,
    )
    assert made.status_code == 201, made.text
    agent = made.json()
    assert agent["id"].startswith("agent_") and agent["name"] == "writer-agent"
    assert agent["organizationId"] == account.org_id and agent["organizationId"].startswith("org_")
    assert agent["metadata"] == {"version": "1.0", "team": "content"}
    assert agent["createdAt"].endswith("Z")
    listed = (await client.get("/api/v1/agents", headers=bearer)).json()
    assert [a["id"] for a in listed["agents"]] == [agent["id"]] and listed["total"] == 1
    assert (await client.get(f"/api/v1/agents/{agent['id']}", headers=bearer)).json()["name"] == "writer-agent"
    patched = await client.patch(f"/api/v1/agents/{agent['id']}", json={"name": "editor-agent"}, headers=bearer)
    assert patched.status_code == 200 and patched.json()["name"] == "editor-agent"
    # its id as agentId in any audit log links the log to it
    secret, _ = await create_api_key(client, account)
    log = await client.post(
        "/api/v1/audit-logs", json={"action": "x", "agentId": agent["id"]}, headers={"X-API-Key": secret}
    )
    assert log.json()["agentId"] == agent["id"]

    unknown = await client.post("/api/v1/agents", json={"name": "a", "colour": "red"}, headers=bearer)
    assert unknown.status_code == 400 and "colour" in unknown.json()["error"] and "name" in unknown.json()["accepted"]
    assert (await client.post("/api/v1/agents", json={"name": "editor-agent"}, headers=bearer)).status_code == 409
    assert (await client.post("/api/v1/agents", json={"name": "k"}, headers={"X-API-Key": secret})).status_code == 403
    assert (await client.get("/api/v1/agents", headers={"X-API-Key": secret})).status_code == 200
    assert (await client.delete(f"/api/v1/agents/{agent['id']}", headers=bearer)).status_code == 200
    gone = await client.get(f"/api/v1/agents/{agent['id']}", headers=bearer)
    assert gone.status_code == 200 and gone.json()["deletedAt"]  # deleted agents stay readable (as GraphQL `agent`)
    missing = await client.get("/api/v1/agents/agent_nope", headers=bearer)
    assert missing.status_code == 404 and missing.json() == {
        "error": "agent not found",
        "status": 404,
        "code": "NOT_FOUND",
    }
    assert (await client.get("/api/v1/agents")).json()["status"] == 401


async def test_compliance_rules_packs_and_alerts_as_documented(client):
    account, bearer = await _bearer(client)
    packs = (await client.get("/api/v1/compliance-rules/packs", headers=bearer)).json()
    assert {"hipaa", "finance", "gdpr"} <= {p["id"] for p in packs}
    installed = await client.post("/api/v1/compliance-rules/packs", json={"packId": "gdpr"}, headers=bearer)
    assert installed.status_code == 201, installed.text
    assert [
        p["packId"] for p in (await client.get("/api/v1/compliance-rules/packs/installed", headers=bearer)).json()
    ] == ["gdpr"]
    again = await client.post("/api/v1/compliance-rules/packs", json={"packId": "gdpr"}, headers=bearer)
    assert again.status_code == 409

    rule = await client.post(
        "/api/v1/compliance-rules",
        json={"name": "No secrets word", "kind": "KEYWORDS", "config": {"keywords": ["topsecret"]}, "severity": "high"},
        headers=bearer,
    )
    assert rule.status_code == 201, rule.text
    rule_id = rule.json()["id"]
    assert rule.json()["kind"] == "keywords" and rule.json()["severity"] == "HIGH"
    assert (await client.get(f"/api/v1/compliance-rules/{rule_id}", headers=bearer)).json()["name"] == "No secrets word"
    changed = await client.patch(f"/api/v1/compliance-rules/{rule_id}", json={"enabled": False}, headers=bearer)
    assert changed.status_code == 200 and changed.json()["enabled"] is False
    bad = await client.post("/api/v1/compliance-rules", json={"name": "x", "kind": "astrology"}, headers=bearer)
    assert bad.status_code == 400 and "kind" in bad.json()["error"]
    rules = (await client.get("/api/v1/compliance-rules", headers=bearer)).json()
    assert rule_id in {r["id"] for r in rules}
    assert (await client.delete(f"/api/v1/compliance-rules/{rule_id}", headers=bearer)).status_code == 204
    assert (await client.get(f"/api/v1/compliance-rules/{rule_id}", headers=bearer)).status_code == 404

    # a violation raises an alert: list ?resolved=false, get, resolve
    secret, _ = await create_api_key(client, account)
    await client.post(
        "/api/v1/compliance-rules",
        json={"name": "SSN", "kind": "pii", "config": {"types": ["ssn"]}, "severity": "CRITICAL"},
        headers=bearer,
    )
    logged = await client.post(
        "/api/v1/audit-logs",
        json={"action": "guardrail_check", "prompt": "Draft email containing SSN: 123-45-6789"},
        headers={"X-API-Key": secret},
    )
    assert logged.status_code == 201
    open_alerts = (await client.get("/api/v1/alerts?resolved=false", headers=bearer)).json()["alerts"]
    assert open_alerts and all(not a["resolved"] for a in open_alerts)
    alert_id = open_alerts[0]["id"]
    assert (await client.get(f"/api/v1/alerts/{alert_id}", headers=bearer)).json()["id"] == alert_id
    resolved = await client.patch(f"/api/v1/alerts/{alert_id}/resolve", headers=bearer)
    assert resolved.status_code == 200 and resolved.json()["resolved"] is True and resolved.json()["resolvedAt"]
    still_open = (await client.get("/api/v1/alerts?resolved=false", headers=bearer)).json()["alerts"]
    assert alert_id not in {a["id"] for a in still_open}
    assert (await client.get("/api/v1/alerts?resolved=maybe", headers=bearer)).status_code == 400
    assert (await client.get("/api/v1/alerts/alrt_nope", headers=bearer)).status_code == 404

    removed = await client.delete("/api/v1/compliance-rules/packs/gdpr", headers=bearer)
    assert removed.status_code == 200 and removed.json()["removedRules"] > 0
