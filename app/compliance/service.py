"""Operations of the compliance domain: the organisation's rules (create, change, delete, list) and its
compliance settings (the defaults its rules are compiled with)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select

from app.activity.service import record_activity
from app.compliance.changes import rules_changed
from app.compliance.engine import KINDS, SEVERITIES, TEXT_FIELDS, RuleSpec, action_problem, validate_config
from app.compliance.models import ComplianceRule, ComplianceSettings
from app.db import AsyncSession, new_id, session_org, utcnow
from app.errors import BadUserInput, NotFound
from app.principal import Principal

MAX_RULES_PER_ORG = 1000


@dataclass
class RuleInput:
    name: str | None = None
    description: str | None = None
    kind: str | None = None
    config: Any = None
    severity: str | None = None
    enabled: bool | None = None
    applies_to: list[str] | None = None
    action: str | None = None


def _check_rule_fields(values: RuleInput, *, creating: bool) -> None:
    if creating and not values.name:
        raise BadUserInput("name is required", field="name")
    if values.name is not None and not 1 <= len(values.name.strip()) <= 200:
        raise BadUserInput("name must be 1–200 characters", field="name")
    if values.description is not None and len(values.description) > 2000:
        raise BadUserInput("description must be at most 2000 characters", field="description")
    if values.severity is not None and values.severity not in SEVERITIES:
        raise BadUserInput(f"severity must be one of {', '.join(SEVERITIES)}", field="severity")
    if values.applies_to is not None and not set(values.applies_to) <= set(TEXT_FIELDS):
        raise BadUserInput(f"appliesTo must be among {', '.join(TEXT_FIELDS)}", field="appliesTo")
    if creating and values.kind not in KINDS:
        raise BadUserInput(f"kind must be one of {', '.join(KINDS)}", field="kind")


def _check_action(kind: str, action: str | None) -> None:
    problem = action_problem(kind, action) if action is not None else None
    if problem:
        raise BadUserInput(f"action {problem}", field="action")


def rule_spec(rule: ComplianceRule) -> RuleSpec:
    return RuleSpec(
        id=rule.id,
        name=rule.name,
        kind=rule.kind,
        config=rule.config,
        severity=rule.severity,
        action=rule.action,
        applies_to=tuple(rule.applies_to),
    )


async def list_rules(session: AsyncSession, *, pack_id: str | None = None) -> list[ComplianceRule]:
    query = select(ComplianceRule).order_by(col(ComplianceRule.created_at), col(ComplianceRule.id))
    if pack_id is not None:
        query = query.where(ComplianceRule.pack_id == pack_id)
    return list((await session.exec(query)).all())


async def enabled_rules(session: AsyncSession) -> list[ComplianceRule]:
    """The rules that are evaluated."""
    return list((await session.exec(select(ComplianceRule).where(col(ComplianceRule.enabled).is_(True)))).all())


async def get_rule(session: AsyncSession, rule_id: str) -> ComplianceRule:
    rule = await session.get(ComplianceRule, rule_id)
    if rule is None:
        raise NotFound("compliance rule not found", id=rule_id)
    return rule


async def _count_rules(session: AsyncSession) -> int:
    return int((await session.execute(sa.select(sa.func.count()).select_from(ComplianceRule))).scalar_one())


async def create_rule(
    session: AsyncSession, principal: Principal, values: RuleInput, *, source_ip: str | None
) -> ComplianceRule:
    _check_rule_fields(values, creating=True)
    assert values.kind is not None and values.name is not None
    _check_action(values.kind, values.action)
    config = validate_config(values.kind, values.config if values.config is not None else {})
    if await _count_rules(session) >= MAX_RULES_PER_ORG:
        raise BadUserInput(f"an organisation can have at most {MAX_RULES_PER_ORG} rules")
    rule = ComplianceRule(
        id=new_id("rule"),
        org_id=principal.org_id,
        name=values.name.strip(),
        description=(values.description or "").strip(),
        kind=values.kind,
        config=config,
        severity=values.severity or "MEDIUM",
        enabled=True if values.enabled is None else values.enabled,
        applies_to=values.applies_to if values.applies_to is not None else list(TEXT_FIELDS),
        action=values.action or "alert",
    )
    session.add(rule)
    record_activity(
        session,
        principal,
        "compliance_rule.created",
        target_type="compliance_rule",
        target_id=rule.id,
        metadata={"name": rule.name, "kind": rule.kind},
        source_ip=source_ip,
    )
    await session.flush()
    rules_changed(session, principal.org_id)
    return rule


async def update_rule(
    session: AsyncSession, principal: Principal, rule_id: str, values: RuleInput, *, source_ip: str | None
) -> ComplianceRule:
    rule = await get_rule(session, rule_id)
    _check_rule_fields(values, creating=False)
    changed = []
    if values.kind is not None and values.kind != rule.kind:
        raise BadUserInput("a rule's kind cannot change; create a new rule", field="kind")
    _check_action(rule.kind, values.action)
    if values.config is not None:
        rule.config = validate_config(rule.kind, values.config)
        changed.append("config")
    for attribute in ("name", "description", "severity", "enabled", "applies_to", "action"):
        value = getattr(values, attribute)
        if value is not None and value != getattr(rule, attribute):
            setattr(rule, attribute, value.strip() if isinstance(value, str) and attribute != "severity" else value)
            changed.append(attribute)
    if changed:
        rule.updated_at = utcnow()
        record_activity(
            session,
            principal,
            "compliance_rule.updated",
            target_type="compliance_rule",
            target_id=rule.id,
            metadata={"fields": changed},
            source_ip=source_ip,
        )
        await session.flush()
    rules_changed(session, principal.org_id)
    return rule


async def delete_rule(session: AsyncSession, principal: Principal, rule_id: str, *, source_ip: str | None) -> str:
    rule = await get_rule(session, rule_id)
    await session.delete(rule)
    record_activity(
        session,
        principal,
        "compliance_rule.deleted",
        target_type="compliance_rule",
        target_id=rule.id,
        metadata={"name": rule.name},
        source_ip=source_ip,
    )
    await session.flush()
    rules_changed(session, principal.org_id)
    return rule_id


async def settings(session: AsyncSession) -> ComplianceSettings:
    """The organisation's compliance settings (the defaults when it never changed them)."""
    found = await session.get(ComplianceSettings, session_org(session))
    return found or ComplianceSettings(org_id=session_org(session) or "", updated_at=utcnow())


async def update_settings(
    session: AsyncSession, principal: Principal, *, redact_pii: bool | None, source_ip: str | None
) -> ComplianceSettings:
    current = await session.get(ComplianceSettings, principal.org_id)
    if current is None:
        current = ComplianceSettings(org_id=principal.org_id, updated_at=utcnow())
        session.add(current)
    changed = {}
    if redact_pii is not None and redact_pii != current.redact_pii:
        changed["redactPii"] = {"from": current.redact_pii, "to": redact_pii}
        current.redact_pii = redact_pii
    if changed:
        current.updated_at = utcnow()
        current.updated_by = principal.actor_id
        record_activity(
            session,
            principal,
            "compliance_settings.updated",
            target_type="organization",
            target_id=principal.org_id,
            metadata=changed,
            source_ip=source_ip,
        )
        await session.flush()
        rules_changed(session, principal.org_id)
    return current
