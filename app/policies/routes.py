"""REST /api/v1/policies as the API reference documents it (seed 002): the fourteen endpoints, versions addressed
by `versionId`. Thin adapters over the service functions the GraphQL fields call, under the same declarations."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.compliance.engine import ACTIONS, KINDS, SEVERITIES, TEXT_FIELDS
from app.metrics import policies as policy_analytics
from app.pagination import PageRequest
from app.policies import service
from app.policies.models import Policy, PolicyVersion
from app.rest import params
from app.rest.openapi import Answer, Body, body_of, documented
from app.rest.params import query_of
from app.rest.responses import JSONResponse, answers, principal_of, row_json, source_ip
from app.unit_of_work import unit_of_work

MAX_LIMIT = 500


def _one_of(values: tuple[str, ...], value: Any, *, upper: bool = False) -> Any:
    if not isinstance(value, str):
        return value
    wanted = value.strip().upper() if upper else value.strip().lower()
    if wanted not in values:
        raise ValueError(f"must be one of {', '.join(values)} (any case)")
    return wanted


class PolicyRuleIn(Body):
    name: str
    kind: str
    config: dict[str, Any] = Field(default_factory=dict)
    description: str | None = None
    severity: str | None = None
    action: str | None = None
    applies_to: list[str] | None = None
    key: str | None = None

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: Any) -> Any:
        return _one_of(KINDS, value)

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

    def to_service(self) -> service.PolicyRuleInput:
        return service.PolicyRuleInput(
            name=self.name,
            kind=self.kind,
            config=self.config,
            description=self.description or "",
            severity=self.severity or "MEDIUM",
            action=self.action or "alert",
            applies_to=self.applies_to,
            key=self.key,
        )


class PolicyIn(Body):
    name: str
    description: str | None = None
    rules: list[PolicyRuleIn] = Field(default_factory=list)


class PolicyPatch(Body):
    name: str | None = None
    description: str | None = None


class VersionIn(Body):
    rules: list[PolicyRuleIn]
    note: str | None = None


class AgentRef(Body):
    agent_id: str = Field(max_length=64)


class ClonePackIn(Body):
    pack_id: str = Field(max_length=64, description="hipaa, gdpr or finance")
    name: str


class PolicyOut(Answer):
    id: str
    name: str
    description: str
    current_version: int
    created_at: str
    updated_at: str


class PolicyList(Answer):
    policies: list[PolicyOut]


class VersionOut(Answer):
    id: str
    policy_id: str
    number: int
    rules: list[dict[str, Any]]
    note: str
    created_at: str


class Deleted(Answer):
    id: str
    deleted: bool


def policy_json(policy: Policy) -> dict[str, Any]:
    return row_json(policy)


def version_json(version: PolicyVersion) -> dict[str, Any]:
    return row_json(version)


def _policy_id(request: Request) -> str:
    return str(request.path_params["policy_id"])[:64]


WINDOW = (params.timestamp("from"), params.timestamp("to"))


@documented("List all policies", responses={200: PolicyList}, graphql="Query.policies", tag="policies")
@params.accepts(params.integer("limit", minimum=1, maximum=MAX_LIMIT, default=MAX_LIMIT))
@answers
async def list_policies(request: Request) -> Response:
    principal = principal_of(request)
    page = PageRequest(query_of(request)["limit"])
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        rows = (await service.list_policies(session, page=page))[: page.size]
    return JSONResponse({"policies": [policy_json(p) for p in rows]})


@documented(
    "Create a policy (version 1)",
    body=PolicyIn,
    responses={201: PolicyOut},
    graphql="Mutation.createPolicy",
    tag="policies",
)
@answers
async def create_policy(request: Request) -> Response:
    principal = principal_of(request)
    body = await body_of(request, PolicyIn)
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        policy = await service.create_policy(
            session,
            principal,
            name=body.name,
            description=body.description,
            rules=[r.to_service() for r in body.rules],
            source_ip=source_ip(request),
        )
        answer = policy_json(policy)
    return JSONResponse(answer, status_code=201)


@documented(
    "Clone a compliance pack into a policy",
    body=ClonePackIn,
    responses={201: PolicyOut},
    graphql="Mutation.clonePack",
    tag="policies",
)
@answers
async def clone_pack(request: Request) -> Response:
    principal = principal_of(request)
    body = await body_of(request, ClonePackIn)
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        policy = await service.clone_pack(
            session, principal, body.pack_id.strip().lower(), body.name, source_ip=source_ip(request)
        )
        answer = policy_json(policy)
    return JSONResponse(answer, status_code=201)


async def _analytics(request: Request, policy_id: str | None) -> Response:
    principal = principal_of(request)
    q = query_of(request)
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        if policy_id is not None:
            await service.get_policy(session, policy_id)
        result = await policy_analytics.analytics(
            session, occurred_from=q["from"], occurred_to=q["to"], policy_id=policy_id
        )
    return JSONResponse(row_json(result))


@documented(
    "Org-wide policy analytics", responses={200: dict[str, Any]}, graphql="Query.policyAnalytics", tag="policies"
)
@params.accepts(*WINDOW)
@answers
async def org_analytics(request: Request) -> Response:
    return await _analytics(request, None)


@documented("Get a single policy", responses={200: PolicyOut}, graphql="Query.policy", tag="policies")
@answers
async def get_policy(request: Request) -> Response:
    principal = principal_of(request)
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        return JSONResponse(policy_json(await service.get_policy(session, _policy_id(request))))


@documented("Per-policy analytics", responses={200: dict[str, Any]}, graphql="Policy.analytics", tag="policies")
@params.accepts(*WINDOW)
@answers
async def policy_analytics_route(request: Request) -> Response:
    return await _analytics(request, _policy_id(request))


@documented(
    "Create a new version (and make it current)",
    body=VersionIn,
    responses={201: VersionOut},
    graphql="Mutation.createPolicyVersion",
    tag="policies",
)
@answers
async def create_version(request: Request) -> Response:
    principal = principal_of(request)
    body = await body_of(request, VersionIn)
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        version = await service.create_version(
            session,
            principal,
            _policy_id(request),
            rules=[r.to_service() for r in body.rules],
            note=body.note or "",
            source_ip=source_ip(request),
        )
        answer = version_json(version)
    return JSONResponse(answer, status_code=201)


@documented("List versions, newest first", responses={200: list[VersionOut]}, graphql="Policy.versions", tag="policies")
@params.accepts(params.integer("limit", minimum=1, maximum=MAX_LIMIT, default=MAX_LIMIT))
@answers
async def list_versions(request: Request) -> Response:
    principal = principal_of(request)
    page = PageRequest(query_of(request)["limit"])
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        policy = await service.get_policy(session, _policy_id(request))
        rows = (await service.list_versions(session, policy.id, page=page))[: page.size]
    return JSONResponse([version_json(v) for v in rows])


@documented("Get a specific version", responses={200: VersionOut}, graphql="Policy.version", tag="policies")
@answers
async def get_version(request: Request) -> Response:
    principal = principal_of(request)
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        policy = await service.get_policy(session, _policy_id(request))
        version = await service.get_version_by_id(session, policy.id, str(request.path_params["version_id"])[:64])
    return JSONResponse(version_json(version))


@documented(
    "Restore an older version (as a new version equal to it)",
    responses={201: VersionOut},
    graphql="Mutation.restorePolicyVersion",
    tag="policies",
)
@answers
async def restore_version(request: Request) -> Response:
    principal = principal_of(request)
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        policy = await service.get_policy(session, _policy_id(request))
        old = await service.get_version_by_id(session, policy.id, str(request.path_params["version_id"])[:64])
        version = await service.restore_version(session, principal, policy.id, old.number, source_ip=source_ip(request))
        answer = version_json(version)
    return JSONResponse(answer, status_code=201)


@documented(
    "Update a policy's name or description",
    body=PolicyPatch,
    responses={200: PolicyOut},
    graphql="Mutation.updatePolicy",
    tag="policies",
)
@answers
async def update_policy(request: Request) -> Response:
    principal = principal_of(request)
    body = await body_of(request, PolicyPatch)
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        policy = await service.update_policy(
            session,
            principal,
            _policy_id(request),
            name=body.name,
            description=body.description,
            source_ip=source_ip(request),
        )
        answer = policy_json(policy)
    return JSONResponse(answer)


@documented("Delete a policy", responses={200: Deleted}, graphql="Mutation.deletePolicy", tag="policies")
@answers
async def delete_policy(request: Request) -> Response:
    principal = principal_of(request)
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        deleted = await service.delete_policy(session, principal, _policy_id(request), source_ip=source_ip(request))
    return JSONResponse({"id": deleted, "deleted": True})


async def _attach(request: Request, *, attached: bool) -> Response:
    principal = principal_of(request)
    body = await body_of(request, AgentRef)
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        policy = await service.set_attached(
            session, principal, _policy_id(request), body.agent_id, attached=attached, source_ip=source_ip(request)
        )
        answer = policy_json(policy)
    return JSONResponse(answer)


@documented(
    "Attach policy to an agent",
    body=AgentRef,
    responses={200: PolicyOut},
    graphql="Mutation.attachPolicy",
    tag="policies",
)
@answers
async def attach(request: Request) -> Response:
    return await _attach(request, attached=True)


@documented(
    "Detach policy from an agent",
    body=AgentRef,
    responses={200: PolicyOut},
    graphql="Mutation.detachPolicy",
    tag="policies",
)
@answers
async def detach(request: Request) -> Response:
    return await _attach(request, attached=False)


P = "/api/v1/policies"
routes = [
    Route(P, list_policies, methods=["GET"]),
    Route(P, create_policy, methods=["POST"]),
    Route(f"{P}/clone-pack", clone_pack, methods=["POST"]),
    Route(f"{P}/analytics", org_analytics, methods=["GET"]),
    Route(f"{P}/{{policy_id}}", get_policy, methods=["GET"]),
    Route(f"{P}/{{policy_id}}/analytics", policy_analytics_route, methods=["GET"]),
    Route(f"{P}/{{policy_id}}/versions", create_version, methods=["POST"]),
    Route(f"{P}/{{policy_id}}/versions", list_versions, methods=["GET"]),
    Route(f"{P}/{{policy_id}}/versions/{{version_id}}", get_version, methods=["GET"]),
    Route(f"{P}/{{policy_id}}/versions/{{version_id}}/restore", restore_version, methods=["POST"]),
    Route(f"{P}/{{policy_id}}", update_policy, methods=["PATCH"]),
    Route(f"{P}/{{policy_id}}", delete_policy, methods=["DELETE"]),
    Route(f"{P}/{{policy_id}}/agents", attach, methods=["POST"]),
    Route(f"{P}/{{policy_id}}/agents", detach, methods=["DELETE"]),
]
