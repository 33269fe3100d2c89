"""Writing alerts at ingest: the alerts of the records written, in the same transaction, with their
webhook events (`alert.created`) in the outbox."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlmodel import col

from app.alerts.models import Alert
from app.compliance.engine import Finding
from app.db import AsyncSession, new_id, session_org, utcnow
from app.webhooks import service as webhooks


@dataclass
class AlertDraft:
    row_index: int
    finding: Finding


async def write_alerts(
    session: AsyncSession, drafts: Sequence[AlertDraft], rows: Sequence[dict[str, Any]]
) -> list[Alert]:
    """Inserts the alerts of the rows that were written (duplicates by idempotency key raise none)."""
    if not drafts:
        return []
    org_id = session_org(session)
    now = utcnow()
    values = []
    for draft in drafts:
        row, finding = rows[draft.row_index], draft.finding
        rule = finding.rule
        values.append(
            {
                "id": new_id("alrt"),
                "org_id": org_id,
                "rule_id": rule.id,
                "rule_name": rule.name,
                "rule_kind": rule.kind,
                "policy_id": rule.policy_id,
                "policy_version": rule.policy_version,
                "severity": rule.severity,
                "action": rule.action,
                "message": finding.message,
                "field": finding.field,
                "excerpt": finding.excerpt,
                "start_offset": finding.start,
                "end_offset": finding.end,
                "audit_log_id": row["id"],
                "trace_id": row["trace_id"],
                "agent_id": row["agent_id"],
                "created_at": now,
            }
        )
    result = await session.execute(sa.insert(Alert).returning(col(Alert.id), col(Alert.seq)), values)
    seqs = {r.id: r.seq for r in result.all()}
    alerts = [Alert(**v, seq=seqs[v["id"]]) for v in values]
    # the outbox rows commit with the alerts; the caller queues them after the commit
    await webhooks.emit_events(session, [("alert.created", alert_event_data(a)) for a in alerts], now=now)
    return alerts


def alert_event_data(alert: Alert) -> dict[str, Any]:
    """An alert as webhook events carry it (`data.alert`): the redacted excerpt, never the matched text. Enum
    values are spelled as GraphQL spells them (`PII`, `ALERT`, `HIGH`)."""
    return {
        "alert": {
            "id": alert.id,
            "ruleId": alert.rule_id,
            "ruleName": alert.rule_name,
            "ruleKind": alert.rule_kind.upper(),
            "policyId": alert.policy_id,
            "policyVersion": alert.policy_version,
            "severity": alert.severity,
            "action": alert.action.upper(),
            "message": alert.message,
            "field": alert.field,
            "excerpt": alert.excerpt,
            "auditLogId": alert.audit_log_id,
            "traceId": alert.trace_id,
            "agentId": alert.agent_id,
            "createdAt": alert.created_at,
            "resolvedAt": alert.resolved_at,
            "resolvedBy": alert.resolved_by,
            "resolutionNote": alert.resolution_note,
        }
    }
