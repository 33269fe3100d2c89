"""An agent's records, traces, alerts and figures, and the agents with open alerts."""

from __future__ import annotations

from support import gql, register


async def test_agent_activity_and_stats(client):
    account = await register(client)
    agent = (await gql(client, "CreateAgent", {"input": {"name": "bot"}}, token=account.token))["data"]["createAgent"]
    quiet = (await gql(client, "CreateAgent", {"input": {"name": "quiet"}}, token=account.token))["data"]["createAgent"]
    await gql(
        client,
        "CreateComplianceRule",
        {"input": {"name": "Email", "kind": "PII", "config": {"types": ["email"]}, "severity": "HIGH"}},
        token=account.token,
    )
    records = [
        {"action": "llm_call", "agentId": agent["id"], "traceId": "t1", "durationMs": 100},
        {"action": "tool_use", "agentId": agent["id"], "traceId": "t1", "durationMs": 300, "status": "ERROR"},
        {"action": "llm_call", "agentId": agent["id"], "traceId": "t2", "durationMs": 200, "prompt": "a@example.com"},
    ]
    assert "errors" not in await gql(client, "LogEvents", {"input": records}, token=account.token)
    result = await gql(client, "AgentActivity", {"id": agent["id"]}, token=account.token)
    data = result["data"]["agent"]
    assert len(data["auditLogs"]["edges"]) == 3
    assert sorted(e["node"]["traceId"] for e in data["traces"]["edges"]) == ["t1", "t2"]
    assert [e["node"]["severity"] for e in data["alerts"]["edges"]] == ["HIGH"]
    stats = data["stats"]
    assert (stats["records"], stats["traces"], stats["errors"]) == (3, 2, 1)
    assert abs(stats["errorRate"] - 1 / 3) < 1e-9 and stats["durationP50"] == 200
    assert {s["severity"]: s["count"] for s in stats["alertsBySeverity"]}["HIGH"] == 1

    with_open = await gql(client, "AgentsWithOpenAlerts", {"hasOpenAlerts": True}, token=account.token)
    assert [e["node"]["id"] for e in with_open["data"]["agents"]["edges"]] == [agent["id"]]
    without = await gql(client, "AgentsWithOpenAlerts", {"hasOpenAlerts": False}, token=account.token)
    assert [e["node"]["id"] for e in without["data"]["agents"]["edges"]] == [quiet["id"]]
