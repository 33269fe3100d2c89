"""Rule resolution and evaluation: which rules apply to a record (the organisation's and those of the
policies attached to its agent) and what they find. Ingest calls `assess` before it writes a batch, inside
its transaction, so BLOCK rules can mark records and REDACT rules (and PII rules of an organisation that redacts
PII by default) replace what they found before anything is stored; the alerts are written by
`app.alerts.writing`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.alerts.writing import AlertDraft
from app.compliance import service as compliance
from app.compliance.engine import RuleSet, compile_rules, evaluate, redact_record
from app.compliance.service import rule_spec
from app.db import AsyncSession, session_org
from app.guardrails.cache import RULES
from app.policies.service import current_rules_for_agents


async def organisation_rules(session: AsyncSession, org_id: str) -> RuleSet:
    cached = RULES.get(org_id)
    if cached is not None:
        return cached
    redact_pii = (await compliance.settings(session)).redact_pii
    ruleset = compile_rules((rule_spec(r) for r in await compliance.enabled_rules(session)), redact_pii=redact_pii)
    RULES.put(org_id, ruleset)
    return ruleset


async def rules_for_agents(session: AsyncSession, org_id: str, agent_ids: set[str]) -> dict[str | None, RuleSet]:
    """The rule set for each agent of a batch (None: records without an agent). One query for the
    attached policies of all agents not cached yet."""
    base = await organisation_rules(session, org_id)
    out: dict[str | None, RuleSet] = {None: base}
    missing = []
    for agent_id in agent_ids:
        cached = RULES.get(org_id, agent_id)
        if cached is None:
            missing.append(agent_id)
        else:
            out[agent_id] = cached
    if missing:
        policy_rules = await current_rules_for_agents(session, missing)
        for agent_id in missing:
            extra = policy_rules.get(agent_id) or []
            ruleset = compile_rules([*base.rules, *extra], redact_pii=base.redact_pii) if extra else base
            RULES.put(org_id, ruleset, agent_id)
            out[agent_id] = ruleset
    return out


async def assess(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> list[AlertDraft]:
    """Evaluates prepared rows (column-named, masked), marks rows a BLOCK rule matched and redacts in them
    what redacting rules found. Called by ingest inside its transaction, before the checksums are computed."""
    org_id = session_org(session)
    assert org_id
    rulesets = await rules_for_agents(session, org_id, {row["agent_id"] for row in rows if row["agent_id"]})
    if all(r.empty for r in rulesets.values()):
        return []
    drafts: list[AlertDraft] = []
    for index, row in enumerate(rows):
        ruleset = rulesets[row["agent_id"]]
        findings = evaluate(ruleset, row)
        if findings:
            redact_record(ruleset, row, findings)
        for finding in findings:
            drafts.append(AlertDraft(index, finding))
            if finding.rule.action == "block":
                row["governance_status"] = "blocked"
    return drafts
