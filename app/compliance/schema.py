"""GraphQL types and operations of the compliance domain: rules, packs, alerts, live alerts."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated

import strawberry
from strawberry.types import Info

from app.api.pagination import Connection, build_connection, decode_cursor, encode_cursor, page_size
from app.api.scalars import JSON
from app.compliance import loaders, service
from app.compliance.models import Alert as AlertRow
from app.compliance.models import ComplianceRule as RuleRow
from app.compliance.packs import Pack, PackRule
from app.errors import AppError

if TYPE_CHECKING:
    from app.agents.schema import Agent
    from app.audit.schema import AuditLog

MAX_REPLAY = 10_000


@strawberry.enum(description="How serious a finding is.")
class Severity(Enum):
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"


@strawberry.enum(description="What a rule checks.")
class RuleKind(Enum):
    PII = "pii"
    PATTERN = "pattern"
    KEYWORDS = "keywords"
    THRESHOLD = "threshold"
    ACTION_MATCH = "action_match"


@strawberry.enum(description="What happens when a rule matches.")
class RuleAction(Enum):
    ALERT = "alert"
    BLOCK = "block"


@strawberry.enum(description="A field of an audit record that text rules can check.")
class RecordField(Enum):
    PROMPT = "prompt"
    RESPONSE = "response"
    METADATA = "metadata"
    ARGS = "args"
    RESULT = "result"


@strawberry.type(description="A compliance rule of the organisation (custom, or installed from a pack).")
class ComplianceRule:
    id: strawberry.ID = strawberry.field(description="Rule id (`rule_…`).")
    name: str = strawberry.field(description="Name shown in alerts.")
    description: str = strawberry.field(description="What the rule is for.")
    kind: RuleKind = strawberry.field(description="What it checks.")
    config: JSON = strawberry.field(description="Kind-specific settings (pattern, keywords, types, path …).")
    severity: Severity = strawberry.field(description="Severity of its alerts.")
    enabled: bool = strawberry.field(description="Disabled rules are not evaluated.")
    applies_to: list[RecordField] = strawberry.field(description="Fields text rules check.")
    action: RuleAction = strawberry.field(description="ALERT, or BLOCK (the record is stored as blocked).")
    pack_id: str | None = strawberry.field(description="The pack it was installed from, if any.")
    created_at: datetime = strawberry.field(description="When it was created.")
    updated_at: datetime = strawberry.field(description="When it last changed.")

    @classmethod
    def from_model(cls, rule: RuleRow) -> ComplianceRule:
        return cls(
            id=strawberry.ID(rule.id),
            name=rule.name,
            description=rule.description,
            kind=RuleKind(rule.kind),
            config=rule.config,
            severity=Severity(rule.severity),
            enabled=rule.enabled,
            applies_to=[RecordField(f) for f in rule.applies_to],
            action=RuleAction(rule.action),
            pack_id=rule.pack_id,
            created_at=rule.created_at,
            updated_at=rule.updated_at,
        )


@strawberry.type(description="A rule as a pack defines it.")
class PackRuleDefinition:
    key: str = strawberry.field(description="Stable key of the rule within its pack.")
    name: str = strawberry.field(description="Name.")
    description: str = strawberry.field(description="What it is for.")
    kind: RuleKind = strawberry.field(description="What it checks.")
    config: JSON = strawberry.field(description="Kind-specific settings.")
    severity: Severity = strawberry.field(description="Severity.")
    action: RuleAction = strawberry.field(description="ALERT or BLOCK.")
    applies_to: list[RecordField] = strawberry.field(description="Fields text rules check.")

    @classmethod
    def from_pack_rule(cls, rule: PackRule) -> PackRuleDefinition:
        return cls(
            key=rule.key,
            name=rule.name,
            description=rule.description,
            kind=RuleKind(rule.kind),
            config=rule.config,
            severity=Severity(rule.severity),
            action=RuleAction(rule.action),
            applies_to=[RecordField(f) for f in rule.applies_to],
        )


@strawberry.type(description="A curated set of rules shipped with Agentrail (hipaa, gdpr, finance).")
class CompliancePack:
    id: strawberry.ID = strawberry.field(description="Pack id.")
    name: str = strawberry.field(description="Name.")
    description: str = strawberry.field(description="What it covers.")
    rules: list[PackRuleDefinition] = strawberry.field(description="Its rules.")
    installed: bool = strawberry.field(description="Whether your organisation has it installed.")

    @classmethod
    def from_pack(cls, pack: Pack, installed: set[str]) -> CompliancePack:
        return cls(
            id=strawberry.ID(pack.id),
            name=pack.name,
            description=pack.description,
            rules=[PackRuleDefinition.from_pack_rule(r) for r in pack.rules],
            installed=pack.id in installed,
        )


@strawberry.type(description="A pack installed in the organisation.")
class InstalledCompliancePack:
    pack_id: strawberry.ID = strawberry.field(description="Pack id.")
    installed_at: datetime = strawberry.field(description="When it was installed.")
    installed_by: str | None = strawberry.field(description="Who installed it (user id).")


@strawberry.type(description="A rule matched a record. Holds where and a redacted excerpt, never the matched text.")
class Alert:
    row: strawberry.Private[AlertRow]
    id: strawberry.ID = strawberry.field(description="Alert id (`alrt_…`).")
    cursor: str = strawberry.field(description="Pass as `after` to `alerts` (subscription) to resume after it.")
    rule_id: str = strawberry.field(description="The rule that matched (it may since have been deleted).")
    rule_name: str = strawberry.field(description="The rule's name when it matched.")
    rule_kind: RuleKind = strawberry.field(description="The rule's kind.")
    policy_id: str | None = strawberry.field(description="The policy whose rule matched, if it came from one.")
    policy_version: int | None = strawberry.field(description="The policy version that matched.")
    severity: Severity = strawberry.field(description="Severity.")
    action: RuleAction = strawberry.field(description="ALERT, or BLOCK when the record was stored as blocked.")
    message: str = strawberry.field(description="What matched, in words.")
    field: str = strawberry.field(description="The record field that matched (prompt, response, metadata …).")
    excerpt: str = strawberry.field(description="Redacted excerpt of the match (e.g. ***-**-6789).")
    start_offset: int | None = strawberry.field(description="Character offset of the match in the field.")
    end_offset: int | None = strawberry.field(description="End offset of the match in the field.")
    audit_log_id: str = strawberry.field(description="The record that matched.")
    trace_id: str = strawberry.field(description="The trace of that record.")
    agent_id: str | None = strawberry.field(description="The agent of that record.")
    created_at: datetime = strawberry.field(description="When the alert was raised.")
    resolved_at: datetime | None = strawberry.field(description="When it was resolved; null while open.")
    resolved_by: str | None = strawberry.field(description="Who resolved it (user id).")
    resolution_note: str | None = strawberry.field(description="Why it was resolved.")

    @classmethod
    def from_model(cls, alert: AlertRow) -> Alert:
        return cls(
            row=alert,
            id=strawberry.ID(alert.id),
            cursor=encode_cursor([alert.seq]),
            rule_id=alert.rule_id,
            rule_name=alert.rule_name,
            rule_kind=RuleKind(alert.rule_kind),
            policy_id=alert.policy_id,
            policy_version=alert.policy_version,
            severity=Severity(alert.severity),
            action=RuleAction(alert.action),
            message=alert.message,
            field=alert.field,
            excerpt=alert.excerpt,
            start_offset=alert.start_offset,
            end_offset=alert.end_offset,
            audit_log_id=alert.audit_log_id,
            trace_id=alert.trace_id,
            agent_id=alert.agent_id,
            created_at=alert.created_at,
            resolved_at=alert.resolved_at,
            resolved_by=alert.resolved_by,
            resolution_note=alert.resolution_note,
        )

    @strawberry.field(description="True once resolved.")
    def resolved(self) -> bool:
        return self.row.resolved_at is not None

    @strawberry.field(description="The record (span) that matched; from it, its trace.")
    async def audit_log(self, info: Info) -> Annotated[AuditLog, strawberry.lazy("app.audit.schema")] | None:
        from app.audit.loaders import record_loader
        from app.audit.schema import AuditLog

        record = await (await record_loader(info.context)).load(self.row.audit_log_id)
        return AuditLog.of(record) if record else None

    @strawberry.field(description="The agent of the record.")
    async def agent(self, info: Info) -> Annotated[Agent, strawberry.lazy("app.agents.schema")] | None:
        if self.row.agent_id is None:
            return None
        from app.agents.loaders import agent_loader
        from app.agents.schema import Agent

        agent = await (await agent_loader(info.context)).load(self.row.agent_id)
        return Agent.from_model(agent) if agent else None

    @strawberry.field(description="The rule, unless it has been deleted since.")
    async def rule(self, info: Info) -> ComplianceRule | None:
        rule = await (await loaders.rule_loader(info.context)).load(self.row.rule_id)
        return ComplianceRule.from_model(rule) if rule else None


@strawberry.input(description="Which alerts. All conditions must hold.")
class AlertFilter:
    resolved: bool | None = strawberry.field(default=None, description="Only resolved (true) or open (false).")
    severity: list[Severity] | None = strawberry.field(default=None, description="Any of these severities.")
    agent_id: list[strawberry.ID] | None = strawberry.field(default=None, description="Any of these agents.")
    rule_id: list[strawberry.ID] | None = strawberry.field(default=None, description="Any of these rules.")
    from_: datetime | None = strawberry.field(default=None, name="from", description="Raised at or after.")
    to: datetime | None = strawberry.field(default=None, description="Raised before.")

    def to_query(self) -> service.AlertQuery:
        return service.AlertQuery(
            resolved=self.resolved,
            severities=[s.value for s in self.severity] if self.severity else None,
            agent_ids=[str(a) for a in self.agent_id] if self.agent_id else None,
            rule_ids=[str(r) for r in self.rule_id] if self.rule_id else None,
            created_from=self.from_,
            created_to=self.to,
        )


@strawberry.input(description="A compliance rule. On update, omitted fields stay as they are.")
class ComplianceRuleInput:
    name: str | None = strawberry.field(default=None, description="Name (required on create).")
    description: str | None = strawberry.field(default=None, description="What it is for.")
    kind: RuleKind | None = strawberry.field(default=None, description="Required on create; cannot change.")
    config: JSON | None = strawberry.field(
        default=None,
        description="pii: {types}; pattern: {pattern, caseInsensitive} (RE2 syntax); keywords: {keywords}; "
        "threshold: {path, operator, value}; action_match: {actions, verbs, providers, riskLevels}.",
    )
    severity: Severity | None = strawberry.field(default=None, description="Default MEDIUM.")
    enabled: bool | None = strawberry.field(default=None, description="Default true.")
    applies_to: list[RecordField] | None = strawberry.field(default=None, description="Default: all text fields.")
    action: RuleAction | None = strawberry.field(default=None, description="Default ALERT.")

    def to_values(self) -> service.RuleInput:
        return service.RuleInput(
            name=self.name,
            description=self.description,
            kind=self.kind.value if self.kind else None,
            config=self.config,
            severity=self.severity.value if self.severity else None,
            enabled=self.enabled,
            applies_to=[f.value for f in self.applies_to] if self.applies_to is not None else None,
            action=self.action.value if self.action else None,
        )


AlertConnection = Connection[Alert]


async def alert_page(info: Info, query: service.AlertQuery, first: int | None, after: str | None) -> AlertConnection:
    """One page of alerts, newest first (shared by `alerts` and `Agent.alerts`)."""
    limit = page_size(first)
    cursor = decode_cursor(after, (int,))
    rows = await service.list_alerts(
        await info.context.db(), query, limit=limit + 1, before_seq=cursor[0] if cursor else None
    )
    return build_connection(rows, limit=limit, to_node=Alert.from_model, sort_key=service.alert_cursor_values)


@strawberry.type
class ComplianceQuery:
    @strawberry.field(description="The organisation's compliance rules, oldest first.")
    async def compliance_rules(self, info: Info) -> list[ComplianceRule]:
        return [ComplianceRule.from_model(r) for r in await service.list_rules(await info.context.db())]

    @strawberry.field(description="The packs shipped with Agentrail, with their rules.")
    async def compliance_packs(self, info: Info) -> list[CompliancePack]:
        installed = {p.pack_id for p in await service.installed_packs(await info.context.db())}
        return [CompliancePack.from_pack(p, installed) for p in service.all_packs().values()]

    @strawberry.field(description="Packs installed in the organisation.")
    async def installed_packs(self, info: Info) -> list[InstalledCompliancePack]:
        rows = await service.installed_packs(await info.context.db())
        return [
            InstalledCompliancePack(
                pack_id=strawberry.ID(p.pack_id), installed_at=p.installed_at, installed_by=p.installed_by
            )
            for p in rows
        ]

    @strawberry.field(description="Alerts, newest first.")
    async def alerts(
        self,
        info: Info,
        filter: Annotated[AlertFilter | None, strawberry.argument(description="Conditions.")] = None,
        first: Annotated[int | None, strawberry.argument(description="Page size, at most 500.")] = None,
        after: Annotated[str | None, strawberry.argument(description="Cursor of the previous page.")] = None,
    ) -> AlertConnection:
        return await alert_page(info, (filter or AlertFilter()).to_query(), first, after)

    @strawberry.field(description="One alert; null when it does not exist in your organisation.")
    async def alert(
        self, info: Info, id: Annotated[strawberry.ID, strawberry.argument(description="Alert id.")]
    ) -> Alert | None:
        try:
            return Alert.from_model(await service.get_alert(await info.context.db(), str(id)))
        except AppError:
            return None


async def _rules_changed(info: Info) -> None:
    principal = await info.context.principal()
    await service.announce_rules_changed(info.context.runtime.broadcaster, principal.org_id)


@strawberry.type
class ComplianceMutation:
    @strawberry.mutation(description="Create a custom rule. Owners and admins.")
    async def create_compliance_rule(
        self, info: Info, input: Annotated[ComplianceRuleInput, strawberry.argument(description="The rule.")]
    ) -> ComplianceRule:
        ctx = info.context
        rule = await service.create_rule(
            await ctx.db(), await ctx.principal(), input.to_values(), source_ip=ctx.source_ip
        )
        await _rules_changed(info)
        return ComplianceRule.from_model(rule)

    @strawberry.mutation(description="Change a rule (also one installed from a pack). Owners and admins.")
    async def update_compliance_rule(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="Rule id.")],
        input: Annotated[ComplianceRuleInput, strawberry.argument(description="Fields to change.")],
    ) -> ComplianceRule:
        ctx = info.context
        rule = await service.update_rule(
            await ctx.db(), await ctx.principal(), str(id), input.to_values(), source_ip=ctx.source_ip
        )
        await _rules_changed(info)
        return ComplianceRule.from_model(rule)

    @strawberry.mutation(description="Delete a rule; its past alerts stay. Returns the id. Owners and admins.")
    async def delete_compliance_rule(
        self, info: Info, id: Annotated[strawberry.ID, strawberry.argument(description="Rule id.")]
    ) -> strawberry.ID:
        ctx = info.context
        deleted = await service.delete_rule(await ctx.db(), await ctx.principal(), str(id), source_ip=ctx.source_ip)
        await _rules_changed(info)
        return strawberry.ID(deleted)

    @strawberry.mutation(
        description="Install a copy of a pack's rules. Installing an installed pack is CONFLICT. Owners and admins."
    )
    async def install_compliance_pack(
        self, info: Info, pack_id: Annotated[strawberry.ID, strawberry.argument(description="hipaa, gdpr, finance.")]
    ) -> list[ComplianceRule]:
        ctx = info.context
        rules = await service.install_pack(await ctx.db(), await ctx.principal(), str(pack_id), source_ip=ctx.source_ip)
        await _rules_changed(info)
        return [ComplianceRule.from_model(r) for r in rules]

    @strawberry.mutation(description="Remove a pack and the rules it installed; returns how many. Owners and admins.")
    async def uninstall_compliance_pack(
        self, info: Info, pack_id: Annotated[strawberry.ID, strawberry.argument(description="Pack id.")]
    ) -> int:
        ctx = info.context
        removed = await service.uninstall_pack(
            await ctx.db(), await ctx.principal(), str(pack_id), source_ip=ctx.source_ip
        )
        await _rules_changed(info)
        return removed

    @strawberry.mutation(description="Mark an alert resolved (idempotent). Users only.")
    async def resolve_alert(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="Alert id.")],
        note: Annotated[str | None, strawberry.argument(description="Why (≤ 2,000 characters).")] = None,
    ) -> Alert:
        ctx = info.context
        session = await ctx.db()
        alert = await service.resolve_alert(session, await ctx.principal(), str(id), note=note, source_ip=ctx.source_ip)
        return Alert.from_model(alert)

    @strawberry.mutation(description="Reopen a resolved alert (idempotent). Users only.")
    async def reopen_alert(
        self, info: Info, id: Annotated[strawberry.ID, strawberry.argument(description="Alert id.")]
    ) -> Alert:
        ctx = info.context
        alert = await service.reopen_alert(await ctx.db(), await ctx.principal(), str(id), source_ip=ctx.source_ip)
        return Alert.from_model(alert)


@strawberry.type
class ComplianceSubscription:
    @strawberry.subscription(
        description="Alerts of your organisation as they are raised. With `after` (an alert's cursor), first "
        "the stored alerts after it, then live: no gap, no duplicate."
    )
    async def alerts(
        self,
        info: Info,
        filter: Annotated[AlertFilter | None, strawberry.argument(description="Conditions.")] = None,
        after: Annotated[str | None, strawberry.argument(description="Resume after this alert's cursor.")] = None,
    ) -> AsyncGenerator[Alert, None]:
        ctx = info.context
        principal = await ctx.principal()
        query = (filter or AlertFilter()).to_query()
        cursor = decode_cursor(after, (int,))
        replayed: set[str] = set()
        # subscribe before replaying: what is raised during the replay waits in the queue. Live alerts are
        # told apart from replayed ones by id, not by seq: an alert can commit after one with a higher seq.
        async with ctx.runtime.broadcaster.subscribe(service.alerts_channel(principal.org_id)) as messages:
            if cursor is not None:
                last_seq = cursor[0]
                while len(replayed) < MAX_REPLAY:
                    async with ctx.runtime.db.tenant_session(principal.org_id) as session:
                        batch = await service.alerts_after(session, query, after_seq=last_seq, limit=500)
                    for alert in batch:
                        last_seq = alert.seq
                        replayed.add(alert.id)
                        yield Alert.from_model(alert)
                    if len(batch) < 500:
                        break
            async for message in messages:
                for alert in service.decode_alerts(message):
                    if alert.org_id != principal.org_id or alert.id in replayed or not query.matches(alert):
                        continue
                    yield Alert.from_model(alert)
