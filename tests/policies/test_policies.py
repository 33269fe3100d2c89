"""Policies: versions as immutable snapshots, restore, diff, attach → records checked under that version."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from support import create_api_key, error_code, gql, register

EMAIL = {"name": "Emails", "kind": "PII", "config": {"types": ["email"]}, "severity": "MEDIUM"}
CARDS = {"name": "Cards", "kind": "PII", "config": {"types": ["credit_card"]}, "severity": "HIGH", "action": "BLOCK"}


async def _policy(client, account, name="Support policy", rules=None):
    result = await gql(
        client, "CreatePolicy", {"input": {"name": name, "rules": rules or [EMAIL]}}, token=account.token
    )
    assert "errors" not in result, result
    return result["data"]["createPolicy"]


async def _agent(client, account, name="support-bot"):
    return (await gql(client, "CreateAgent", {"input": {"name": name}}, token=account.token))["data"]["createAgent"][
        "id"
    ]


async def _count(runtime, table):
    async with runtime.db.engine.connect() as conn:
        return int((await conn.execute(sa.text(f"SELECT count(*) FROM {table}"))).scalar_one())


async def test_versions_restore_and_diff(client, runtime):
    account = await register(client)
    policy = await _policy(client, account)
    assert policy["currentVersion"]["number"] == 1 and policy["currentVersion"]["rules"][0]["key"] == "emails"
    v2 = await gql(
        client,
        "CreatePolicyVersion",
        {"policyId": policy["id"], "rules": [{**EMAIL, "severity": "HIGH"}, CARDS], "note": "stricter"},
        token=account.token,
    )
    assert v2["data"]["createPolicyVersion"]["number"] == 2
    v3 = await gql(client, "RestorePolicyVersion", {"policyId": policy["id"], "versionNumber": 1}, token=account.token)
    restored = v3["data"]["restorePolicyVersion"]
    assert restored["number"] == 3 and restored["note"] == "restored from version 1"
    assert [r["key"] for r in restored["rules"]] == ["emails"]
    assert restored["rules"][0]["id"] != policy["currentVersion"]["rules"][0]["id"]  # a new snapshot

    read = await gql(client, "Policy", {"id": policy["id"], "number": 2, "against": 1}, token=account.token)
    detail = read["data"]["policy"]
    assert detail["currentVersion"]["number"] == 3
    assert [e["node"]["number"] for e in detail["versions"]["edges"]] == [3, 2, 1]
    diff = detail["version"]["diff"]
    assert [r["key"] for r in diff["added"]] == ["cards"] and diff["removed"] == []
    assert diff["changed"][0]["key"] == "emails" and diff["changed"][0]["fields"] == ["severity"]

    async with runtime.db.engine.connect() as conn:  # versions cannot be edited behind the API's back either
        with pytest.raises(DBAPIError, match="immutable"):
            await conn.execute(sa.text("UPDATE policy_versions SET note = 'x'"))
    actions = await gql(client, "Activity", {"filter": {"targetType": ["policy"]}}, token=account.token)
    assert [e["node"]["action"] for e in actions["data"]["activity"]["edges"]] == [
        "policy.version_restored",
        "policy.version_created",
        "policy.created",
    ]


async def test_concurrent_versions_get_distinct_numbers(client):
    account = await register(client)
    policy = await _policy(client, account)
    results = await asyncio.gather(
        *(
            gql(
                client,
                "CreatePolicyVersion",
                {"policyId": policy["id"], "rules": [EMAIL], "note": f"n{i}"},
                token=account.token,
            )
            for i in range(4)
        )
    )
    numbers = sorted(r["data"]["createPolicyVersion"]["number"] for r in results)
    assert numbers == [2, 3, 4, 5]


async def test_attached_policy_checks_the_agents_records(client, runtime):
    account = await register(client)
    agent_id = await _agent(client, account)
    other_agent = await _agent(client, account, "other-bot")
    policy = await _policy(client, account, rules=[EMAIL, CARDS])
    attached = await gql(client, "AttachPolicy", {"policyId": policy["id"], "agentId": agent_id}, token=account.token)
    assert [a["id"] for a in attached["data"]["attachPolicy"]["agents"]] == [agent_id]
    again = await gql(client, "AttachPolicy", {"policyId": policy["id"], "agentId": agent_id}, token=account.token)
    assert "errors" not in again  # idempotent

    prompt = "card 4111 1111 1111 1111 for a@example.com"
    mine = await gql(
        client, "LogEvent", {"input": {"action": "a", "prompt": prompt, "agentId": agent_id}}, token=account.token
    )
    theirs = await gql(
        client, "LogEvent", {"input": {"action": "a", "prompt": prompt, "agentId": other_agent}}, token=account.token
    )
    assert mine["data"]["logEvent"]["governanceStatus"] == "blocked"
    assert theirs["data"]["logEvent"]["governanceStatus"] is None  # the policy is not attached to it
    alerts = (await gql(client, "Alerts", {}, token=account.token))["data"]["alerts"]["edges"]
    assert {(a["node"]["ruleName"], a["node"]["policyId"], a["node"]["policyVersion"]) for a in alerts} == {
        ("Emails", policy["id"], 1),
        ("Cards", policy["id"], 1),
    }

    # a new version applies to the next record at once
    await gql(client, "CreatePolicyVersion", {"policyId": policy["id"], "rules": [EMAIL]}, token=account.token)
    later = await gql(
        client, "LogEvent", {"input": {"action": "a", "prompt": prompt, "agentId": agent_id}}, token=account.token
    )
    assert later["data"]["logEvent"]["governanceStatus"] is None
    newest = (await gql(client, "Alerts", {"first": 1}, token=account.token))["data"]["alerts"]["edges"][0]["node"]
    assert newest["policyVersion"] == 2 and newest["ruleName"] == "Emails"

    await gql(client, "DetachPolicy", {"policyId": policy["id"], "agentId": agent_id}, token=account.token)
    before = await _count(runtime, "alerts")
    await gql(
        client, "LogEvent", {"input": {"action": "a", "prompt": prompt, "agentId": agent_id}}, token=account.token
    )
    assert await _count(runtime, "alerts") == before


async def test_delete_keeps_versions_and_detaches(client, runtime):
    account = await register(client)
    agent_id = await _agent(client, account)
    policy = await _policy(client, account)
    await gql(client, "AttachPolicy", {"policyId": policy["id"], "agentId": agent_id}, token=account.token)
    deleted = await gql(client, "DeletePolicy", {"id": policy["id"]}, token=account.token)
    assert deleted["data"]["deletePolicy"] == policy["id"]
    assert await _count(runtime, "policy_attachments") == 0
    assert await _count(runtime, "policy_versions") == 1
    assert (await gql(client, "Policy", {"id": policy["id"], "number": 1, "against": 1}, token=account.token))["data"][
        "policy"
    ] is None
    reuse = await _policy(client, account)  # the name is free again
    assert reuse["id"] != policy["id"]


async def test_clone_pack_and_rejections(client, runtime):
    account = await register(client)
    secret, _ = await create_api_key(client, account)
    cloned = await gql(client, "ClonePack", {"packId": "hipaa", "name": "Our HIPAA"}, token=account.token)
    rules = cloned["data"]["clonePack"]["currentVersion"]["rules"]
    assert {r["key"] for r in rules} >= {"phi-identifiers", "secrets"}
    before = await _count(runtime, "policies")
    cases = [
        ({"input": {"name": "Our HIPAA", "rules": [EMAIL]}}, "CONFLICT"),
        ({"input": {"name": "our hipaa", "rules": [EMAIL]}}, "CONFLICT"),
        ({"input": {"name": "Empty", "rules": []}}, "BAD_USER_INPUT"),
        ({"input": {"name": "", "rules": [EMAIL]}}, "BAD_USER_INPUT"),
        (
            {"input": {"name": "Bad", "rules": [{"name": "x", "kind": "PATTERN", "config": {"pattern": "(a"}}]}},
            "BAD_USER_INPUT",
        ),
    ]
    for variables, code in cases:
        assert error_code(await gql(client, "CreatePolicy", variables, token=account.token)) == code, variables
    assert (
        error_code(await gql(client, "CreatePolicy", {"input": {"name": "K", "rules": [EMAIL]}}, api_key=secret))
        == "FORBIDDEN"
    )
    assert (
        error_code(await gql(client, "ClonePack", {"packId": "sox", "name": "x"}, token=account.token)) == "NOT_FOUND"
    )
    assert await _count(runtime, "policies") == before


async def test_another_organisations_policies_are_invisible(client):
    alice = await register(client, org="Alice")
    mallory = await register(client, org="Mallory")
    policy = await _policy(client, alice)
    mallory_agent = await _agent(client, mallory)
    alice_agent = await _agent(client, alice)
    assert (await gql(client, "Policies", {}, token=mallory.token))["data"]["policies"]["edges"] == []
    for operation, variables in [
        ("CreatePolicyVersion", {"policyId": policy["id"], "rules": [EMAIL]}),
        ("RestorePolicyVersion", {"policyId": policy["id"], "versionNumber": 1}),
        ("AttachPolicy", {"policyId": policy["id"], "agentId": mallory_agent}),
        ("DeletePolicy", {"id": policy["id"]}),
    ]:
        assert error_code(await gql(client, operation, variables, token=mallory.token)) == "NOT_FOUND", operation
    mine = await _policy(client, mallory, name="Mallory policy")
    stolen = await gql(client, "AttachPolicy", {"policyId": mine["id"], "agentId": alice_agent}, token=mallory.token)
    assert error_code(stolen) == "NOT_FOUND"
