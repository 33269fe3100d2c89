"""REST /api/v1/compliance-rules as the API reference documents it (seed 002): rules CRUD and packs (available,
installed, install, uninstall). Thin adapters over the service functions the GraphQL fields call."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.compliance import installs, service
from app.compliance.engine import ACTIONS, KINDS, SEVERITIES, TEXT_FIELDS
from app.compliance.models import ComplianceRule
from app.compliance.packs import Pack, all_packs
from app.rest.openapi import Answer, Body, body_of, documented
from app.rest.responses import JSONResponse, answers, principal_of, row_json, source_ip
from app.unit_of_work import unit_of_work


def _one_of(values: tuple[str, ...], value: Any, *, upper: bool = False) -> Any:
    """Enum values in any case (the documents and GraphQL spell them differently), stored spelling out."""
    if not isinstance(value, str):
        return value
    wanted = value.strip().upper() if upper else value.strip().lower()
    if wanted not in values:
        raise ValueError(f"must be one of {', '.join(values)} (any case)")
    return wanted


class RuleFields(Body):
    name: str | None = None
    description: str | None = None
    config: dict[str, Any] | None = None
    severity: str | None = None
    enabled: bool | None = None
    applies_to: list[str] | None = None
    action: str | None = None

    @field_validator("severity")
    @classmethod
    def _severity(cls, value: Any) -> Any:
        return _one_of(SEVERITIES, value, upper=True)

    @field_validator("action")
    @classmethod
    def _action(cls, value: Any) -> Any:
        return _one_of(ACTIONS, value)

    @field_validator("applies_to")
    @classmethod
    def _applies_to(cls, value: Any) -> Any:
        return [_one_of(TEXT_FIELDS, v) for v in value] if isinstance(value, list) else value

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

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: Any) -> Any:
        return _one_of(KINDS, value)


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


def _rule_id(request: Request) -> str:
    return str(request.path_params["rule_id"])[:64]


@documented(
    "List all rules for your org", responses={200: list[RuleOut]}, graphql="Query.complianceRules", tag="compliance"
)
@answers
async def list_rules(request: Request) -> Response:
    principal = principal_of(request)
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        return JSONResponse([rule_json(r) for r in await service.list_rules(session)])


@documented(
    "Create a custom rule",
    body=RuleIn,
    responses={201: RuleOut},
    graphql="Mutation.createComplianceRule",
    tag="compliance",
)
@answers
async def create_rule(request: Request) -> Response:
    principal = principal_of(request)
    body = await body_of(request, RuleIn)
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        rule = await service.create_rule(session, principal, body.values(body.kind), source_ip=source_ip(request))
        answer = rule_json(rule)
    return JSONResponse(answer, status_code=201)


@documented("One rule", responses={200: RuleOut}, graphql="Query.complianceRules", tag="compliance")
@answers
async def get_rule(request: Request) -> Response:
    principal = principal_of(request)
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        return JSONResponse(rule_json(await service.get_rule(session, _rule_id(request))))


@documented(
    "Change a rule",
    body=RuleFields,
    responses={200: RuleOut},
    graphql="Mutation.updateComplianceRule",
    tag="compliance",
)
@answers
async def update_rule(request: Request) -> Response:
    principal = principal_of(request)
    body = await body_of(request, RuleFields)
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        rule = await service.update_rule(
            session, principal, _rule_id(request), body.values(), source_ip=source_ip(request)
        )
        answer = rule_json(rule)
    return JSONResponse(answer)


@documented("Delete a rule", responses={204: None}, graphql="Mutation.deleteComplianceRule", tag="compliance")
@answers
async def delete_rule(request: Request) -> Response:
    principal = principal_of(request)
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        await service.delete_rule(session, principal, _rule_id(request), source_ip=source_ip(request))
    return Response(status_code=204)


@documented("List available packs", responses={200: list[PackOut]}, graphql="Query.compliancePacks", tag="compliance")
@answers
async def list_packs(request: Request) -> Response:
    principal = principal_of(request)
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        installed = {p.pack_id for p in await installs.installed_packs(session)}
    return JSONResponse([pack_json(p, installed) for p in all_packs().values()])


@documented(
    "List installed packs",
    responses={200: list[InstalledPackOut]},
    graphql="Query.installedPacks",
    tag="compliance",
)
@answers
async def installed_packs(request: Request) -> Response:
    principal = principal_of(request)
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        rows = await installs.installed_packs(session)
    return JSONResponse([row_json(p) for p in rows])


@documented(
    "Install a pre-built compliance pack (hipaa, finance, gdpr)",
    body=PackIn,
    responses={201: list[RuleOut]},
    graphql="Mutation.installCompliancePack",
    tag="compliance",
)
@answers
async def install_pack(request: Request) -> Response:
    principal = principal_of(request)
    body = await body_of(request, PackIn)
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        rules = await installs.install_pack(
            session, principal, body.pack_id.strip().lower(), source_ip=source_ip(request)
        )
        answer = [rule_json(r) for r in rules]
    return JSONResponse(answer, status_code=201)


@documented(
    "Uninstall a pack and the rules it installed",
    responses={200: Uninstalled},
    graphql="Mutation.uninstallCompliancePack",
    tag="compliance",
)
@answers
async def uninstall_pack(request: Request) -> Response:
    principal = principal_of(request)
    pack_id = str(request.path_params["pack_id"])[:64].lower()
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        removed = await installs.uninstall_pack(session, principal, pack_id, source_ip=source_ip(request))
    return JSONResponse({"packId": pack_id, "removedRules": removed})


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
