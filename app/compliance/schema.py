"""GraphQL types and operations of the compliance domain: rules and packs."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated, cast

import strawberry

from app.compliance import installs, models, service
from app.compliance.models import ComplianceRule as RuleRow
from app.compliance.packs import Pack, PackRule, all_packs
from app.info import Info, RequestInfo
from app.scalars import JSON, stored


@strawberry.enum(description="How serious a finding is.")
class Severity(Enum):
    LOW = strawberry.enum_value("LOW", description="Informational; no action needed soon.")
    MEDIUM = strawberry.enum_value("MEDIUM", description="Worth a look.")
    HIGH = strawberry.enum_value("HIGH", description="Needs attention soon.")
    CRITICAL = strawberry.enum_value("CRITICAL", description="Needs attention now.")


@strawberry.enum(description="What a rule checks.")
class RuleKind(Enum):
    PII = strawberry.enum_value(
        "pii", description="Personal data (emails, phone numbers, card numbers, IBANs, SSNs, …) in the checked fields."
    )
    PATTERN = strawberry.enum_value("pattern", description="A regular expression (RE2) in the checked fields.")
    KEYWORDS = strawberry.enum_value(
        "keywords",
        description="Any of a list of words or phrases (case-insensitive, on word boundaries) in the checked fields.",
    )
    THRESHOLD = strawberry.enum_value(
        "threshold", description="A number beyond a limit: durationMs, or one under metadata, args or result."
    )
    ACTION_MATCH = strawberry.enum_value(
        "action_match", description="Watched actions, verbs or providers, optionally only at given risk levels."
    )


@strawberry.enum(description="What happens when a rule matches.")
class RuleAction(Enum):
    ALERT = strawberry.enum_value("alert", description="Raise an alert; the record is stored as sent.")
    BLOCK = strawberry.enum_value(
        "block", description="Raise an alert and store the record as blocked (governanceStatus BLOCKED)."
    )
    REDACT = strawberry.enum_value(
        "redact",
        description=(
            "Raise an alert and store what the rule found redacted (`***-**-6789`; secrets `[REDACTED]`) instead "
            "of the original, in the same transaction: the original never lands. Rules that find text only "
            "(PII, PATTERN, KEYWORDS)."
        ),
    )


@strawberry.enum(description="A field of an audit record that text rules can check.")
class RecordField(Enum):
    PROMPT = strawberry.enum_value("prompt", description="The record's prompt.")
    RESPONSE = strawberry.enum_value("response", description="The record's response.")
    METADATA = strawberry.enum_value("metadata", description="The record's metadata (JSON).")
    ARGS = strawberry.enum_value("args", description="The record's call arguments (JSON).")
    RESULT = strawberry.enum_value("result", description="The record's call result (JSON).")


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
    action: RuleAction = strawberry.field(
        description="ALERT; BLOCK (the record is stored as blocked); REDACT (what it finds is stored redacted)."
    )
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
    action: RuleAction = strawberry.field(description="ALERT, BLOCK or REDACT.")
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
            kind=stored(self.kind) if self.kind else None,
            config=self.config,
            severity=stored(self.severity) if self.severity else None,
            enabled=self.enabled,
            applies_to=[stored(f) for f in self.applies_to] if self.applies_to is not None else None,
            action=cast(str, self.action.value) if self.action else None,  # enum_value types members as definitions
        )


@strawberry.type(description="The organisation's defaults for its compliance rules.")
class ComplianceSettings:
    redact_pii: bool = strawberry.field(
        description=(
            "Every PII rule (the organisation's, packs' and attached policies') also stores what it finds redacted, "
            "whatever its action, as REDACT does. Off by default."
        )
    )
    updated_at: datetime | None = strawberry.field(description="When they last changed; null: never changed.")

    @classmethod
    def from_model(cls, row: models.ComplianceSettings) -> ComplianceSettings:
        return cls(redact_pii=row.redact_pii, updated_at=row.updated_at if row.updated_by else None)


@strawberry.type
class ComplianceQuery:
    @strawberry.field(description="The organisation's compliance settings (the defaults its rules apply).")
    async def compliance_settings(self, info: Info) -> ComplianceSettings:
        return ComplianceSettings.from_model(await service.settings(await info.context.db()))

    @strawberry.field(description="The organisation's compliance rules, oldest first.")
    async def compliance_rules(self, info: Info) -> list[ComplianceRule]:
        return [ComplianceRule.from_model(r) for r in await service.list_rules(await info.context.db())]

    @strawberry.field(description="The packs shipped with Agentrail, with their rules.")
    async def compliance_packs(self, info: Info) -> list[CompliancePack]:
        installed = {p.pack_id for p in await installs.installed_packs(await info.context.db())}
        return [CompliancePack.from_pack(p, installed) for p in all_packs().values()]

    @strawberry.field(description="Packs installed in the organisation.")
    async def installed_packs(self, info: Info) -> list[InstalledCompliancePack]:
        rows = await installs.installed_packs(await info.context.db())
        return [
            InstalledCompliancePack(
                pack_id=strawberry.ID(p.pack_id), installed_at=p.installed_at, installed_by=p.installed_by
            )
            for p in rows
        ]


@strawberry.type
class ComplianceMutation:
    @strawberry.mutation(description="Change the organisation's compliance settings. Owners and admins.")
    async def update_compliance_settings(
        self,
        info: RequestInfo,
        redact_pii: Annotated[
            bool | None, strawberry.argument(description="Redact what every PII rule finds; null: unchanged.")
        ] = None,
    ) -> ComplianceSettings:
        ctx = info.context
        row = await service.update_settings(
            await ctx.db(), await ctx.principal(), redact_pii=redact_pii, source_ip=ctx.source_ip
        )
        return ComplianceSettings.from_model(row)

    @strawberry.mutation(description="Create a custom rule. Owners and admins.")
    async def create_compliance_rule(
        self, info: RequestInfo, input: Annotated[ComplianceRuleInput, strawberry.argument(description="The rule.")]
    ) -> ComplianceRule:
        ctx = info.context
        rule = await service.create_rule(
            await ctx.db(), await ctx.principal(), input.to_values(), source_ip=ctx.source_ip
        )
        return ComplianceRule.from_model(rule)

    @strawberry.mutation(description="Change a rule (also one installed from a pack). Owners and admins.")
    async def update_compliance_rule(
        self,
        info: RequestInfo,
        id: Annotated[strawberry.ID, strawberry.argument(description="Rule id.")],
        input: Annotated[ComplianceRuleInput, strawberry.argument(description="Fields to change.")],
    ) -> ComplianceRule:
        ctx = info.context
        rule = await service.update_rule(
            await ctx.db(), await ctx.principal(), str(id), input.to_values(), source_ip=ctx.source_ip
        )
        return ComplianceRule.from_model(rule)

    @strawberry.mutation(description="Delete a rule; its past alerts stay. Returns the id. Owners and admins.")
    async def delete_compliance_rule(
        self, info: RequestInfo, id: Annotated[strawberry.ID, strawberry.argument(description="Rule id.")]
    ) -> strawberry.ID:
        ctx = info.context
        deleted = await service.delete_rule(await ctx.db(), await ctx.principal(), str(id), source_ip=ctx.source_ip)
        return strawberry.ID(deleted)

    @strawberry.mutation(
        description="Install a copy of a pack's rules. Installing an installed pack is CONFLICT. Owners and admins."
    )
    async def install_compliance_pack(
        self,
        info: RequestInfo,
        pack_id: Annotated[strawberry.ID, strawberry.argument(description="hipaa, gdpr, finance.")],
    ) -> list[ComplianceRule]:
        ctx = info.context
        rules = await installs.install_pack(
            await ctx.db(), await ctx.principal(), str(pack_id), source_ip=ctx.source_ip
        )
        return [ComplianceRule.from_model(r) for r in rules]

    @strawberry.mutation(description="Remove a pack and the rules it installed; returns how many. Owners and admins.")
    async def uninstall_compliance_pack(
        self, info: RequestInfo, pack_id: Annotated[strawberry.ID, strawberry.argument(description="Pack id.")]
    ) -> int:
        ctx = info.context
        removed = await installs.uninstall_pack(
            await ctx.db(), await ctx.principal(), str(pack_id), source_ip=ctx.source_ip
        )
        return removed
