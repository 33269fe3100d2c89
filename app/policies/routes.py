"""REST /api/v1/policies as the API reference documents it (seed 002): the fourteen endpoints, versions addressed
by `versionId`. Thin adapters over the service functions the GraphQL fields call, under the same declarations."""

from __future__ import annotations

from typing import Any

from pydantic import Field
from starlette.routing import Route

from app.compliance.routes import RuleEnums
from app.metrics import policies as policy_analytics
from app.pagination import PageRequest
from app.policies import service
from app.policies.models import Policy, PolicyVersion
from app.rest import params
from app.rest.handler import Call, endpoint
from app.rest.openapi import Answer, Body
from app.rest.responses import row_json

MAX_LIMIT = 500


class PolicyRuleIn(RuleEnums):
    name: str
    kind: str
    config: dict[str, Any] = Field(default_factory=dict)
    description: str | None = None
    severity: str | None = None
    action: str | None = None
    applies_to: list[str] | None = None
    key: str | None = None

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


WINDOW = (params.timestamp("from"), params.timestamp("to"))
LIMIT = params.integer("limit", minimum=1, maximum=MAX_LIMIT, default=MAX_LIMIT)


@params.accepts(LIMIT)
@endpoint(responses={200: PolicyList}, graphql="Query.policies", tag="policies")
async def list_policies(call: Call) -> Any:
    """List all policies"""
    page = PageRequest(call.query["limit"])
    rows = (await service.list_policies(call.session, page=page))[: page.size]
    return {"policies": [policy_json(p) for p in rows]}


@endpoint(body=PolicyIn, responses={201: PolicyOut}, graphql="Mutation.createPolicy", tag="policies")
async def create_policy(call: Call) -> Any:
    """Create a policy (version 1)"""
    body = call.body
    policy = await service.create_policy(
        call.session,
        call.principal,
        name=body.name,
        description=body.description,
        rules=[r.to_service() for r in body.rules],
        source_ip=call.source_ip,
    )
    return policy_json(policy)


@endpoint(body=ClonePackIn, responses={201: PolicyOut}, graphql="Mutation.clonePack", tag="policies")
async def clone_pack(call: Call) -> Any:
    """Clone a compliance pack into a policy"""
    pack_id = call.body.pack_id.strip().lower()
    policy = await service.clone_pack(call.session, call.principal, pack_id, call.body.name, source_ip=call.source_ip)
    return policy_json(policy)


async def _analytics(call: Call, policy_id: str | None) -> Any:
    if policy_id is not None:
        await service.get_policy(call.session, policy_id)
    result = await policy_analytics.analytics(
        call.session, occurred_from=call.query["from"], occurred_to=call.query["to"], policy_id=policy_id
    )
    return row_json(result)


@params.accepts(*WINDOW)
@endpoint(responses={200: dict[str, Any]}, graphql="Query.policyAnalytics", tag="policies")
async def org_analytics(call: Call) -> Any:
    """Org-wide policy analytics"""
    return await _analytics(call, None)


@endpoint(responses={200: PolicyOut}, graphql="Query.policy", tag="policies")
async def get_policy(call: Call) -> Any:
    """Get a single policy"""
    return policy_json(await service.get_policy(call.session, call.path("policy_id")))


@params.accepts(*WINDOW)
@endpoint(responses={200: dict[str, Any]}, graphql="Policy.analytics", tag="policies")
async def policy_analytics_route(call: Call) -> Any:
    """Per-policy analytics"""
    return await _analytics(call, call.path("policy_id"))


@endpoint(body=VersionIn, responses={201: VersionOut}, graphql="Mutation.createPolicyVersion", tag="policies")
async def create_version(call: Call) -> Any:
    """Create a new version (and make it current)"""
    version = await service.create_version(
        call.session,
        call.principal,
        call.path("policy_id"),
        rules=[r.to_service() for r in call.body.rules],
        note=call.body.note or "",
        source_ip=call.source_ip,
    )
    return version_json(version)


@params.accepts(LIMIT)
@endpoint(responses={200: list[VersionOut]}, graphql="Policy.versions", tag="policies")
async def list_versions(call: Call) -> Any:
    """List versions, newest first"""
    page = PageRequest(call.query["limit"])
    policy = await service.get_policy(call.session, call.path("policy_id"))
    rows = (await service.list_versions(call.session, policy.id, page=page))[: page.size]
    return [version_json(v) for v in rows]


async def _version(call: Call) -> PolicyVersion:
    policy = await service.get_policy(call.session, call.path("policy_id"))
    return await service.get_version_by_id(call.session, policy.id, call.path("version_id"))


@endpoint(responses={200: VersionOut}, graphql="Policy.version", tag="policies")
async def get_version(call: Call) -> Any:
    """Get a specific version"""
    return version_json(await _version(call))


@endpoint(responses={201: VersionOut}, graphql="Mutation.restorePolicyVersion", tag="policies")
async def restore_version(call: Call) -> Any:
    """Restore an older version (as a new version equal to it)"""
    old = await _version(call)
    version = await service.restore_version(
        call.session, call.principal, old.policy_id, old.number, source_ip=call.source_ip
    )
    return version_json(version)


@endpoint(body=PolicyPatch, responses={200: PolicyOut}, graphql="Mutation.updatePolicy", tag="policies")
async def update_policy(call: Call) -> Any:
    """Update a policy's name or description"""
    return policy_json(await call.apply(service.update_policy, call.path("policy_id")))


@endpoint(responses={200: Deleted}, graphql="Mutation.deletePolicy", tag="policies")
async def delete_policy(call: Call) -> Any:
    """Delete a policy"""
    deleted = await service.delete_policy(
        call.session, call.principal, call.path("policy_id"), source_ip=call.source_ip
    )
    return {"id": deleted, "deleted": True}


async def _attach(call: Call, *, attached: bool) -> Any:
    policy = await service.set_attached(
        call.session,
        call.principal,
        call.path("policy_id"),
        call.body.agent_id,
        attached=attached,
        source_ip=call.source_ip,
    )
    return policy_json(policy)


@endpoint(body=AgentRef, responses={200: PolicyOut}, graphql="Mutation.attachPolicy", tag="policies")
async def attach(call: Call) -> Any:
    """Attach policy to an agent"""
    return await _attach(call, attached=True)


@endpoint(body=AgentRef, responses={200: PolicyOut}, graphql="Mutation.detachPolicy", tag="policies")
async def detach(call: Call) -> Any:
    """Detach policy from an agent"""
    return await _attach(call, attached=False)


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
