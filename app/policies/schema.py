"""GraphQL types and operations of the policies domain."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, cast

import strawberry

from app.compliance.schema import RecordField, RuleAction, RuleKind, Severity
from app.cost import Cost
from app.errors import NotFound
from app.info import Info, RequestInfo
from app.metrics import policies as policy_analytics
from app.pagination import (
    After,
    Before,
    Connection,
    First,
    Last,
    build_connection,
    page_request,
)
from app.policies import models, service
from app.scalars import JSON, stored

if TYPE_CHECKING:
    from app.agents.schema import Agent


@strawberry.type(description="A rule as a policy version holds it (a snapshot: it never changes).")
class PolicyRule:
    id: strawberry.ID = strawberry.field(description="This rule's id in this version (alerts name it).")
    key: str = strawberry.field(description="Stable key across versions (diffs match rules by it).")
    name: str = strawberry.field(description="Name.")
    description: str = strawberry.field(description="What it is for.")
    kind: RuleKind = strawberry.field(description="What it checks.")
    config: JSON = strawberry.field(description="Kind-specific settings.")
    severity: Severity = strawberry.field(description="Severity of its alerts.")
    action: RuleAction = strawberry.field(description="ALERT or BLOCK.")
    applies_to: list[RecordField] = strawberry.field(description="Fields text rules check.")

    @classmethod
    def of(cls, rule: dict[str, Any]) -> PolicyRule:
        return cls(
            id=strawberry.ID(rule["id"]),
            key=rule["key"],
            name=rule["name"],
            description=rule["description"],
            kind=RuleKind(rule["kind"]),
            config=rule["config"],
            severity=Severity(rule["severity"]),
            action=RuleAction(rule["action"]),
            applies_to=[RecordField(f) for f in rule["appliesTo"]],
        )


@strawberry.type(description="A rule that differs between two versions.")
class PolicyRuleChange:
    key: str = strawberry.field(description="The rule's key.")
    fields: list[str] = strawberry.field(description="What changed (name, config, severity …).")
    before: PolicyRule = strawberry.field(description="The rule in the older version.")
    after: PolicyRule = strawberry.field(description="The rule in the newer version.")


@strawberry.type(description="Rules added, removed and changed between two versions.")
class PolicyDiff:
    against: int = strawberry.field(description="The version compared with.")
    added: list[PolicyRule] = strawberry.field(description="Rules only in this version.")
    removed: list[PolicyRule] = strawberry.field(description="Rules only in the other version.")
    changed: list[PolicyRuleChange] = strawberry.field(description="Rules in both that differ.")


@strawberry.type(description="An immutable snapshot of a policy's rules.")
class PolicyVersion:
    row: strawberry.Private[models.PolicyVersion]
    id: strawberry.ID = strawberry.field(description="Version id (`polv_…`).")
    number: int = strawberry.field(description="1, 2, 3 …")
    note: str = strawberry.field(description="Why this version was made.")
    created_by: str | None = strawberry.field(description="Who made it (user id).")
    created_at: datetime = strawberry.field(description="When.")

    @classmethod
    def of(cls, version: models.PolicyVersion) -> PolicyVersion:
        return cls(
            row=version,
            id=strawberry.ID(version.id),
            number=version.number,
            note=version.note,
            created_by=version.created_by,
            created_at=version.created_at,
        )

    @strawberry.field(description="The rules, embedded.")
    def rules(self) -> list[PolicyRule]:
        return [PolicyRule.of(r) for r in self.row.rules]

    @strawberry.field(description="Differences from another version of the same policy.")
    async def diff(
        self, info: Info, against: Annotated[int, strawberry.argument(description="The other version number.")]
    ) -> PolicyDiff:
        other = await service.get_version(await info.context.db(), self.row.policy_id, against)
        older, newer = (other, self.row) if other.number <= self.row.number else (self.row, other)
        result = service.diff(older, newer)
        if newer is not self.row:  # seen from this version, additions and removals swap
            result["added"], result["removed"] = result["removed"], result["added"]
        return PolicyDiff(
            against=against,
            added=[PolicyRule.of(r) for r in result["added"]],
            removed=[PolicyRule.of(r) for r in result["removed"]],
            changed=[
                PolicyRuleChange(
                    key=c["key"], fields=c["fields"], before=PolicyRule.of(c["before"]), after=PolicyRule.of(c["after"])
                )
                for c in result["changed"]
            ],
        )


PolicyVersionConnection = Connection[PolicyVersion]


@strawberry.type(description="A named, versioned set of rules, attached to agents.")
class Policy:
    row: strawberry.Private[models.Policy]
    id: strawberry.ID = strawberry.field(description="Policy id (`pol_…`).")
    name: str = strawberry.field(description="Name, unique in the organisation.")
    description: str = strawberry.field(description="What it is for.")
    created_at: datetime = strawberry.field(description="When it was created.")
    updated_at: datetime = strawberry.field(description="When it last changed.")

    @classmethod
    def of(cls, policy: models.Policy) -> Policy:
        return cls(
            row=policy,
            id=strawberry.ID(policy.id),
            name=policy.name,
            description=policy.description,
            created_at=policy.created_at,
            updated_at=policy.updated_at,
        )

    @strawberry.field(description="The version in force.")
    async def current_version(self, info: Info) -> PolicyVersion:
        version = await info.context.loaders.policy_version.load((self.row.id, self.row.current_version))
        assert version is not None  # the version in force always exists (a foreign key)
        return PolicyVersion.of(version)

    @strawberry.field(description="A given version.")
    async def version(
        self, info: Info, number: Annotated[int, strawberry.argument(description="Version number.")]
    ) -> PolicyVersion | None:
        try:
            return PolicyVersion.of(await service.get_version(await info.context.db(), self.row.id, number))
        except NotFound:
            return None

    @strawberry.field(description="All versions, newest first.")
    async def versions(
        self,
        info: Info,
        first: First = None,
        after: After = None,
        last: Last = None,
        before: Before = None,
    ) -> PolicyVersionConnection:
        page = page_request(first, after, last, before, types=(int,))
        rows = await service.list_versions(await info.context.db(), self.row.id, page=page)
        return build_connection(rows, page=page, to_node=PolicyVersion.of, sort_key=lambda v: [v.number])

    @strawberry.field(
        description="This policy's alerts against the records of the agents it is attached to.",
        directives=[Cost(weight=5_000)],
    )
    async def analytics(
        self,
        info: Info,
        from_: Annotated[datetime | None, strawberry.argument(name="from", description="Default: 30 days ago.")] = None,
        to: Annotated[datetime | None, strawberry.argument(description="Default: now.")] = None,
    ) -> PolicyAnalytics:
        result = await policy_analytics.analytics(
            await info.context.db(), occurred_from=from_, occurred_to=to, policy_id=self.row.id
        )
        return PolicyAnalytics.of(result)

    @strawberry.field(description="Agents it is attached to.")
    async def agents(self, info: Info) -> list[Annotated[Agent, strawberry.lazy("app.agents.schema")]]:
        from app.agents.schema import Agent

        ids = await info.context.loaders.agent_ids_by_policy.load(self.row.id)
        found = await info.context.loaders.agent.load_many(ids)
        return [Agent.from_model(a) for a in found if a is not None]


PolicyConnection = Connection[Policy]


@strawberry.type(description="Violations of one rule.")
class RuleViolations:
    rule_id: str = strawberry.field(description="The rule (an organisation rule, or a rule of a policy version).")
    rule_name: str = strawberry.field(description="Its name when it fired.")
    count: int = strawberry.field(description="Alerts it raised.")


@strawberry.type(description="A count for one value of a dimension.")
class DimensionCount:
    key: str | None = strawberry.field(description="The value (severity, agent id …); null for records without one.")
    count: int = strawberry.field(description="How many.")


@strawberry.type(description="Violations raised under one policy version.")
class VersionViolations:
    policy_id: str | None = strawberry.field(description="The policy; null for organisation rules.")
    version: int | None = strawberry.field(description="The version number.")
    count: int = strawberry.field(description="Alerts raised.")


@strawberry.type(description="One UTC day.")
class DailyCount:
    day: str = strawberry.field(description="YYYY-MM-DD (UTC).")
    records: int = strawberry.field(description="Records evaluated.")
    violations: int = strawberry.field(description="Alerts raised.")


@strawberry.type(description="How records fared against the rules over a window (computed in SQL).")
class PolicyAnalytics:
    from_: datetime = strawberry.field(name="from", description="Window start.")
    to: datetime = strawberry.field(description="Window end.")
    records_evaluated: int = strawberry.field(description="Records in the window.")
    violations: int = strawberry.field(description="Alerts raised in the window.")
    violation_rate: float = strawberry.field(description="Records with at least one alert / records evaluated.")
    block_rate: float = strawberry.field(description="Blocked records / records evaluated.")
    by_rule: list[RuleViolations] = strawberry.field(description="Alerts per rule, most first.")
    by_severity: list[DimensionCount] = strawberry.field(description="Alerts per severity.")
    by_agent: list[DimensionCount] = strawberry.field(description="Alerts per agent.")
    by_version: list[VersionViolations] = strawberry.field(description="Alerts per policy version.")
    daily: list[DailyCount] = strawberry.field(description="Per UTC day.")

    @classmethod
    def of(cls, result: policy_analytics.Analytics) -> PolicyAnalytics:
        return cls(
            from_=result.occurred_from,
            to=result.occurred_to,
            records_evaluated=result.records_evaluated,
            violations=result.violations,
            violation_rate=result.violation_rate,
            block_rate=result.block_rate,
            by_rule=[RuleViolations(rule_id=r, rule_name=n, count=c) for r, n, c in result.by_rule],
            by_severity=[DimensionCount(key=k, count=v) for k, v in sorted(result.by_severity.items())],
            by_agent=[DimensionCount(key=k, count=v) for k, v in result.by_agent.items()],
            by_version=[VersionViolations(policy_id=p, version=v, count=c) for p, v, c in result.by_version],
            daily=[DailyCount(day=d.isoformat(), records=r, violations=v) for d, r, v in result.daily],
        )


@strawberry.input(description="A rule of a policy version.")
class PolicyRuleInput:
    name: str = strawberry.field(description="Name.")
    kind: RuleKind = strawberry.field(description="What it checks.")
    config: JSON = strawberry.field(description="Kind-specific settings (see ComplianceRuleInput.config).")
    description: str | None = strawberry.field(default=None, description="What it is for.")
    severity: Severity | None = strawberry.field(default=None, description="Default MEDIUM.")
    action: RuleAction | None = strawberry.field(default=None, description="Default ALERT.")
    applies_to: list[RecordField] | None = strawberry.field(default=None, description="Default: all text fields.")
    key: str | None = strawberry.field(default=None, description="Stable key; default: derived from the name.")

    def to_service(self) -> service.PolicyRuleInput:
        return service.PolicyRuleInput(
            name=self.name,
            kind=stored(self.kind),
            config=self.config,
            description=self.description or "",
            severity=stored(self.severity) if self.severity else "MEDIUM",
            action=cast(str, self.action.value) if self.action else "alert",  # enum_value: members typed as definitions
            applies_to=[stored(f) for f in self.applies_to] if self.applies_to is not None else None,
            key=self.key,
        )


@strawberry.input(description="A new policy and its first version.")
class CreatePolicyInput:
    name: str = strawberry.field(description="Name, unique in the organisation.")
    description: str | None = strawberry.field(default=None, description="What it is for.")
    rules: list[PolicyRuleInput] = strawberry.field(description="The rules of version 1 (at least one).")


@strawberry.input(description="Name and description; the rules change only through new versions.")
class UpdatePolicyInput:
    name: str | None = strawberry.field(default=None, description="New name.")
    description: str | None = strawberry.field(default=None, description="New description.")


@strawberry.type
class PoliciesQuery:
    @strawberry.field(description="The organisation's policies, newest first.")
    async def policies(
        self,
        info: Info,
        first: First = None,
        after: After = None,
        last: Last = None,
        before: Before = None,
    ) -> PolicyConnection:
        page = page_request(first, after, last, before, types=(datetime, str))
        rows = await service.list_policies(
            await info.context.db(),
            page=page,
        )
        return build_connection(rows, page=page, to_node=Policy.of, sort_key=lambda p: (p.created_at, p.id))

    # aggregates over every alert and record of the window
    @strawberry.field(
        description="Organisation-wide: records evaluated, violations, rates and breakdowns.",
        directives=[Cost(weight=5_000)],
    )
    async def policy_analytics(
        self,
        info: Info,
        from_: Annotated[datetime | None, strawberry.argument(name="from", description="Default: 30 days ago.")] = None,
        to: Annotated[datetime | None, strawberry.argument(description="Default: now.")] = None,
    ) -> PolicyAnalytics:
        result = await policy_analytics.analytics(await info.context.db(), occurred_from=from_, occurred_to=to)
        return PolicyAnalytics.of(result)

    @strawberry.field(description="One policy; null when it does not exist in your organisation.")
    async def policy(
        self, info: Info, id: Annotated[strawberry.ID, strawberry.argument(description="Policy id.")]
    ) -> Policy | None:
        try:
            return Policy.of(await service.get_policy(await info.context.db(), str(id)))
        except NotFound:
            return None


async def _set_attached(
    info: RequestInfo, policy_id: strawberry.ID, agent_id: strawberry.ID, *, attached: bool
) -> Policy:
    ctx = info.context
    policy = await service.set_attached(
        await ctx.db(), await ctx.principal(), str(policy_id), str(agent_id), attached=attached, source_ip=ctx.source_ip
    )
    return Policy.of(policy)


@strawberry.type
class PoliciesMutation:
    @strawberry.mutation(description="Create a policy with version 1. Owners and admins.")
    async def create_policy(
        self, info: RequestInfo, input: Annotated[CreatePolicyInput, strawberry.argument(description="The policy.")]
    ) -> Policy:
        ctx = info.context
        session = await ctx.db()
        policy = await service.create_policy(
            session,
            await ctx.principal(),
            name=input.name,
            description=input.description,
            rules=[r.to_service() for r in input.rules],
            source_ip=ctx.source_ip,
        )
        return Policy.of(policy)

    @strawberry.mutation(description="Change a policy's name or description. Owners and admins.")
    async def update_policy(
        self,
        info: RequestInfo,
        id: Annotated[strawberry.ID, strawberry.argument(description="Policy id.")],
        input: Annotated[UpdatePolicyInput, strawberry.argument(description="Fields to change.")],
    ) -> Policy:
        ctx = info.context
        policy = await service.update_policy(
            await ctx.db(),
            await ctx.principal(),
            str(id),
            name=input.name,
            description=input.description,
            source_ip=ctx.source_ip,
        )
        return Policy.of(policy)

    @strawberry.mutation(description="Delete a policy: detached from its agents, versions kept. Returns the id.")
    async def delete_policy(
        self, info: RequestInfo, id: Annotated[strawberry.ID, strawberry.argument(description="Policy id.")]
    ) -> strawberry.ID:
        ctx = info.context
        deleted = await service.delete_policy(await ctx.db(), await ctx.principal(), str(id), source_ip=ctx.source_ip)
        return strawberry.ID(deleted)

    @strawberry.mutation(description="Add version n+1 with these rules and make it current. Owners and admins.")
    async def create_policy_version(
        self,
        info: RequestInfo,
        policy_id: Annotated[strawberry.ID, strawberry.argument(description="Policy id.")],
        rules: Annotated[list[PolicyRuleInput], strawberry.argument(description="The full rule set.")],
        note: Annotated[str | None, strawberry.argument(description="Why.")] = None,
    ) -> PolicyVersion:
        ctx = info.context
        session = await ctx.db()
        version = await service.create_version(
            session,
            await ctx.principal(),
            str(policy_id),
            rules=[r.to_service() for r in rules],
            note=note or "",
            source_ip=ctx.source_ip,
        )
        return PolicyVersion.of(version)

    @strawberry.mutation(description="Add a new version equal to an old one (history is never rewritten).")
    async def restore_policy_version(
        self,
        info: RequestInfo,
        policy_id: Annotated[strawberry.ID, strawberry.argument(description="Policy id.")],
        version_number: Annotated[int, strawberry.argument(description="The version to restore.")],
    ) -> PolicyVersion:
        ctx = info.context
        session = await ctx.db()
        version = await service.restore_version(
            session, await ctx.principal(), str(policy_id), version_number, source_ip=ctx.source_ip
        )
        return PolicyVersion.of(version)

    @strawberry.mutation(description="Attach a policy to an agent (idempotent): its records are checked from now on.")
    async def attach_policy(
        self,
        info: RequestInfo,
        policy_id: Annotated[strawberry.ID, strawberry.argument(description="Policy id.")],
        agent_id: Annotated[strawberry.ID, strawberry.argument(description="Agent id.")],
    ) -> Policy:
        return await _set_attached(info, policy_id, agent_id, attached=True)

    @strawberry.mutation(description="Detach a policy from an agent (idempotent).")
    async def detach_policy(
        self,
        info: RequestInfo,
        policy_id: Annotated[strawberry.ID, strawberry.argument(description="Policy id.")],
        agent_id: Annotated[strawberry.ID, strawberry.argument(description="Agent id.")],
    ) -> Policy:
        return await _set_attached(info, policy_id, agent_id, attached=False)

    @strawberry.mutation(description="Create a policy from a compliance pack's rules.")
    async def clone_pack(
        self,
        info: RequestInfo,
        pack_id: Annotated[strawberry.ID, strawberry.argument(description="hipaa, gdpr or finance.")],
        name: Annotated[str, strawberry.argument(description="Name of the new policy.")],
    ) -> Policy:
        ctx = info.context
        session = await ctx.db()
        policy = await service.clone_pack(session, await ctx.principal(), str(pack_id), name, source_ip=ctx.source_ip)
        return Policy.of(policy)
