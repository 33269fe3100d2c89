"""PII that never lands: REDACT rules and the organisation's redact-PII default store what a rule found
redacted, in the ingest transaction; the original is nowhere in the database, the trail still verifies."""

from __future__ import annotations

import sqlalchemy as sa

from app.audit import sealing, search
from app.compliance.engine import RuleSpec, compile_rules, evaluate, redact_record
from support import add_user, create_api_key, error_code, gql, register

SSN = "123-45-6789"
EMAIL = "jane.roe@example.org"
CARD = "4111 1111 1111 1111"


async def _everything_stored(runtime) -> str:
    """Every text the database holds for the records and their alerts and search rows."""
    async with runtime.db.engine.connect() as conn:
        rows = await conn.execute(
            sa.text(
                "SELECT coalesce(string_agg(t::text, ' '), '') FROM ("
                " SELECT a::text AS t FROM audit_logs a UNION ALL SELECT x::text FROM alerts x"
                " UNION ALL SELECT s::text FROM audit_search s) q"
            )
        )
        return str(rows.scalar_one())


async def _rule(client, account, **input_):
    result = await gql(client, "CreateComplianceRule", {"input": input_}, token=account.token)
    assert "errors" not in result, result
    return result["data"]["createComplianceRule"]


async def _log(client, token, **fields):
    result = await gql(client, "LogEvent", {"input": {"action": "llm_call", **fields}}, token=token)
    assert "errors" not in result, result
    return result["data"]["logEvent"]


async def test_a_redact_rule_stores_what_it_found_redacted(client, runtime):
    account = await register(client)
    rule = await _rule(client, account, name="No SSNs or emails", kind="PII", action="REDACT", severity="HIGH",
                       config={"types": ["ssn", "email"]})  # fmt: skip
    assert rule["action"] == "REDACT"
    record = await _log(
        client,
        account.token,
        prompt=f"customer SSN {SSN}, mail {EMAIL}, thanks",
        response="nothing sensitive",
        metadata={"customer": {"ssn": SSN, "notes": [f"write to {EMAIL}", 42, True]}, "count": 3},
    )
    assert SSN not in record["prompt"] and EMAIL not in record["prompt"]
    assert record["prompt"].startswith("customer SSN ***-**-6789, mail ") and record["prompt"].endswith(", thanks")
    assert record["response"] == "nothing sensitive"
    # the JSON keeps its shape and its other values; only the found strings change
    assert record["metadata"]["customer"]["ssn"] == "***-**-6789"
    assert record["metadata"]["customer"]["notes"][1:] == [42, True] and record["metadata"]["count"] == 3
    assert EMAIL not in record["metadata"]["customer"]["notes"][0]

    alerts = await gql(client, "Alerts", token=account.token)
    excerpts = [e["node"]["excerpt"] for e in alerts["data"]["alerts"]["edges"]]
    assert excerpts and all(SSN not in x and EMAIL not in x for x in excerpts)

    assert await search.index_records(runtime.db, account.org_id, [record["id"]]) == 1
    stored = await _everything_stored(runtime)
    assert SSN not in stored and EMAIL not in stored and "123456789" not in stored

    # what is stored is what the checksum and the seal cover
    await sealing.seal_all(runtime.db, runtime.signer)
    verified = await gql(client, "VerifyAuditTrail", token=account.token)
    assert verified["data"]["verifyAuditTrail"]["ok"] is True


async def test_an_alert_rule_keeps_the_original(client, runtime):
    account = await register(client)
    await _rule(client, account, name="SSNs", kind="PII", config={"types": ["ssn"]})
    record = await _log(client, account.token, prompt=f"SSN {SSN}")
    assert record["prompt"] == f"SSN {SSN}"


async def test_redact_is_for_text_rules_only(client, runtime):
    account = await register(client)
    for kind, config in (
        ("THRESHOLD", {"path": "durationMs", "operator": ">", "value": 1}),
        ("ACTION_MATCH", {"actions": ["refund"]}),
    ):
        result = await gql(client, "CreateComplianceRule", {"input": {"name": "x", "kind": kind, "config": config,
                           "action": "REDACT"}}, token=account.token)  # fmt: skip
        assert error_code(result) == "BAD_USER_INPUT", kind
        assert "text" in result["errors"][0]["message"]
    slow = await _rule(client, account, name="slow", kind="THRESHOLD",
                       config={"path": "durationMs", "operator": ">", "value": 1})  # fmt: skip
    changed = await gql(client, "UpdateComplianceRule", {"id": slow["id"], "input": {"action": "REDACT"}},
                        token=account.token)  # fmt: skip
    assert error_code(changed) == "BAD_USER_INPUT"
    keyword = await _rule(client, account, name="codename", kind="KEYWORDS", config={"keywords": ["bluebird"]})
    changed = await gql(client, "UpdateComplianceRule", {"id": keyword["id"], "input": {"action": "REDACT"}},
                        token=account.token)  # fmt: skip
    assert changed["data"]["updateComplianceRule"]["action"] == "REDACT"
    record = await _log(client, account.token, prompt="project Bluebird ships friday")
    assert "luebird" not in record["prompt"] and record["prompt"].endswith(" ships friday")


async def test_the_organisation_default_redacts_every_pii_rule(client, runtime, settings):
    account = await register(client)
    other = await register(client)
    await gql(client, "InstallCompliancePack", {"packId": "gdpr"}, token=account.token)
    await gql(client, "InstallCompliancePack", {"packId": "gdpr"}, token=other.token)
    await _rule(client, account, name="codename", kind="KEYWORDS", config={"keywords": ["bluebird"]})

    before = await gql(client, "ComplianceSettings", token=account.token)
    assert before["data"]["complianceSettings"] == {"redactPii": False, "updatedAt": None}
    assert (await _log(client, account.token, prompt=f"mail {EMAIL}"))["prompt"] == f"mail {EMAIL}"

    secret, _ = await create_api_key(client, account)
    assert error_code(await gql(client, "UpdateComplianceSettings", {"redactPii": True}, api_key=secret)) == (
        "FORBIDDEN"
    )
    _, member = await add_user(runtime, settings, account, "MEMBER")
    assert error_code(await gql(client, "UpdateComplianceSettings", {"redactPii": True}, token=member)) == ("FORBIDDEN")
    turned_on = await gql(client, "UpdateComplianceSettings", {"redactPii": True}, token=account.token)
    assert turned_on["data"]["updateComplianceSettings"]["redactPii"] is True

    # at once (the rule cache is dropped after the commit), for PII rules only, in this organisation only
    record = await _log(client, account.token, prompt=f"mail {EMAIL} about bluebird")
    assert EMAIL not in record["prompt"] and record["prompt"].endswith(" about bluebird")
    by_key = await gql(client, "LogEvent", {"input": {"action": "x", "prompt": f"mail {EMAIL}"}}, api_key=secret)
    assert EMAIL not in by_key["data"]["logEvent"]["prompt"]
    assert (await _log(client, other.token, prompt=f"mail {EMAIL}"))["prompt"] == f"mail {EMAIL}"
    unchanged = await gql(client, "ComplianceSettings", token=other.token)
    assert unchanged["data"]["complianceSettings"]["redactPii"] is False

    activity = await gql(client, "Activity", token=account.token)
    actions = [e["node"]["action"] for e in activity["data"]["activity"]["edges"]]
    assert "compliance_settings.updated" in actions


def test_redaction_keeps_structure_and_never_overlaps():
    spec = RuleSpec(id="r", name="pii", kind="pii", config={"types": ["ssn", "credit_card", "email", "secret"]},
                    severity="HIGH", action="redact", applies_to=("prompt", "metadata"))  # fmt: skip
    ruleset = compile_rules([spec])
    record = {
        "prompt": f"{SSN} {SSN} card {CARD} end",
        "response": f"{SSN} (not a field this rule applies to)",
        "metadata": {EMAIL: "key kept", "list": [[SSN]], "n": 1, "none": None},
        "args": None,
        "result": None,
    }
    findings = evaluate(ruleset, record)
    assert findings
    assert redact_record(ruleset, record, findings) is True
    assert record["prompt"] == "***-**-6789 ***-**-6789 card **** **** **** 1111 end"
    assert record["response"].startswith(SSN)
    assert record["metadata"] == {EMAIL: "key kept", "list": [["***-**-6789"]], "n": 1, "none": None}
    # a second pass finds nothing left to change
    assert redact_record(ruleset, record, evaluate(ruleset, record)) is False
    # without a redacting rule, nothing changes
    alerting = compile_rules([RuleSpec(**{**spec.__dict__, "action": "alert"})])
    plain = {"prompt": SSN, "response": None, "metadata": {}, "args": None, "result": None}
    assert redact_record(alerting, plain, evaluate(alerting, plain)) is False and plain["prompt"] == SSN
