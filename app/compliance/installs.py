"""Installing compliance packs: a pack's rules copied into the organisation, and removed again."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from app.activity.service import record_activity
from app.compliance.changes import rules_changed
from app.compliance.models import ComplianceRule, InstalledPack
from app.compliance.packs import Pack, all_packs
from app.compliance.service import list_rules
from app.db import AsyncSession, new_id
from app.errors import Conflict, NotFound
from app.principal import Principal


def get_pack(pack_id: str) -> Pack:
    pack = all_packs().get(pack_id)
    if pack is None:
        raise NotFound(f"no compliance pack {pack_id!r}; known: {', '.join(all_packs())}", id=pack_id)
    return pack


async def installed_packs(session: AsyncSession) -> list[InstalledPack]:
    return list((await session.exec(select(InstalledPack).order_by(col(InstalledPack.installed_at)))).all())


async def install_pack(
    session: AsyncSession, principal: Principal, pack_id: str, *, source_ip: str | None
) -> list[ComplianceRule]:
    """Copies the pack's rules into the organisation. A second install is CONFLICT (uninstall first)."""
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
        await session.flush()
    except IntegrityError:
        raise Conflict(f"pack {pack.id!r} is already installed", id=pack.id) from None
    rules_changed(session, principal.org_id)
    return rules


async def uninstall_pack(session: AsyncSession, principal: Principal, pack_id: str, *, source_ip: str | None) -> int:
    """Removes the pack and the rules it installed; returns how many rules went."""
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
    await session.flush()
    rules_changed(session, principal.org_id)
    return len(rules)
