"""Operations of the compliance domain: rules, packs, evaluation at ingest, alerts.

Ingest calls `assess` before it writes a batch (so BLOCK rules can mark records) and `write_alerts`
after, in the same transaction; `publish_alerts` runs after the commit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
import structlog
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from app.activity.service import record_activity
from app.compliance.engine import (
    ACTIONS,
    KINDS,
    SEVERITIES,
    TEXT_FIELDS,
    Finding,
    RuleSet,
    RuleSpec,
    compile_rules,
    evaluate,
    validate_config,
)
from app.compliance.models import Alert, ComplianceRule, InstalledPack
from app.compliance.packs import Pack, all_packs
from app.db import AsyncSession, new_id, session_org, utcnow, within
from app.errors import BadUserInput, Conflict, NotFound
from app.orgs.principal import Principal
from app.runtime.redis import Broadcaster
from app.webhooks import service as webhooks

log = structlog.get_logger(__name__)

MAX_RULES_PER_ORG = 1000
RULES_CHANGED_CHANNEL = "agentrail:compliance:rules-changed"
CACHE_TTL_SECONDS = 60.0  # a safety net: changes are announced through Redis at once


# --- rules ------------------------------------------------------------------------------------
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
    if values.action is not None and values.action not in ACTIONS:
        raise BadUserInput("action must be ALERT or BLOCK", field="action")
    if values.applies_to is not None and not set(values.applies_to) <= set(TEXT_FIELDS):
        raise BadUserInput(f"appliesTo must be among {', '.join(TEXT_FIELDS)}", field="appliesTo")
    if creating and values.kind not in KINDS:
        raise BadUserInput(f"kind must be one of {', '.join(KINDS)}", field="kind")


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
    query = select(ComplianceRule).order_by(ComplianceRule.created_at, ComplianceRule.id)
    if pack_id is not None:
        query = query.where(ComplianceRule.pack_id == pack_id)
    return list((await session.exec(query)).all())


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
    principal.require_role("create compliance rules", "owner", "admin")
    _check_rule_fields(values, creating=True)
    assert values.kind is not None and values.name is not None
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
    await session.commit()
    return rule


async def update_rule(
    session: AsyncSession, principal: Principal, rule_id: str, values: RuleInput, *, source_ip: str | None
) -> ComplianceRule:
    principal.require_role("change compliance rules", "owner", "admin")
    rule = await get_rule(session, rule_id)
    _check_rule_fields(values, creating=False)
    changed = []
    if values.kind is not None and values.kind != rule.kind:
        raise BadUserInput("a rule's kind cannot change; create a new rule", field="kind")
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
        await session.commit()
    return rule


async def delete_rule(session: AsyncSession, principal: Principal, rule_id: str, *, source_ip: str | None) -> str:
    principal.require_role("delete compliance rules", "owner", "admin")
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
    await session.commit()
    return rule_id


# --- packs ------------------------------------------------------------------------------------
def get_pack(pack_id: str) -> Pack:
    pack = all_packs().get(pack_id)
    if pack is None:
        raise NotFound(f"no compliance pack {pack_id!r}; known: {', '.join(all_packs())}", id=pack_id)
    return pack


async def installed_packs(session: AsyncSession) -> list[InstalledPack]:
    return list((await session.exec(select(InstalledPack).order_by(InstalledPack.installed_at))).all())


async def install_pack(
    session: AsyncSession, principal: Principal, pack_id: str, *, source_ip: str | None
) -> list[ComplianceRule]:
    """Copies the pack's rules into the organisation. A second install is CONFLICT (uninstall first)."""
    principal.require_role("install compliance packs", "owner", "admin")
    pack = get_pack(pack_id)
    session.add(InstalledPack(org_id=principal.org_id, pack_id=pack.id, installed_by=principal.actor_id))
    rules = [
        ComplianceRule(
            id=new_id("rule"),
            org_id=principal.org_id,
            name=r.name,
            description=r.description,
            kind=r.kind,
            config=r.config,
            severity=r.severity,
            action=r.action,
            applies_to=list(r.applies_to),
            pack_id=pack.id,
            pack_rule_key=r.key,
        )
        for r in pack.rules
    ]
    session.add_all(rules)
    record_activity(
        session,
        principal,
        "compliance_pack.installed",
        target_type="compliance_pack",
        target_id=pack.id,
        metadata={"rules": len(rules)},
        source_ip=source_ip,
    )
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise Conflict(f"pack {pack.id!r} is already installed", id=pack.id) from None
    return rules


async def uninstall_pack(session: AsyncSession, principal: Principal, pack_id: str, *, source_ip: str | None) -> int:
    """Removes the pack and the rules it installed; returns how many rules went."""
    principal.require_role("uninstall compliance packs", "owner", "admin")
    installed = await session.get(InstalledPack, (principal.org_id, pack_id))
    if installed is None:
        raise NotFound(f"pack {pack_id!r} is not installed", id=pack_id)
    rules = await list_rules(session, pack_id=pack_id)
    for rule in rules:
        await session.delete(rule)
    await session.delete(installed)
    record_activity(
        session,
        principal,
        "compliance_pack.uninstalled",
        target_type="compliance_pack",
        target_id=pack_id,
        metadata={"rules": len(rules)},
        source_ip=source_ip,
    )
    await session.commit()
    return len(rules)


# --- compiled rule sets: cached per process, invalidated through Redis ------------------------
class RuleCache:
    """Compiled rule sets per (organisation, agent): the organisation's rules plus those of the current
    version of every policy attached to the agent (agent None: the organisation's rules alone)."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str | None], tuple[float, RuleSet]] = {}

    def get(self, org_id: str, agent_id: str | None = None) -> RuleSet | None:
        entry = self._entries.get((org_id, agent_id))
        if entry is None or time.monotonic() - entry[0] > CACHE_TTL_SECONDS:
            return None
        return entry[1]

    def put(self, org_id: str, ruleset: RuleSet, agent_id: str | None = None) -> None:
        self._entries[(org_id, agent_id)] = (time.monotonic(), ruleset)

    def invalidate(self, org_id: str | None = None) -> None:
        if org_id is None:
            self._entries.clear()
        else:
            for key in [k for k in self._entries if k[0] == org_id]:
                del self._entries[key]


RULES = RuleCache()


async def organisation_rules(session: AsyncSession, org_id: str) -> RuleSet:
    cached = RULES.get(org_id)
    if cached is not None:
        return cached
    rules = (await session.exec(select(ComplianceRule).where(ComplianceRule.enabled.is_(True)))).all()
    ruleset = compile_rules(rule_spec(r) for r in rules)
    RULES.put(org_id, ruleset)
    return ruleset


async def rules_for_agents(session: AsyncSession, org_id: str, agent_ids: set[str]) -> dict[str | None, RuleSet]:
    """The rule set for each agent of a batch (None: records without an agent). One query for the
    attached policies of all agents not cached yet."""
    from app.policies.service import current_rules_for_agents

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
            ruleset = compile_rules([*base.rules, *extra]) if extra else base
            RULES.put(org_id, ruleset, agent_id)
            out[agent_id] = ruleset
    return out


async def announce_rules_changed(broadcaster: Broadcaster, org_id: str) -> None:
    """After a commit that changed rules (or policies): every process drops its compiled copy."""
    RULES.invalidate(org_id)
    try:
        await broadcaster.publish(RULES_CHANGED_CHANNEL, org_id.encode())
    except Exception:
        log.warning("could not announce a rule change; other processes refresh within a minute", exc_info=True)


async def listen_for_rule_changes(broadcaster: Broadcaster) -> None:
    """Runs for the life of the process."""
    while True:
        try:
            async with broadcaster.subscribe(RULES_CHANGED_CHANNEL) as messages:
                RULES.invalidate()  # anything could have changed while we were not listening
                async for message in messages:
                    RULES.invalidate(message.decode())
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("rule-change listener lost Redis; retrying", exc_info=True)
        await asyncio.sleep(1.0)


# --- evaluation at ingest ---------------------------------------------------------------------
@dataclass
class AlertDraft:
    row_index: int
    finding: Finding


async def assess(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> list[AlertDraft]:
    """Evaluates prepared rows (column-named, masked) and marks rows a BLOCK rule matched. Called by ingest
    inside its transaction, before the checksums are computed."""
    org_id = session_org(session)
    assert org_id
    rulesets = await rules_for_agents(session, org_id, {row["agent_id"] for row in rows if row["agent_id"]})
    if all(r.empty for r in rulesets.values()):
        return []
    drafts: list[AlertDraft] = []
    for index, row in enumerate(rows):
        findings = evaluate(rulesets[row["agent_id"]], row)
        for finding in findings:
            drafts.append(AlertDraft(index, finding))
            if finding.rule.action == "block":
                row["governance_status"] = "blocked"
    return drafts


async def write_alerts(
    session: AsyncSession, drafts: Sequence[AlertDraft], rows: Sequence[dict[str, Any]]
) -> list[Alert]:
    """Inserts the alerts of the rows that were written (duplicates by idempotency key raise none)."""
    if not drafts:
        return []
    org_id = session_org(session)
    now = utcnow()
    values = []
    for draft in drafts:
        row, finding = rows[draft.row_index], draft.finding
        rule = finding.rule
        values.append(
            {
                "id": new_id("alrt"),
                "org_id": org_id,
                "rule_id": rule.id,
                "rule_name": rule.name,
                "rule_kind": rule.kind,
                "policy_id": rule.policy_id,
                "policy_version": rule.policy_version,
                "severity": rule.severity,
                "action": rule.action,
                "message": finding.message,
                "field": finding.field,
                "excerpt": finding.excerpt,
                "start_offset": finding.start,
                "end_offset": finding.end,
                "audit_log_id": row["id"],
                "trace_id": row["trace_id"],
                "agent_id": row["agent_id"],
                "created_at": now,
            }
        )
    result = await session.execute(sa.insert(Alert).returning(Alert.id, Alert.seq), values)
    seqs = {r.id: r.seq for r in result.all()}
    alerts = [Alert(**v, seq=seqs[v["id"]]) for v in values]
    # the outbox rows commit with the alerts; the caller queues them after the commit
    await webhooks.emit_events(session, [("alert.created", alert_event_data(a)) for a in alerts], now=now)
    return alerts


def alert_event_data(alert: Alert) -> dict[str, Any]:
    """An alert as webhook events carry it (`data.alert`): the redacted excerpt, never the matched text."""
    return {
        "alert": {
            "id": alert.id,
            "ruleId": alert.rule_id,
            "ruleName": alert.rule_name,
            "ruleKind": alert.rule_kind,
            "policyId": alert.policy_id,
            "policyVersion": alert.policy_version,
            "severity": alert.severity,
            "action": alert.action,
            "message": alert.message,
            "field": alert.field,
            "excerpt": alert.excerpt,
            "auditLogId": alert.audit_log_id,
            "traceId": alert.trace_id,
            "agentId": alert.agent_id,
            "createdAt": alert.created_at,
            "resolvedAt": alert.resolved_at,
            "resolvedBy": alert.resolved_by,
            "resolutionNote": alert.resolution_note,
        }
    }


# --- live alerts -------------------------------------------------------------------------------
def alerts_channel(org_id: str) -> str:
    return f"agentrail:alerts:{org_id}"


def encode_alerts(alerts: Sequence[Alert]) -> bytes:
    return orjson.dumps([a.model_dump() for a in alerts])


def decode_alerts(message: bytes) -> list[Alert]:
    out = []
    for data in orjson.loads(message):
        for key in ("created_at", "resolved_at"):
            if data.get(key):
                data[key] = datetime.fromisoformat(data[key])
        out.append(Alert(**data))
    return out


async def publish_alerts(broadcaster: Broadcaster, alerts: Sequence[Alert]) -> None:
    by_org: dict[str, list[Alert]] = {}
    for alert in alerts:
        by_org.setdefault(alert.org_id, []).append(alert)
    if by_org:
        await broadcaster.publish_many([(alerts_channel(org), encode_alerts(batch)) for org, batch in by_org.items()])


# --- alerts: reads and resolution ---------------------------------------------------------------
@dataclass
class AlertQuery:
    resolved: bool | None = None
    severities: list[str] | None = None
    agent_ids: list[str] | None = None
    rule_ids: list[str] | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    audit_log_id: str | None = None
    trace_id: str | None = None

    def matches(self, alert: Alert) -> bool:
        """The same conditions in Python, for live alerts."""
        return (
            (self.resolved is None or (alert.resolved_at is not None) == self.resolved)
            and (not self.severities or alert.severity in self.severities)
            and (not self.agent_ids or alert.agent_id in self.agent_ids)
            and (not self.rule_ids or alert.rule_id in self.rule_ids)
            and (self.created_from is None or alert.created_at >= self.created_from)
            and (self.created_to is None or alert.created_at < self.created_to)
            and (self.audit_log_id is None or alert.audit_log_id == self.audit_log_id)
            and (self.trace_id is None or alert.trace_id == self.trace_id)
        )


def _alert_conditions(query: AlertQuery) -> list[Any]:
    conditions: list[Any] = []
    if query.resolved is not None:
        conditions.append(Alert.resolved_at.is_not(None) if query.resolved else Alert.resolved_at.is_(None))
    if query.severities:
        conditions.append(Alert.severity.in_(query.severities))
    if query.agent_ids:
        conditions.append(Alert.agent_id.in_(query.agent_ids))
    if query.rule_ids:
        conditions.append(Alert.rule_id.in_(query.rule_ids))
    conditions += within(Alert.created_at, query.created_from, query.created_to)
    if query.audit_log_id:
        conditions.append(Alert.audit_log_id == query.audit_log_id)
    if query.trace_id:
        conditions.append(Alert.trace_id == query.trace_id)
    return conditions


async def list_alerts(
    session: AsyncSession, query: AlertQuery, *, limit: int, before_seq: int | None = None
) -> list[Alert]:
    """Newest first (by seq)."""
    stmt = select(Alert).where(*_alert_conditions(query))
    if before_seq is not None:
        stmt = stmt.where(Alert.seq < before_seq)
    return list((await session.exec(stmt.order_by(Alert.seq.desc()).limit(limit))).all())


async def alerts_after(session: AsyncSession, query: AlertQuery, *, after_seq: int, limit: int) -> list[Alert]:
    """Oldest first, after a cursor: the replay part of the live subscription."""
    stmt = select(Alert).where(*_alert_conditions(query), Alert.seq > after_seq).order_by(Alert.seq).limit(limit)
    return list((await session.exec(stmt)).all())


async def get_alert(session: AsyncSession, alert_id: str) -> Alert:
    alert = await session.get(Alert, alert_id)
    if alert is None:
        raise NotFound("alert not found", id=alert_id)
    return alert


async def resolve_alert(
    session: AsyncSession, principal: Principal, alert_id: str, *, note: str | None, source_ip: str | None
) -> Alert:
    """Idempotent: resolving a resolved alert changes nothing."""
    principal.require_user("resolve alerts")
    if note is not None and len(note) > 2000:
        raise BadUserInput("note must be at most 2000 characters", field="note")
    alert = await get_alert(session, alert_id)
    if alert.resolved_at is None:
        alert.resolved_at = utcnow()
        alert.resolved_by = principal.user_id
        alert.resolution_note = note
        record_activity(
            session,
            principal,
            "alert.resolved",
            target_type="alert",
            target_id=alert.id,
            metadata={"rule": alert.rule_name},
            source_ip=source_ip,
        )
        await webhooks.emit_event(session, "alert.resolved", alert_event_data(alert))
        await session.commit()
    return alert


async def reopen_alert(session: AsyncSession, principal: Principal, alert_id: str, *, source_ip: str | None) -> Alert:
    principal.require_user("reopen alerts")
    alert = await get_alert(session, alert_id)
    if alert.resolved_at is not None:
        alert.resolved_at = None
        alert.resolved_by = None
        alert.resolution_note = None
        record_activity(
            session, principal, "alert.reopened", target_type="alert", target_id=alert.id, source_ip=source_ip
        )
        await session.commit()
    return alert


async def alerts_by_record(session: AsyncSession, record_ids: Iterable[str]) -> dict[str, list[Alert]]:
    ids = list(set(record_ids))
    out: dict[str, list[Alert]] = {i: [] for i in ids}
    if ids:
        rows = (await session.exec(select(Alert).where(Alert.audit_log_id.in_(ids)).order_by(Alert.seq))).all()
        for alert in rows:
            out[alert.audit_log_id].append(alert)
    return out


async def alert_counts_by_trace(session: AsyncSession, trace_ids: Iterable[str]) -> dict[str, int]:
    ids = list(set(trace_ids))
    if not ids:
        return {}
    stmt = sa.select(Alert.trace_id, sa.func.count()).where(Alert.trace_id.in_(ids)).group_by(Alert.trace_id)
    counts = {t: int(n) for t, n in (await session.execute(stmt)).all()}
    return {t: counts.get(t, 0) for t in ids}


def has_alerts_condition(record_id: Any) -> Any:
    """SQL condition: the record with id `record_id` raised at least one alert."""
    return sa.exists().where(Alert.audit_log_id == record_id)


def alert_cursor_values(alert: Alert) -> list[Any]:
    return [alert.seq]


async def alert_counts_by_severity(
    session: AsyncSession, agent_id: str, *, created_from: datetime | None, created_to: datetime | None
) -> dict[str, int]:
    conditions = [Alert.agent_id == agent_id, *within(Alert.created_at, created_from, created_to)]
    stmt = sa.select(Alert.severity, sa.func.count()).where(*conditions).group_by(Alert.severity)
    counts = {severity: int(n) for severity, n in (await session.execute(stmt)).all()}
    return {severity: counts.get(severity, 0) for severity in SEVERITIES}


def agent_has_open_alerts(agent_id: Any) -> Any:
    """SQL condition: the agent with id `agent_id` has at least one unresolved alert."""
    return sa.exists().where(Alert.agent_id == agent_id, Alert.resolved_at.is_(None))


@dataclass
class AlertBreakdown:
    total: int
    records_with_alerts: int
    by_rule: list[tuple[str, str, int]]  # rule id, rule name, count
    by_severity: dict[str, int]
    by_agent: dict[str | None, int]
    by_version: list[tuple[str | None, int | None, int]]  # policy id, version, count
    by_day: dict[Any, int]


async def alert_breakdown(
    session: AsyncSession,
    *,
    created_from: datetime,
    created_to: datetime,
    policy_id: str | None = None,
    agent_ids: list[str] | None = None,
) -> AlertBreakdown:
    """Alerts in a window grouped every way analytics needs, each a GROUP BY in SQL."""
    conditions = within(Alert.created_at, created_from, created_to)
    if policy_id is not None:
        conditions.append(Alert.policy_id == policy_id)
    if agent_ids is not None:
        conditions.append(Alert.agent_id.in_(agent_ids))

    async def grouped(*columns: Any) -> list[Any]:
        stmt = sa.select(*columns, sa.func.count()).where(*conditions).group_by(*columns)
        return list((await session.execute(stmt)).all())

    totals = (
        await session.execute(
            sa.select(sa.func.count(), sa.func.count(sa.distinct(Alert.audit_log_id))).where(*conditions)
        )
    ).one()
    day = sa.func.date_trunc("day", Alert.created_at, "UTC")
    return AlertBreakdown(
        total=int(totals[0]),
        records_with_alerts=int(totals[1]),
        by_rule=[(r[0], r[1], int(r[2])) for r in await grouped(Alert.rule_id, Alert.rule_name)],
        by_severity={r[0]: int(r[1]) for r in await grouped(Alert.severity)},
        by_agent={r[0]: int(r[1]) for r in await grouped(Alert.agent_id)},
        by_version=[(r[0], r[1], int(r[2])) for r in await grouped(Alert.policy_id, Alert.policy_version)],
        by_day={r[0].date(): int(r[1]) for r in await grouped(day)},
    )


@dataclass
class AlertResolution:
    resolved: int
    open: int
    median_seconds: float | None  # of the resolved alerts: resolved_at - created_at
    p90_seconds: float | None
    by_agent: dict[str | None, tuple[int, int]]  # agent id -> (alerts, still open)


async def alert_resolution(
    session: AsyncSession, *, created_from: datetime, created_to: datetime, agent_ids: list[str] | None = None
) -> AlertResolution:
    """How the alerts raised in a window were handled: resolution-time percentiles and open counts (SQL)."""
    conditions = within(Alert.created_at, created_from, created_to)
    if agent_ids is not None:
        conditions.append(Alert.agent_id.in_(agent_ids))
    seconds = sa.func.extract("epoch", Alert.resolved_at - Alert.created_at)
    is_open = Alert.resolved_at.is_(None)
    totals = (
        await session.execute(
            sa.select(
                sa.func.count().filter(Alert.resolved_at.is_not(None)),
                sa.func.count().filter(is_open),
                sa.func.percentile_cont(0.5).within_group(seconds),
                sa.func.percentile_cont(0.9).within_group(seconds),
            ).where(*conditions)
        )
    ).one()
    per_agent = await session.execute(
        sa.select(Alert.agent_id, sa.func.count(), sa.func.count().filter(is_open))
        .where(*conditions)
        .group_by(Alert.agent_id)
    )
    return AlertResolution(
        resolved=int(totals[0]),
        open=int(totals[1]),
        median_seconds=float(totals[2]) if totals[2] is not None else None,
        p90_seconds=float(totals[3]) if totals[3] is not None else None,
        by_agent={agent: (int(n), int(o)) for agent, n, o in per_agent.all()},
    )
