"""GraphQL types and operations of the alerts domain: alerts, their resolution, live alerts."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import strawberry

from app.alerts import live, service
from app.alerts.models import Alert as AlertRow
from app.compliance.schema import ComplianceRule, RuleAction, RuleKind, Severity
from app.errors import NotFound, SubscriberTooSlowError
from app.info import Info, RequestInfo
from app.pagination import (
    After,
    Before,
    Connection,
    First,
    Last,
    build_connection,
    decode_cursor,
    encode_cursor,
    page_request,
)
from app.runtime.redis import Gap
from app.scalars import stored

if TYPE_CHECKING:
    from app.agents.schema import Agent
    from app.audit.schema import AuditLog
    from app.db import Database

MAX_REPLAY = 10_000
# how far before the lost pub/sub connection a gap's re-read starts: an alert's created_at is set before its
# transaction commits (and by another node's clock), so one committed during the outage can be a little older
GAP_SLACK = timedelta(seconds=30)


class _RecentlySent:
    """Ids of the alerts one subscription has sent, to send none twice: every replayed one, and the live ones of
    the last few GAP_SLACKs (older ones cannot be read again by a gap's re-read, which starts GAP_SLACK before
    the loss)."""

    def __init__(self) -> None:
        self._replayed: set[str] = set()
        self._live: OrderedDict[str, datetime] = OrderedDict()

    def __len__(self) -> int:
        return len(self._replayed)

    def __contains__(self, alert_id: str) -> bool:
        return alert_id in self._replayed or alert_id in self._live

    def add(self, alert: AlertRow, *, replayed: bool = False) -> None:
        if replayed:
            self._replayed.add(alert.id)
            return
        self._live[alert.id] = alert.created_at
        horizon = datetime.now(UTC) - 3 * GAP_SLACK
        while self._live and next(iter(self._live.values())) < horizon:
            self._live.popitem(last=False)


async def _missed_alerts(
    db: Database, org_id: str, query: service.AlertQuery, gap: Gap, sent: _RecentlySent
) -> AsyncGenerator[AlertRow, None]:
    """The alerts of a pub/sub gap, from PostgreSQL, oldest first; past MAX_REPLAY the subscriber is closed
    with SUBSCRIBER_TOO_SLOW and resumes with `after` (its last cursor) instead."""
    last_seq, read = 0, 0
    while True:
        async with db.tenant_session(org_id) as session:
            batch = await service.alerts_since(
                session, query, since=gap.lost_at - GAP_SLACK, after_seq=last_seq, limit=500
            )
        for alert in batch:
            last_seq = alert.seq or last_seq  # always set on a stored alert
            read += 1
            if read > MAX_REPLAY:
                raise SubscriberTooSlowError()
            if alert.id not in sent:
                sent.add(alert)
                yield alert
        if len(batch) < 500:
            return


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
            cursor=encode_cursor(service.alert_cursor_values(alert)),
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
        from app.audit.schema import AuditLog

        record = await info.context.loaders.record.load(self.row.audit_log_id)
        return AuditLog.of(record) if record else None

    @strawberry.field(description="The agent of the record.")
    async def agent(self, info: Info) -> Annotated[Agent, strawberry.lazy("app.agents.schema")] | None:
        if self.row.agent_id is None:
            return None
        from app.agents.schema import Agent

        agent = await info.context.loaders.agent.load(self.row.agent_id)
        return Agent.from_model(agent) if agent else None

    @strawberry.field(description="The rule, unless it has been deleted since.")
    async def rule(self, info: Info) -> ComplianceRule | None:
        rule = await info.context.loaders.rule.load(self.row.rule_id)
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
            severities=[stored(s) for s in self.severity] if self.severity else None,
            agent_ids=[str(a) for a in self.agent_id] if self.agent_id else None,
            rule_ids=[str(r) for r in self.rule_id] if self.rule_id else None,
            created_from=self.from_,
            created_to=self.to,
        )


AlertConnection = Connection[Alert]


async def alert_page(
    info: Info,
    query: service.AlertQuery,
    first: int | None,
    after: str | None,
    last: int | None = None,
    before: str | None = None,
) -> AlertConnection:
    """One page of alerts, newest first (shared by `alerts` and `Agent.alerts`)."""
    page = page_request(first, after, last, before, types=(str,))
    session = await info.context.db()
    positions = {}  # cursors hold alert ids; the list is ordered by seq
    for position in (page.after, page.before):
        if position is not None:
            positions[position] = (await service.cursor_position(session, position[0]),)
    rows = await service.list_alerts(session, query, page=page.positions(positions.__getitem__))
    return build_connection(rows, page=page, to_node=Alert.from_model, sort_key=service.alert_cursor_values)


@strawberry.type
class AlertsQuery:
    @strawberry.field(description="Alerts, newest first.")
    async def alerts(
        self,
        info: Info,
        filter: Annotated[AlertFilter | None, strawberry.argument(description="Conditions.")] = None,
        first: First = None,
        after: After = None,
        last: Last = None,
        before: Before = None,
    ) -> AlertConnection:
        return await alert_page(info, (filter or AlertFilter()).to_query(), first, after, last, before)

    @strawberry.field(description="One alert; null when it does not exist in your organisation.")
    async def alert(
        self, info: Info, id: Annotated[strawberry.ID, strawberry.argument(description="Alert id.")]
    ) -> Alert | None:
        try:
            return Alert.from_model(await service.get_alert(await info.context.db(), str(id)))
        except NotFound:
            return None


@strawberry.type
class AlertsMutation:
    @strawberry.mutation(description="Mark an alert resolved (idempotent). Users only.")
    async def resolve_alert(
        self,
        info: RequestInfo,
        id: Annotated[strawberry.ID, strawberry.argument(description="Alert id.")],
        note: Annotated[str | None, strawberry.argument(description="Why (≤ 2,000 characters).")] = None,
    ) -> Alert:
        ctx = info.context
        session = await ctx.db()
        alert = await service.resolve_alert(session, await ctx.principal(), str(id), note=note, source_ip=ctx.source_ip)
        return Alert.from_model(alert)

    @strawberry.mutation(description="Reopen a resolved alert (idempotent). Users only.")
    async def reopen_alert(
        self, info: RequestInfo, id: Annotated[strawberry.ID, strawberry.argument(description="Alert id.")]
    ) -> Alert:
        ctx = info.context
        alert = await service.reopen_alert(await ctx.db(), await ctx.principal(), str(id), source_ip=ctx.source_ip)
        return Alert.from_model(alert)


@strawberry.type
class AlertsSubscription:
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
        cursor = decode_cursor(after, (str,))
        last_seq = None
        if cursor is not None:
            async with ctx.runtime.db.tenant_session(principal.org_id) as session:
                last_seq = await service.cursor_position(session, cursor[0])
        sent = _RecentlySent()
        # subscribe before replaying: what is raised during the replay waits in the queue. Live alerts are
        # told apart from replayed ones by id, not by seq: an alert can commit after one with a higher seq.
        channel = live.alerts_channel(principal.org_id)
        async with ctx.runtime.broadcaster.subscribe(channel, gaps=True) as messages:
            if last_seq is not None:
                position = last_seq
                while len(sent) < MAX_REPLAY:
                    async with ctx.runtime.db.tenant_session(principal.org_id) as session:
                        batch = await service.alerts_after(session, query, after_seq=position, limit=500)
                    for alert in batch:
                        position = alert.seq if alert.seq is not None else position  # stored rows have one
                        sent.add(alert, replayed=True)
                        yield Alert.from_model(alert)
                    if len(batch) < 500:
                        break
            async for message in messages:
                if isinstance(message, Gap):
                    # Redis was lost: what committed meanwhile is read back from the rows, in order
                    async for alert in _missed_alerts(ctx.runtime.db, principal.org_id, query, message, sent):
                        yield Alert.from_model(alert)
                    continue
                for alert in live.decode_alerts(message):
                    if alert.org_id != principal.org_id or alert.id in sent or not query.matches(alert):
                        continue
                    sent.add(alert)
                    yield Alert.from_model(alert)
