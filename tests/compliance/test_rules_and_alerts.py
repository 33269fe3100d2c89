"""Rules, packs, alerts at ingest, resolution, tenancy."""

from __future__ import annotations

import sqlalchemy as sa

from support import create_api_key, error_code, gql, register


async def _count(runtime, table: str) -> int:
    async with runtime.db.engine.connect() as conn:
        return int((await conn.execute(sa.text(f"SELECT count(*) FROM {table}"))).scalar_one())


async def _rule(client, account, **input_):
    result = await gql(client, "CreateComplianceRule", {"input": input_}, token=account.token)
    assert "errors" not in result, result
    return result["data"]["createComplianceRule"]


async def _log(client, account, **fields):
    result = await gql(client, "LogEvent", {"input": {"action": "llm_call", **fields}}, token=account.token)
    assert "errors" not in result, result
    return result["data"]["logEvent"]


async def test_rule_crud_and_rejections(client, runtime):
    account = await register(client)
    rule = await _rule(client, account, name="No project codes", kind="PATTERN",
                       config={"pattern": r"PRJ-\d{4}"}, severity="HIGH", appliesTo=["PROMPT"])  # fmt: skip
    assert rule["kind"] == "PATTERN" and rule["enabled"] is True and rule["action"] == "ALERT"
    updated = await gql(client, "UpdateComplianceRule", {"id": rule["id"], "input": {"enabled": False,
                        "severity": "LOW"}}, token=account.token)  # fmt: skip
    assert updated["data"]["updateComplianceRule"]["enabled"] is False
    listed = await gql(client, "ComplianceRules", token=account.token)
    assert [r["id"] for r in listed["data"]["complianceRules"]] == [rule["id"]]

    rejections = [
        {"name": "x", "kind": "PATTERN", "config": {"pattern": "(a"}},
        {"name": "x", "kind": "PATTERN", "config": {"pattern": r"(\w)\1"}},
        {"name": "", "kind": "KEYWORDS", "config": {"keywords": ["a"]}},
        {"name": "x", "kind": "KEYWORDS", "config": {"keywords": "not a list"}},
        {"name": "x", "kind": "THRESHOLD", "config": {"path": "prompt", "operator": ">", "value": 1}},
        {"name": "x", "config": {}},
        {"name": "x", "kind": "PII", "config": []},
    ]
    for input_ in rejections:
        result = await gql(client, "CreateComplianceRule", {"input": input_}, token=account.token)
        assert error_code(result) == "BAD_USER_INPUT", input_
    change_kind = await gql(client, "UpdateComplianceRule", {"id": rule["id"], "input": {"kind": "PII"}},
                            token=account.token)  # fmt: skip
    assert error_code(change_kind) == "BAD_USER_INPUT"
    assert await _count(runtime, "compliance_rules") == 1

    deleted = await gql(client, "DeleteComplianceRule", {"id": rule["id"]}, token=account.token)
    assert deleted["data"]["deleteComplianceRule"] == rule["id"]
    again = await gql(client, "DeleteComplianceRule", {"id": rule["id"]}, token=account.token)
    assert error_code(again) == "NOT_FOUND"


async def test_keys_and_members_cannot_change_rules(client):
    account = await register(client)
    secret, _ = await create_api_key(client, account)
    result = await gql(client, "CreateComplianceRule", {"input": {"name": "x", "kind": "PII", "config": {}}},
                       api_key=secret)  # fmt: skip
    assert error_code(result) == "FORBIDDEN"
    assert error_code(await gql(client, "InstallCompliancePack", {"packId": "gdpr"}, api_key=secret)) == "FORBIDDEN"


async def test_packs_install_and_uninstall(client, runtime):
    account = await register(client)
    packs = await gql(client, "CompliancePacks", token=account.token)
    ids = {p["id"]: p for p in packs["data"]["compliancePacks"]}
    assert set(ids) == {"hipaa", "gdpr", "finance"} and not any(p["installed"] for p in ids.values())
    installed = await gql(client, "InstallCompliancePack", {"packId": "finance"}, token=account.token)
    rules = installed["data"]["installCompliancePack"]
    assert len(rules) == len(ids["finance"]["rules"]) and all(r["packId"] == "finance" for r in rules)
    twice = await gql(client, "InstallCompliancePack", {"packId": "finance"}, token=account.token)
    assert error_code(twice) == "CONFLICT"
    unknown = await gql(client, "InstallCompliancePack", {"packId": "sox"}, token=account.token)
    assert error_code(unknown) == "NOT_FOUND"
    assert await _count(runtime, "compliance_rules") == len(rules)
    after = await gql(client, "CompliancePacks", token=account.token)
    assert [p["packId"] for p in after["data"]["installedPacks"]] == ["finance"]
    removed = await gql(client, "UninstallCompliancePack", {"packId": "finance"}, token=account.token)
    assert removed["data"]["uninstallCompliancePack"] == len(rules)
    assert await _count(runtime, "compliance_rules") == 0
    not_installed = await gql(client, "UninstallCompliancePack", {"packId": "finance"}, token=account.token)
    assert error_code(not_installed) == "NOT_FOUND"


async def test_records_raise_alerts_and_block(client, runtime):
    account = await register(client)
    await gql(client, "InstallCompliancePack", {"packId": "finance"}, token=account.token)
    await _rule(client, account, name="Tokens", kind="THRESHOLD",
                config={"path": "metadata.tokens", "operator": ">", "value": 8000})  # fmt: skip
    clean = await _log(client, account, prompt="hello", metadata={"tokens": 10})
    card = await _log(client, account, prompt="charge card 4111 1111 1111 1111 please", traceId="t1",
                      metadata={"tokens": 9000})  # fmt: skip
    assert clean["governanceStatus"] is None
    assert card["governanceStatus"] == "blocked"  # the PAN rule of the finance pack blocks
    assert "4111 1111 1111 1111" in card["prompt"]  # stored as sent: blocking marks, masking is for secrets

    alerts = (await gql(client, "Alerts", {}, token=account.token))["data"]["alerts"]["edges"]
    by_rule = {e["node"]["ruleName"]: e["node"] for e in alerts}
    assert set(by_rule) == {"Primary account numbers", "Tokens"}
    pan = by_rule["Primary account numbers"]
    assert pan["severity"] == "CRITICAL" and pan["action"] == "BLOCK" and pan["excerpt"] == "**** **** **** 1111"
    assert pan["field"] == "prompt" and card["prompt"][pan["startOffset"] : pan["endOffset"]] == "4111 1111 1111 1111"
    assert pan["auditLogId"] == card["id"] and pan["traceId"] == "t1"
    # the sensitive text is nowhere in the alerts table
    async with runtime.db.engine.connect() as conn:
        dump = repr((await conn.execute(sa.text("SELECT * FROM alerts"))).all())
    assert "4111 1111 1111 1111" not in dump

    detail = (await gql(client, "Alert", {"id": pan["id"]}, token=account.token))["data"]["alert"]
    assert detail["auditLog"]["trace"]["alertCount"] == 2 and detail["rule"]["name"] == "Primary account numbers"
    on_record = (await gql(client, "RecordAlerts", {"id": card["id"]}, token=account.token))["data"]["auditLog"]
    assert len(on_record["alerts"]) == 2
    with_alerts = await gql(client, "AuditLogs", {"filter": {"hasAlerts": True}}, token=account.token)
    assert [e["node"]["id"] for e in with_alerts["data"]["auditLogs"]["edges"]] == [card["id"]]
    filtered = await gql(client, "Alerts", {"filter": {"severity": ["CRITICAL"]}}, token=account.token)
    assert len(filtered["data"]["alerts"]["edges"]) == 1


async def test_rule_changes_apply_to_the_next_record(client, runtime):
    account = await register(client)
    await _log(client, account, prompt="the kill switch")  # no rules yet: nothing, and the empty set is cached
    rule = await _rule(client, account, name="Denied", kind="KEYWORDS", config={"keywords": ["kill switch"]})
    await _log(client, account, prompt="the kill switch")
    assert await _count(runtime, "alerts") == 1
    await gql(client, "UpdateComplianceRule", {"id": rule["id"], "input": {"enabled": False}}, token=account.token)
    await _log(client, account, prompt="the kill switch")
    assert await _count(runtime, "alerts") == 1


async def test_resolve_and_reopen(client, runtime):
    account = await register(client)
    secret, _ = await create_api_key(client, account)
    await _rule(client, account, name="Email", kind="PII", config={"types": ["email"]})
    await _log(client, account, prompt="mail a@example.com")
    [edge] = (await gql(client, "Alerts", {}, token=account.token))["data"]["alerts"]["edges"]
    alert_id = edge["node"]["id"]
    resolved = await gql(client, "ResolveAlert", {"id": alert_id, "note": "expected"}, token=account.token)
    node = resolved["data"]["resolveAlert"]
    assert node["resolved"] is True and node["resolutionNote"] == "expected" and node["resolvedBy"] == account.user_id
    again = await gql(client, "ResolveAlert", {"id": alert_id, "note": "other"}, token=account.token)
    assert again["data"]["resolveAlert"]["resolvedAt"] == node["resolvedAt"]  # idempotent
    open_ = await gql(client, "Alerts", {"filter": {"resolved": False}}, token=account.token)
    assert open_["data"]["alerts"]["edges"] == []
    reopened = await gql(client, "ReopenAlert", {"id": alert_id}, token=account.token)
    assert reopened["data"]["reopenAlert"]["resolved"] is False
    assert error_code(await gql(client, "ResolveAlert", {"id": alert_id}, api_key=secret)) == "FORBIDDEN"
    assert error_code(await gql(client, "ResolveAlert", {"id": "alrt_nope"}, token=account.token)) == "NOT_FOUND"


async def test_another_organisations_rules_and_alerts_are_invisible(client):
    alice = await register(client, org="Alice")
    mallory = await register(client, org="Mallory")
    rule = await _rule(client, alice, name="Email", kind="PII", config={"types": ["email"]})
    await _log(client, alice, prompt="mail a@example.com")
    await _log(client, mallory, prompt="mail a@example.com")  # Alice's rule does not apply to Mallory
    assert (await gql(client, "Alerts", {}, token=mallory.token))["data"]["alerts"]["edges"] == []
    [edge] = (await gql(client, "Alerts", {}, token=alice.token))["data"]["alerts"]["edges"]
    assert (await gql(client, "Alert", {"id": edge["node"]["id"]}, token=mallory.token))["data"]["alert"] is None
    steal = await gql(client, "ResolveAlert", {"id": edge["node"]["id"]}, token=mallory.token)
    assert error_code(steal) == "NOT_FOUND"
    assert (await gql(client, "ComplianceRules", token=mallory.token))["data"]["complianceRules"] == []
    edit = await gql(client, "UpdateComplianceRule", {"id": rule["id"], "input": {"enabled": False}},
                     token=mallory.token)  # fmt: skip
    assert error_code(edit) == "NOT_FOUND"
