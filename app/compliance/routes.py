"""REST /api/v1/compliance-rules as the API reference documents it (seed 002): rules CRUD and packs (available,
installed, install, uninstall). Thin adapters over the service functions the GraphQL fields call."""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationInfo, field_validator
from starlette.routing import Route

from app.compliance import installs, service
from app.compliance.engine import ACTIONS, KINDS, SEVERITIES, TEXT_FIELDS
from app.compliance.models import ComplianceRule
from app.compliance.packs import Pack, all_packs
from app.rest.handler import Call, endpoint
from app.rest.openapi import Answer, Body, one_of
from app.rest.responses import row_json

# a rule's enum fields: (the stored values, whether they are stored upper-case); applies_to is a list of them
_ENUMS = {
    "kind": (KINDS, False),
    "severity": (SEVERITIES, True),
    "action": (ACTIONS, False),
    "applies_to": (TEXT_FIELDS, False),
}


class RuleEnums(Body):
    """A rule's enum fields in any case (the documents and GraphQL spell them differently), stored spelling out;
    compliance rules and policies' rules alike."""

    @field_validator("kind", "severity", "action", "applies_to", check_fields=False)
    @classmethod
    def _enum(cls, value: Any, info: ValidationInfo) -> Any:
        values, upper = _ENUMS[info.field_name or ""]
        if isinstance(value, list):
            return [one_of(values, v, upper=upper) for v in value]
        return one_of(values, value, upper=upper)


class RuleFields(RuleEnums):
    name: str | None = None
    description: str | None = None
    config: dict[str, Any] | None = None
    severity: str | None = None
    enabled: bool | None = None
    applies_to: list[str] | None = None
    action: str | None = None

    def values(self, kind: str | None = None) -> service.RuleInput:
        return service.RuleInput(
            name=self.name,
            description=self.description,
            kind=kind,
            config=self.config,
            severity=self.severity,
            enabled=self.enabled,
            applies_to=self.applies_to,
            action=self.action,
        )


class RuleIn(RuleFields):
    name: str
    kind: str


class PackIn(Body):
    pack_id: str = Field(description="hipaa, finance or gdpr", max_length=64)


class RuleOut(Answer):
    id: str
    name: str
    kind: str
    severity: str
    enabled: bool
    action: str
    config: dict[str, Any]
    applies_to: list[str]


class PackOut(Answer):
    id: str
    name: str
    description: str
    installed: bool
    rules: list[dict[str, Any]]


class InstalledPackOut(Answer):
    pack_id: str
    installed_at: str
    installed_by: str | None


class Uninstalled(Answer):
    pack_id: str
    removed_rules: int


def rule_json(rule: ComplianceRule) -> dict[str, Any]:
    return row_json(rule)


def pack_json(pack: Pack, installed: set[str]) -> dict[str, Any]:
    out = row_json(pack)
    out["installed"] = pack.id in installed
    return out


@endpoint(responses={200: list[RuleOut]}, graphql="Query.complianceRules", tag="compliance")
async def list_rules(call: Call) -> Any:
    """List all rules for your org"""
    return [rule_json(r) for r in await service.list_rules(call.session)]


@endpoint(body=RuleIn, responses={201: RuleOut}, graphql="Mutation.createComplianceRule", tag="compliance")
async def create_rule(call: Call) -> Any:
    """Create a custom rule"""
    rule = await service.create_rule(
        call.session, call.principal, call.body.values(call.body.kind), source_ip=call.source_ip
    )
    return rule_json(rule)


@endpoint(responses={200: RuleOut}, graphql="Query.complianceRules", tag="compliance")
async def get_rule(call: Call) -> Any:
    """One rule"""
    return rule_json(await service.get_rule(call.session, call.path("rule_id")))


@endpoint(body=RuleFields, responses={200: RuleOut}, graphql="Mutation.updateComplianceRule", tag="compliance")
async def update_rule(call: Call) -> Any:
    """Change a rule"""
    rule = await service.update_rule(
        call.session, call.principal, call.path("rule_id"), call.body.values(), source_ip=call.source_ip
    )
    return rule_json(rule)


@endpoint(responses={204: None}, graphql="Mutation.deleteComplianceRule", tag="compliance")
async def delete_rule(call: Call) -> Any:
    """Delete a rule"""
    await service.delete_rule(call.session, call.principal, call.path("rule_id"), source_ip=call.source_ip)


@endpoint(responses={200: list[PackOut]}, graphql="Query.compliancePacks", tag="compliance")
async def list_packs(call: Call) -> Any:
    """List available packs"""
    installed = {p.pack_id for p in await installs.installed_packs(call.session)}
    return [pack_json(p, installed) for p in all_packs().values()]


@endpoint(responses={200: list[InstalledPackOut]}, graphql="Query.installedPacks", tag="compliance")
async def installed_packs(call: Call) -> Any:
    """List installed packs"""
    return [row_json(p) for p in await installs.installed_packs(call.session)]


@endpoint(body=PackIn, responses={201: list[RuleOut]}, graphql="Mutation.installCompliancePack", tag="compliance")
async def install_pack(call: Call) -> Any:
    """Install a pre-built compliance pack (hipaa, finance, gdpr)"""
    pack_id = call.body.pack_id.strip().lower()
    rules = await installs.install_pack(call.session, call.principal, pack_id, source_ip=call.source_ip)
    return [rule_json(r) for r in rules]


@endpoint(responses={200: Uninstalled}, graphql="Mutation.uninstallCompliancePack", tag="compliance")
async def uninstall_pack(call: Call) -> Any:
    """Uninstall a pack and the rules it installed"""
    pack_id = call.path("pack_id").lower()
    removed = await installs.uninstall_pack(call.session, call.principal, pack_id, source_ip=call.source_ip)
    return {"packId": pack_id, "removedRules": removed}


routes = [
    Route("/api/v1/compliance-rules", list_rules, methods=["GET"]),
    Route("/api/v1/compliance-rules", create_rule, methods=["POST"]),
    Route("/api/v1/compliance-rules/packs", list_packs, methods=["GET"]),
    Route("/api/v1/compliance-rules/packs", install_pack, methods=["POST"]),
    Route("/api/v1/compliance-rules/packs/installed", installed_packs, methods=["GET"]),
    Route("/api/v1/compliance-rules/packs/{pack_id}", uninstall_pack, methods=["DELETE"]),
    Route("/api/v1/compliance-rules/{rule_id}", get_rule, methods=["GET"]),
    Route("/api/v1/compliance-rules/{rule_id}", update_rule, methods=["PATCH"]),
    Route("/api/v1/compliance-rules/{rule_id}", delete_rule, methods=["DELETE"]),
]
