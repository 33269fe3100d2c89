"""Operations of the policies domain: versioned rule sets attached to agents.

A version is a snapshot (rules embedded, each with its own id), so an alert can always say exactly
which rule of which version fired. New versions are numbered under a row lock on the policy, so two
concurrent `create_version` calls give n+1 and n+2.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from app.activity.service import record_activity
from app.agents import service as agents
from app.compliance.changes import rules_changed
from app.compliance.engine import SEVERITIES, TEXT_FIELDS, RuleSpec, action_problem, validate_config
from app.compliance.packs import all_packs
from app.db import AsyncSession, new_id, utcnow, within
from app.errors import BadUserInput, Conflict, NotFound
from app.pagination import PageRequest
from app.policies.models import Policy, PolicyAttachment, PolicyAttachmentInterval, PolicyVersion
from app.principal import Principal
from app.webhooks import service as webhooks

MAX_RULES_PER_VERSION = 200


@dataclass
class PolicyRuleInput:
    name: str
    kind: str
    config: Any
    description: str = ""
    severity: str = "MEDIUM"
    action: str = "alert"
    applies_to: list[str] | None = None
    key: str | None = None


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60] or "rule"


def check_rules(rules: Sequence[PolicyRuleInput]) -> list[dict[str, Any]]:
    """Validates a rule set and returns its snapshot form (each rule gets an id and a stable key)."""
    if not rules:
        raise BadUserInput("a policy version needs at least one rule", field="rules")
    if len(rules) > MAX_RULES_PER_VERSION:
        raise BadUserInput(f"a policy version holds at most {MAX_RULES_PER_VERSION} rules", field="rules")
    snapshot: list[dict[str, Any]] = []
    keys: set[str] = set()
    for index, rule in enumerate(rules):
        where = f"rules[{index}]"
        name = (rule.name or "").strip()
        if not 1 <= len(name) <= 200:
            raise BadUserInput(f"{where}.name must be 1–200 characters", field=f"{where}.name")
        if rule.severity not in SEVERITIES:
            raise BadUserInput(f"{where}.severity must be one of {', '.join(SEVERITIES)}", field=f"{where}.severity")
        action = action_problem(rule.kind, rule.action)
        if action:
            raise BadUserInput(f"{where}.action {action}", field=f"{where}.action")
        applies_to = list(rule.applies_to) if rule.applies_to is not None else list(TEXT_FIELDS)
        if not set(applies_to) <= set(TEXT_FIELDS):
            raise BadUserInput(f"{where}.appliesTo must be among {', '.join(TEXT_FIELDS)}", field=f"{where}.appliesTo")
        try:
            config = validate_config(rule.kind, rule.config if rule.config is not None else {})
        except BadUserInput as exc:
            raise BadUserInput(f"{where}: {exc.message}", field=f"{where}.config") from None
        key = rule.key or _slug(name)
        while key in keys:
            key = f"{key}-{len(keys)}"
        keys.add(key)
        snapshot.append(
            {
                "id": new_id("rule"),
                "key": key,
                "name": name,
                "description": (rule.description or "").strip()[:2000],
                "kind": rule.kind,
                "config": config,
                "severity": rule.severity,
                "action": rule.action,
                "appliesTo": applies_to,
            }
        )
    return snapshot


def _check_name(name: str) -> str:
    name = (name or "").strip()
    if not 1 <= len(name) <= 200:
        raise BadUserInput("name must be 1–200 characters", field="name")
    return name


async def get_policy(session: AsyncSession, policy_id: str) -> Policy:
    policy = await session.get(Policy, policy_id)
    if policy is None or policy.deleted_at is not None:
        raise NotFound("policy not found", id=policy_id)
    return policy


async def list_policies(session: AsyncSession, *, page: PageRequest) -> list[Policy]:
    query = select(Policy).where(col(Policy.deleted_at).is_(None))
    return list((await session.exec(page.apply(query, col(Policy.created_at), col(Policy.id)))).all())


async def get_version(session: AsyncSession, policy_id: str, number: int) -> PolicyVersion:
    query = select(PolicyVersion).where(PolicyVersion.policy_id == policy_id, PolicyVersion.number == number)
    version = (await session.exec(query)).first()
    if version is None:
        raise NotFound(f"policy {policy_id} has no version {number}", id=policy_id)
    return version


async def get_version_by_id(session: AsyncSession, policy_id: str, version_id: str) -> PolicyVersion:
    """A version by its id (`polv_…`), as the REST reference addresses them; a number is accepted too."""
    if version_id.isdigit() and len(version_id) <= 9:
        return await get_version(session, policy_id, int(version_id))
    query = select(PolicyVersion).where(PolicyVersion.policy_id == policy_id, PolicyVersion.id == version_id)
    version = (await session.exec(query)).first()
    if version is None:
        raise NotFound(f"policy {policy_id} has no version {version_id}", id=policy_id)
    return version


async def list_versions(session: AsyncSession, policy_id: str, *, page: PageRequest) -> list[PolicyVersion]:
    """Newest first (by number)."""
    query = select(PolicyVersion).where(PolicyVersion.policy_id == policy_id)
    return list((await session.exec(page.apply(query, col(PolicyVersion.number)))).all())


async def _flush_named(session: AsyncSession, name: str) -> None:
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(f"a policy named {name!r} already exists", field="name") from None


async def create_policy(
    session: AsyncSession,
    principal: Principal,
    *,
    name: str,
    description: str | None,
    rules: Sequence[PolicyRuleInput],
    note: str = "",
    source_ip: str | None = None,
) -> Policy:
    name = _check_name(name)
    snapshot = check_rules(rules)
    policy = Policy(id=new_id("pol"), org_id=principal.org_id, name=name, description=(description or "").strip())
    session.add(policy)
    await _flush_named(session, name)
    version = PolicyVersion(
        id=new_id("polv"),
        org_id=principal.org_id,
        policy_id=policy.id,
        number=1,
        rules=snapshot,
        note=note or "initial version",
        created_by=principal.actor_id,
    )
    session.add(version)
    record_activity(
        session,
        principal,
        "policy.created",
        target_type="policy",
        target_id=policy.id,
        target_name=name,
        metadata={"rules": len(snapshot)},
        source_ip=source_ip,
    )
    await webhooks.emit_event(
        session, "policy.version_created", version_event_data(policy, version, principal, origin="policy.created")
    )
    await _flush_named(session, name)
    return policy


async def update_policy(
    session: AsyncSession,
    principal: Principal,
    policy_id: str,
    *,
    name: str | None,
    description: str | None,
    source_ip: str | None = None,
) -> Policy:
    policy = await get_policy(session, policy_id)
    changes: dict[str, Any] = {}
    if name is not None and _check_name(name) != policy.name:
        changes["name"] = {"from": policy.name, "to": _check_name(name)}
        policy.name = _check_name(name)
    if description is not None and description.strip() != policy.description:
        if len(description) > 2000:
            raise BadUserInput("description must be at most 2000 characters", field="description")
        changes["description"] = {"from": policy.description, "to": description.strip()}
        policy.description = description.strip()
    if changes:
        policy.updated_at = utcnow()
        record_activity(
            session,
            principal,
            "policy.updated",
            target_type="policy",
            target_id=policy.id,
            target_name=policy.name,
            metadata={"changes": changes},
            source_ip=source_ip,
        )
        await _flush_named(session, policy.name)
    return policy


async def _lock(session: AsyncSession, policy_id: str) -> Policy:
    policy = (await session.exec(select(Policy).where(Policy.id == policy_id).with_for_update())).first()
    if policy is None or policy.deleted_at is not None:
        raise NotFound("policy not found", id=policy_id)
    return policy


async def create_version(
    session: AsyncSession,
    principal: Principal,
    policy_id: str,
    *,
    rules: Sequence[PolicyRuleInput] | None = None,
    snapshot: list[dict[str, Any]] | None = None,
    note: str = "",
    action: str = "policy.version_created",
    source_ip: str | None = None,
    extra: dict[str, Any] | None = None,
) -> PolicyVersion:
    """Adds version n+1 and makes it current (the policy row is locked while numbering)."""
    if len(note) > 2000:
        raise BadUserInput("note must be at most 2000 characters", field="note")
    rules_snapshot = snapshot if snapshot is not None else check_rules(rules or [])
    policy = await _lock(session, policy_id)
    number = policy.current_version + 1
    version = PolicyVersion(
        id=new_id("polv"),
        org_id=policy.org_id,
        policy_id=policy.id,
        number=number,
        rules=rules_snapshot,
        note=note,
        created_by=principal.actor_id,
    )
    session.add(version)
    policy.current_version = number
    policy.updated_at = utcnow()
    record_activity(
        session,
        principal,
        action,
        target_type="policy",
        target_id=policy.id,
        target_name=policy.name,
        metadata={"version": number, "rules": len(rules_snapshot), **(extra or {})},
        source_ip=source_ip,
    )
    await webhooks.emit_event(
        session, "policy.version_created", version_event_data(policy, version, principal, origin=action, extra=extra)
    )
    await session.flush()
    rules_changed(session, policy.org_id)
    return version


def version_event_data(
    policy: Policy,
    version: PolicyVersion,
    principal: Principal,
    *,
    origin: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A new policy version as the `policy.version_created` webhook carries it. `origin` says how it came:
    policy.created (version 1), policy.version_created or policy.version_restored."""
    return {
        "policy": {"id": policy.id, "name": policy.name, "currentVersion": version.number},
        "version": {
            "id": version.id,
            "number": version.number,
            "note": version.note,
            "rules": len(version.rules),
            "createdBy": version.created_by,
            "createdAt": version.created_at,
        },
        "origin": origin,
        "actor": {"type": principal.kind.upper(), "id": principal.actor_id},  # GraphQL's ViewerKind: USER, API_KEY
        **(extra or {}),
    }


async def restore_version(
    session: AsyncSession, principal: Principal, policy_id: str, number: int, *, source_ip: str | None = None
) -> PolicyVersion:
    """A new version whose rules equal version `number` (history is never rewritten)."""
    old = await get_version(session, policy_id, number)
    snapshot = [{**rule, "id": new_id("rule")} for rule in old.rules]
    return await create_version(
        session,
        principal,
        policy_id,
        snapshot=snapshot,
        note=f"restored from version {number}",
        action="policy.version_restored",
        source_ip=source_ip,
        extra={"restoredFrom": number},
    )


async def delete_policy(
    session: AsyncSession, principal: Principal, policy_id: str, *, source_ip: str | None = None
) -> str:
    """Detaches the policy from its agents; its versions stay for the alerts that name them."""
    policy = await _lock(session, policy_id)
    detached = (
        await session.execute(sa.delete(PolicyAttachment).where(col(PolicyAttachment.policy_id) == policy.id))
    ).rowcount
    policy.deleted_at = utcnow()
    await _close_intervals(session, policy.id, None, policy.deleted_at)
    record_activity(
        session,
        principal,
        "policy.deleted",
        target_type="policy",
        target_id=policy.id,
        target_name=policy.name,
        metadata={"detachedAgents": detached},
        source_ip=source_ip,
    )
    await session.flush()
    rules_changed(session, policy.org_id)
    return policy.id


async def set_attached(
    session: AsyncSession,
    principal: Principal,
    policy_id: str,
    agent_id: str,
    *,
    attached: bool,
    source_ip: str | None = None,
) -> Policy:
    """Attaches or detaches a policy. Idempotent: asking for the state it is in changes nothing."""
    policy = await get_policy(session, policy_id)
    agent = await agents.get_agent(session, agent_id)
    existing = await session.get(PolicyAttachment, (principal.org_id, policy.id, agent.id))
    rules_changed(session, principal.org_id)
    if (existing is not None) == attached:
        return policy
    now = utcnow()
    if attached:
        session.add(
            PolicyAttachment(
                org_id=principal.org_id,
                policy_id=policy.id,
                agent_id=agent.id,
                attached_at=now,
                attached_by=principal.actor_id,
            )
        )
        session.add(
            PolicyAttachmentInterval(
                id=new_id("pati"), org_id=principal.org_id, policy_id=policy.id, agent_id=agent.id, attached_at=now
            )
        )
    else:
        await session.delete(existing)
        await _close_intervals(session, policy.id, agent.id, now)
    record_activity(
        session,
        principal,
        "policy.attached" if attached else "policy.detached",
        target_type="policy",
        target_id=policy.id,
        target_name=policy.name,
        metadata={"agentId": agent.id, "agentName": agent.name},
        source_ip=source_ip,
    )
    await session.flush()
    return policy


async def _close_intervals(session: AsyncSession, policy_id: str, agent_id: str | None, at: datetime) -> None:
    """Ends the open attachment intervals of the policy (to one agent, or to all)."""
    stmt = sa.update(PolicyAttachmentInterval).where(
        col(PolicyAttachmentInterval.policy_id) == policy_id, col(PolicyAttachmentInterval.detached_at).is_(None)
    )
    if agent_id is not None:
        stmt = stmt.where(col(PolicyAttachmentInterval.agent_id) == agent_id)
    await session.execute(stmt.values(detached_at=at))


@dataclass(frozen=True, slots=True)
class AttachmentInterval:
    agent_id: str
    attached_at: datetime
    detached_at: datetime | None


async def attachment_intervals(session: AsyncSession, policy_id: str) -> list[AttachmentInterval]:
    """When the policy was attached to which agent, every interval, oldest first."""
    stmt = select(PolicyAttachmentInterval).where(col(PolicyAttachmentInterval.policy_id) == policy_id)
    rows = (await session.exec(stmt.order_by(col(PolicyAttachmentInterval.attached_at)))).all()
    return [AttachmentInterval(r.agent_id, r.attached_at, r.detached_at) for r in rows]


async def clone_pack(
    session: AsyncSession, principal: Principal, pack_id: str, name: str, *, source_ip: str | None = None
) -> Policy:
    pack = all_packs().get(pack_id)
    if pack is None:
        raise NotFound(f"no compliance pack {pack_id!r}", id=pack_id)
    rules = [
        PolicyRuleInput(
            name=r.name,
            description=r.description,
            kind=r.kind,
            config=r.config,
            severity=r.severity,
            action=r.action,
            applies_to=list(r.applies_to),
            key=r.key,
        )
        for r in pack.rules
    ]
    return await create_policy(
        session,
        principal,
        name=name,
        description=pack.description,
        rules=rules,
        note=f"cloned from the {pack.id} pack",
        source_ip=source_ip,
    )


async def agents_of(session: AsyncSession, policy_ids: Iterable[str]) -> dict[str, list[str]]:
    ids = list(set(policy_ids))
    out: dict[str, list[str]] = {i: [] for i in ids}
    if ids:
        rows = (await session.exec(select(PolicyAttachment).where(col(PolicyAttachment.policy_id).in_(ids)))).all()
        for row in rows:
            out[row.policy_id].append(row.agent_id)
    return out


async def policies_of(session: AsyncSession, agent_ids: Iterable[str]) -> dict[str, list[Policy]]:
    ids = list(set(agent_ids))
    out: dict[str, list[Policy]] = {i: [] for i in ids}
    if ids:
        stmt = (
            select(PolicyAttachment.agent_id, Policy)
            .join(Policy, col(Policy.id) == col(PolicyAttachment.policy_id))
            .where(col(PolicyAttachment.agent_id).in_(ids), col(Policy.deleted_at).is_(None))
        )
        for agent_id, policy in (await session.exec(stmt)).all():
            out[agent_id].append(policy)
    return out


async def current_rules_for_agents(session: AsyncSession, agent_ids: Iterable[str]) -> dict[str, list[RuleSpec]]:
    """The rules of the current version of every policy attached to each agent (one query)."""
    ids = list(set(agent_ids))
    out: dict[str, list[RuleSpec]] = {i: [] for i in ids}
    if not ids:
        return out
    stmt = (
        select(PolicyAttachment.agent_id, PolicyVersion)
        .join(Policy, col(Policy.id) == col(PolicyAttachment.policy_id))
        .join(
            PolicyVersion,
            sa.and_(
                col(PolicyVersion.policy_id) == col(Policy.id), col(PolicyVersion.number) == col(Policy.current_version)
            ),
        )
        .where(col(PolicyAttachment.agent_id).in_(ids), col(Policy.deleted_at).is_(None))
    )
    for agent_id, version in (await session.exec(stmt)).all():
        for rule in version.rules:
            out[agent_id].append(
                RuleSpec(
                    id=rule["id"],
                    name=rule["name"],
                    kind=rule["kind"],
                    config=rule["config"],
                    severity=rule["severity"],
                    action=rule["action"],
                    applies_to=tuple(rule["appliesTo"]),
                    policy_id=version.policy_id,
                    policy_version=version.number,
                )
            )
    return out


async def versions_created(
    session: AsyncSession,
    *,
    created_from: datetime,
    created_to: datetime,
    limit: int,
    policy_ids: Collection[str] | None = None,
) -> list[tuple[PolicyVersion, str]]:
    """Versions made in a window (deleted policies' too; only of `policy_ids` when given), oldest first, each
    with its policy's name."""
    stmt = (
        select(PolicyVersion, Policy.name)
        .join(Policy, col(Policy.id) == col(PolicyVersion.policy_id))
        .where(*within(PolicyVersion.created_at, created_from, created_to))
        .where(col(PolicyVersion.policy_id).in_(list(policy_ids)) if policy_ids is not None else sa.true())
        .order_by(col(PolicyVersion.created_at), col(PolicyVersion.id))
        .limit(limit)
    )
    return [(version, name) for version, name in (await session.exec(stmt)).all()]


async def policy_names(session: AsyncSession, policy_ids: Iterable[str]) -> dict[str, str]:
    """Names of policies by id, deleted ones included (one query)."""
    ids = list(set(policy_ids))
    if not ids:
        return {}
    rows = (await session.exec(select(col(Policy.id), col(Policy.name)).where(col(Policy.id).in_(ids)))).all()
    return dict(rows)


def diff(old: PolicyVersion, new: PolicyVersion) -> dict[str, Any]:
    """Rules added, removed and changed between two versions, matched by key."""
    compared = ("name", "description", "kind", "config", "severity", "action", "appliesTo")
    before = {r["key"]: r for r in old.rules}
    after = {r["key"]: r for r in new.rules}
    changed = []
    for key in sorted(before.keys() & after.keys()):
        fields = [f for f in compared if before[key].get(f) != after[key].get(f)]
        if fields:
            changed.append({"key": key, "fields": fields, "before": before[key], "after": after[key]})
    return {
        "added": [after[k] for k in sorted(after.keys() - before.keys())],
        "removed": [before[k] for k in sorted(before.keys() - after.keys())],
        "changed": changed,
    }
