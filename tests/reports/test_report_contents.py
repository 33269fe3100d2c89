"""Each report type's numbers against a small hand-built data set, in JSON, CSV and PDF."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from pypdf import PdfReader

from app.audit import sealing
from reports.helpers import agent, download, log, ready
from support import gql, register

EMAIL = {"name": "Emails", "kind": "PII", "config": {"types": ["email"]}, "severity": "MEDIUM"}
CARDS = {"name": "Cards", "kind": "PII", "config": {"types": ["credit_card"]}, "severity": "HIGH", "action": "BLOCK"}


async def _alerts_data(client, runtime, account):
    """Emails (an organisation rule, MEDIUM) fires on every agent; Cards (policy P v1, HIGH, BLOCK) on `bot`.

    bot: 1 alert, 2 alerts (card + email), none; other: 1 alert. Two of the four alerts are resolved, after
    60 s and 600 s; the others stay open.
    """
    rule = await gql(client, "CreateComplianceRule", {"input": EMAIL}, token=account.token)
    assert "errors" not in rule, rule
    bot = await agent(client, account, "bot")
    other = await agent(client, account, "other")
    policy = (await gql(client, "CreatePolicy", {"input": {"name": "P", "rules": [CARDS]}}, token=account.token))[
        "data"
    ]["createPolicy"]
    await gql(client, "AttachPolicy", {"policyId": policy["id"], "agentId": bot}, token=account.token)
    await log(
        client,
        account,
        [
            {"agentId": bot, "prompt": "mail a@example.com"},
            {"agentId": bot, "prompt": "card 4111 1111 1111 1111"},
            {"agentId": bot, "prompt": "clean"},
            {"agentId": other, "prompt": "mail c@example.com"},
            {"agentId": bot, "prompt": "mail b@example.com"},
        ],
    )
    alerts = (await gql(client, "Alerts", {"first": 10}, token=account.token))["data"]["alerts"]["edges"]
    assert len(alerts) == 4
    by_text = {(a["node"]["agentId"], a["node"]["ruleName"]): a["node"]["id"] for a in alerts}
    resolved = [by_text[(bot, "Cards")], by_text[(other, "Emails")]]
    for alert_id in resolved:
        assert "errors" not in await gql(client, "ResolveAlert", {"id": alert_id}, token=account.token)
    # fix the resolution times, so that the percentiles are known: 60 s and 600 s
    created = datetime.now(UTC) - timedelta(hours=2)
    async with runtime.db.engine.begin() as conn:
        await conn.execute(sa.text("UPDATE alerts SET created_at = :c"), {"c": created})
        for alert_id, seconds in zip(resolved, (60, 600), strict=True):
            await conn.execute(
                sa.text("UPDATE alerts SET resolved_at = :r WHERE id = :id"),
                {"r": created + timedelta(seconds=seconds), "id": alert_id},
            )
    return bot, other, policy


async def test_compliance_summary_numbers_in_json(client, runtime):
    account = await register(client, org="Acme Compliance")
    bot, other, policy = await _alerts_data(client, runtime, account)

    report = await ready(client, runtime, account, type="COMPLIANCE_SUMMARY", format="JSON")
    summary = report["summary"]
    assert summary["alerts"] == 4 and summary["open"] == 2 and summary["resolved"] == 2
    assert summary["medianResolutionSeconds"] == pytest.approx(330)
    assert summary["p90ResolutionSeconds"] == pytest.approx(546)  # 60 + 0.9 × 540
    assert summary["bySeverity"] == {"LOW": 0, "MEDIUM": 3, "HIGH": 1, "CRITICAL": 0}
    assert summary["topAgent"] == "bot"

    response = await download(client, report)
    assert response.headers["content-type"] == "application/json"
    day = datetime.now(UTC).strftime("%Y%m%d")
    assert f'filename="compliance_summary-{account.org_id}-{day}.json"' in response.headers["content-disposition"]
    document = json.loads(response.content)
    assert document["report"]["orgId"] == account.org_id and document["report"]["organization"] == "Acme Compliance"
    data = document["data"]
    assert data["alerts"] == {"total": 4, "recordsWithAlerts": 4}
    assert {r["ruleName"]: r["alerts"] for r in data["byRule"]} == {"Emails": 3, "Cards": 1}
    assert [(r["agentName"], r["alerts"], r["open"]) for r in data["byAgent"]] == [("bot", 3, 2), ("other", 1, 0)]
    assert data["topViolatingAgents"][0]["agentId"] == bot
    assert [(r["policyId"], r["version"], r["alerts"]) for r in data["byPolicyVersion"]] == [
        (None, None, 3),
        (policy["id"], 1, 1),
    ]
    named = {r["policyId"]: r["policyName"] for r in data["byPolicyVersion"]}
    assert named[policy["id"]] == "P"
    assert data["resolution"] == {"resolved": 2, "open": 2, "medianSeconds": 330.0, "p90Seconds": 546.0}
    assert sum(d["alerts"] for d in data["daily"]) == 4

    # agentIds narrows: only `other`'s alert
    narrow = await ready(client, runtime, account, type="COMPLIANCE_SUMMARY", format="JSON", agentIds=[other])
    assert narrow["agentIds"] == [other]
    assert narrow["summary"]["alerts"] == 1 and narrow["summary"]["resolved"] == 1
    assert narrow["summary"]["medianResolutionSeconds"] == pytest.approx(600)


async def test_compliance_summary_pdf_is_a_real_document(client, runtime):
    account = await register(client, org="Acme Compliance")
    await _alerts_data(client, runtime, account)
    report = await ready(client, runtime, account, type="COMPLIANCE_SUMMARY", format="PDF")
    response = await download(client, report)
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-disposition"].endswith('.pdf"')
    assert response.content.startswith(b"%PDF-")
    pdf = PdfReader(io.BytesIO(response.content))
    assert len(pdf.pages) >= 2
    title_page = pdf.pages[0].extract_text()
    assert "Compliance summary" in title_page and "Acme Compliance" in title_page and account.org_id in title_page
    assert "Window (UTC)" in title_page and "Generated at" in title_page
    text = "\n".join(page.extract_text() for page in pdf.pages)
    for heading in (
        "Overview",
        "Alerts by severity",
        "Alerts per day",
        "Alerts by rule",
        "Top violating agents",
        "Alerts by policy version",
    ):
        assert heading in text, heading
    assert "Emails" in text and "Cards" in text and "bot" in text
    assert pdf.metadata.title.startswith("Compliance summary")
    # the charts are vector drawings: the severity bar chart's axis labels are on the page
    assert "CRITICAL" in text and "MEDIUM" in text


async def test_agent_activity_numbers_in_csv_json_and_pdf(client, runtime):
    account = await register(client)
    bot = await agent(client, account, "bot")
    other = await agent(client, account, "other")
    idle = await agent(client, account, "=idle")  # a name a spreadsheet would run as a formula
    await log(
        client,
        account,
        [
            {"agentId": bot, "traceId": "t1", "durationMs": 100},
            {"agentId": bot, "traceId": "t1", "durationMs": 100, "status": "ERROR"},
            {"agentId": bot, "traceId": "t2", "durationMs": 100, "status": "BLOCKED"},
            {"agentId": bot, "traceId": "t2", "durationMs": 1000},
            {"agentId": other, "traceId": "t3", "durationMs": 50},
            {"agentId": other, "traceId": "t2", "durationMs": 50},  # a trace that two agents share
            {"agentId": other, "durationMs": 50, "occurredAt": (datetime.now(UTC) - timedelta(days=3)).isoformat()},
        ],
    )
    report = await ready(client, runtime, account, type="AGENT_ACTIVITY", format="CSV")
    assert report["summary"] == {
        "agents": 2,
        "records": 6,  # the 3-day-old record is outside the last 24 hours
        "traces": 3,  # t1, t2 and t3: the shared one counts once
        "errors": 1,
        "errorRate": pytest.approx(1 / 6, abs=1e-6),
        "blocked": 1,
    }
    response = await download(client, report)
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"].endswith('.csv"')
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["agentName"] for r in rows] == ["bot", "other"]
    first = rows[0]
    assert (first["agentId"], first["records"], first["traces"], first["errors"], first["blocked"]) == (
        bot,
        "4",
        "2",
        "1",
        "1",
    )
    assert float(first["errorRate"]) == pytest.approx(0.25)
    assert float(first["durationP50Ms"]) == pytest.approx(100, rel=0.1)  # histogram percentiles: ±9 %
    assert float(first["durationP95Ms"]) == pytest.approx(1000, rel=0.1)
    assert rows[1]["traces"] == "2" and float(rows[1]["durationP50Ms"]) == pytest.approx(50, rel=0.1)

    # agentIds narrows, and an agent silent in the window still gets its row; the JSON has the daily series
    narrow = await ready(client, runtime, account, type="AGENT_ACTIVITY", format="JSON", agentIds=[other, idle])
    data = json.loads((await download(client, narrow)).content)["data"]
    assert [(a["agentName"], a["records"], a["traces"]) for a in data["agents"]] == [("other", 2, 2), ("=idle", 0, 0)]
    assert sum(d["records"] for d in data["daily"]) == 2
    guarded = await ready(client, runtime, account, type="AGENT_ACTIVITY", format="CSV", agentIds=[idle])
    [row] = list(csv.DictReader(io.StringIO((await download(client, guarded)).text)))
    assert row["agentName"] == "'=idle" and row["records"] == "0" and row["durationP50Ms"] == ""

    wide = await ready(
        client,
        runtime,
        account,
        type="AGENT_ACTIVITY",
        format="PDF",
        **{"from": (datetime.now(UTC) - timedelta(days=7)).isoformat()},
    )
    assert wide["summary"]["records"] == 7
    pdf = PdfReader(io.BytesIO((await download(client, wide)).content))
    text = "\n".join(page.extract_text() for page in pdf.pages)
    for heading in ("Agent activity", "Records per agent", "Per agent", "Records per day"):
        assert heading in text, heading


async def test_policy_changes_from_versions_and_the_activity_trail(client, runtime):
    account = await register(client)
    bot = await agent(client, account, "bot")
    other = await agent(client, account, "other")
    p = (await gql(client, "CreatePolicy", {"input": {"name": "P", "rules": [EMAIL]}}, token=account.token))["data"][
        "createPolicy"
    ]
    q = (await gql(client, "CreatePolicy", {"input": {"name": "Q", "rules": [CARDS]}}, token=account.token))["data"][
        "createPolicy"
    ]
    v2 = await gql(
        client, "CreatePolicyVersion", {"policyId": p["id"], "rules": [EMAIL, CARDS], "note": "cards too"},
        token=account.token,
    )  # fmt: skip
    assert "errors" not in v2, v2
    for op, policy_id, agent_id in (
        ("AttachPolicy", p["id"], bot),
        ("DetachPolicy", p["id"], bot),
        ("AttachPolicy", q["id"], other),
    ):
        result = await gql(client, op, {"policyId": policy_id, "agentId": agent_id}, token=account.token)
        assert "errors" not in result, result

    report = await ready(client, runtime, account, type="POLICY_CHANGES", format="CSV")
    assert report["summary"] == {
        "versionsCreated": 3,
        "attached": 2,
        "detached": 1,
        "policiesChanged": 2,
        "changes": 6,
        "truncated": False,
    }
    rows = list(csv.DictReader(io.StringIO((await download(client, report)).text)))
    assert [(r["change"], r["policyName"], r["version"], r["agentName"]) for r in rows] == [
        ("version_created", "P", "1", ""),
        ("version_created", "Q", "1", ""),
        ("version_created", "P", "2", ""),
        ("attached", "P", "", "bot"),
        ("detached", "P", "", "bot"),
        ("attached", "Q", "", "other"),
    ]
    assert rows[2]["note"] == "cards too" and account.email in rows[2]["actor"]
    assert rows[0]["occurredAt"] <= rows[-1]["occurredAt"]

    # narrowed to `other`: its attachment, and the versions of the policy it runs
    narrow = await ready(client, runtime, account, type="POLICY_CHANGES", format="JSON", agentIds=[other])
    data = json.loads((await download(client, narrow)).content)["data"]
    assert [(c["change"], c["policyName"]) for c in data["changes"]] == [
        ("version_created", "Q"),
        ("attached", "Q"),
    ]
    assert data["attachments"][0]["agentId"] == other

    pdf_report = await ready(client, runtime, account, type="POLICY_CHANGES", format="PDF")
    pdf = PdfReader(io.BytesIO((await download(client, pdf_report)).content))
    text = "\n".join(page.extract_text() for page in pdf.pages)
    for heading in ("Policy changes", "Changes per day", "Policy versions created", "Attachments and detachments"):
        assert heading in text, heading


async def test_audit_integrity_runs_the_verification(client, runtime):
    account = await register(client)
    ids = await log(client, account, [{"prompt": f"record {i}"} for i in range(5)])
    await sealing.seal_all(runtime.db, runtime.signer)
    await log(client, account, [{"prompt": "after the seal"}])

    report = await ready(client, runtime, account, type="AUDIT_INTEGRITY", format="JSON")
    assert report["summary"] == {
        "ok": True,
        "recordsChecked": 6,
        "digestsChecked": 1,
        "digestsCovered": 1,
        "recordsErased": 0,
        "firstBrokenRecordId": None,
        "firstBrokenDigestId": None,
        "reason": None,
    }
    data = json.loads((await download(client, report)).content)["data"]
    assert data["digests"][0]["recordCount"] == 5 and data["digests"][0]["sequence"] == 1

    # a window before anything was written covers no digest and no record
    empty = await ready(
        client,
        runtime,
        account,
        type="AUDIT_INTEGRITY",
        format="JSON",
        **{
            "from": (datetime.now(UTC) - timedelta(days=3)).isoformat(),
            "to": (datetime.now(UTC) - timedelta(days=2)).isoformat(),
        },
    )
    assert empty["summary"]["recordsChecked"] == 0 and empty["summary"]["digestsCovered"] == 0

    # someone with database access edits a record: the next report says so, and which record
    async with runtime.db.engine.begin() as conn:
        await conn.execute(sa.text("ALTER TABLE audit_logs DISABLE TRIGGER USER"))
        await conn.execute(sa.text("UPDATE audit_logs SET prompt = 'nothing to see' WHERE id = :id"), {"id": ids[2]})
        await conn.execute(sa.text("ALTER TABLE audit_logs ENABLE TRIGGER USER"))
    broken = await ready(client, runtime, account, type="AUDIT_INTEGRITY", format="PDF")
    assert broken["summary"]["ok"] is False and broken["summary"]["firstBrokenRecordId"] == ids[2]
    pdf = PdfReader(io.BytesIO((await download(client, broken)).content))
    text = "\n".join(page.extract_text() for page in pdf.pages)
    assert "Verification" in text and "does NOT verify" in text and ids[2] in text
