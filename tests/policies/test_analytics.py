"""Analytics numbers against a hand-built data set."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from support import error_code, gql, register

EMAIL = {"name": "Emails", "kind": "PII", "config": {"types": ["email"]}, "severity": "MEDIUM"}
CARDS = {"name": "Cards", "kind": "PII", "config": {"types": ["credit_card"]}, "severity": "HIGH", "action": "BLOCK"}


async def test_organisation_and_policy_analytics(client):
    account = await register(client)
    bot = (await gql(client, "CreateAgent", {"input": {"name": "bot"}}, token=account.token))["data"]["createAgent"][
        "id"
    ]
    other = (await gql(client, "CreateAgent", {"input": {"name": "other"}}, token=account.token))["data"][
        "createAgent"
    ]["id"]
    policy = (
        await gql(client, "CreatePolicy", {"input": {"name": "P", "rules": [EMAIL, CARDS]}}, token=account.token)
    )["data"]["createPolicy"]
    await gql(client, "AttachPolicy", {"policyId": policy["id"], "agentId": bot}, token=account.token)
    now = datetime.now(UTC)
    records = [
        {"action": "a", "agentId": bot, "prompt": "mail a@example.com"},  # 1 alert
        {"action": "a", "agentId": bot, "prompt": "card 4111 1111 1111 1111, mail b@example.com"},  # 2, blocked
        {"action": "a", "agentId": bot, "prompt": "clean"},
        {"action": "a", "agentId": other, "prompt": "mail c@example.com"},  # not attached: no alert
        {"action": "a", "agentId": other, "prompt": "old", "occurredAt": (now - timedelta(days=40)).isoformat()},
    ]
    assert "errors" not in await gql(client, "LogEvents", {"input": records}, token=account.token)

    org = (await gql(client, "PolicyAnalytics", {}, token=account.token))["data"]["policyAnalytics"]
    assert org["recordsEvaluated"] == 4  # the 40-day-old record is outside the default 30 days
    assert org["violations"] == 3
    assert abs(org["violationRate"] - 2 / 4) < 1e-9 and abs(org["blockRate"] - 1 / 4) < 1e-9
    assert {r["ruleName"]: r["count"] for r in org["byRule"]} == {"Emails": 2, "Cards": 1}
    assert {s["key"]: s["count"] for s in org["bySeverity"]} == {"MEDIUM": 2, "HIGH": 1}
    assert {a["key"]: a["count"] for a in org["byAgent"]} == {bot: 3}
    assert org["byVersion"] == [{"policyId": policy["id"], "version": 1, "count": 3}]
    assert sum(d["records"] for d in org["daily"]) == 4 and sum(d["violations"] for d in org["daily"]) == 3
    assert len(org["daily"]) in (30, 31)

    one = (await gql(client, "OnePolicyAnalytics", {"id": policy["id"]}, token=account.token))["data"]["policy"]
    assert one["analytics"]["recordsEvaluated"] == 3 and one["analytics"]["violations"] == 3

    wide = await gql(client, "PolicyAnalytics", {"from": (now - timedelta(days=50)).isoformat()}, token=account.token)
    assert wide["data"]["policyAnalytics"]["recordsEvaluated"] == 5
    bad = await gql(
        client,
        "PolicyAnalytics",
        {"from": now.isoformat(), "to": (now - timedelta(days=1)).isoformat()},
        token=account.token,
    )
    assert error_code(bad) == "BAD_USER_INPUT"
    too_long = await gql(
        client, "PolicyAnalytics", {"from": (now - timedelta(days=500)).isoformat()}, token=account.token
    )
    assert error_code(too_long) == "BAD_USER_INPUT"


async def test_policy_analytics_count_what_the_policy_evaluated(client):
    """Issue 17.13: a record sent before the policy was attached is not counted; after detaching, the records it
    evaluated stay counted beside their violations; re-attaching counts again from then on."""
    account = await register(client)
    bot = (await gql(client, "CreateAgent", {"input": {"name": "bot"}}, token=account.token))["data"]["createAgent"]
    policy = (await gql(client, "CreatePolicy", {"input": {"name": "P", "rules": [EMAIL]}}, token=account.token))[
        "data"
    ]["createPolicy"]
    ids = {"policyId": policy["id"], "agentId": bot["id"]}

    async def log(*prompts: str) -> None:
        records = [{"action": "a", "agentId": bot["id"], "prompt": p} for p in prompts]
        assert "errors" not in await gql(client, "LogEvents", {"input": records}, token=account.token)

    async def figures() -> tuple[int, int, int]:
        result = await gql(client, "OnePolicyAnalytics", {"id": policy["id"]}, token=account.token)
        data = result["data"]["policy"]["analytics"]
        return data["recordsEvaluated"], data["violations"], sum(d["records"] for d in data["daily"])

    await log("before a@example.com")  # not evaluated by the policy: no alert, not counted
    assert await figures() == (0, 0, 0)
    assert "errors" not in await gql(client, "AttachPolicy", ids, token=account.token)
    await log("x@example.com", "y@example.com", "z@example.com", "clean", "clean", "clean")
    assert await figures() == (6, 3, 6)
    assert "errors" not in await gql(client, "DetachPolicy", ids, token=account.token)
    await log("after q@example.com")
    assert await figures() == (6, 3, 6)  # history stays: 6 evaluated, 3 violations
    assert "errors" not in await gql(client, "AttachPolicy", ids, token=account.token)
    assert "errors" not in await gql(client, "AttachPolicy", ids, token=account.token)  # idempotent: one interval
    await log("again r@example.com")
    assert await figures() == (7, 4, 7)
    org = (await gql(client, "PolicyAnalytics", {}, token=account.token))["data"]["policyAnalytics"]
    assert org["recordsEvaluated"] == 9  # organisation-wide: every record
