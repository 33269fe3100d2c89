"""What each report type says: its figures gathered through the other domains' services (every number a
GROUP BY in SQL, never a loop over rows), laid out as sections that the formats render.

`gather(session, kind, …)` returns a `Content`: `summary` (the key figures, kept on the report row),
`data` (everything, the JSON file), `sections` (headings, tables and charts, the PDF) and, for the tabular
types, `table` (the CSV).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from app.activity import service as activity
from app.agents import service as agents
from app.alerts import analytics as alerts
from app.audit import erasure, sealing
from app.audit import service as audit
from app.compliance.engine import SEVERITIES
from app.db import AsyncSession, iso
from app.metrics import service as metrics
from app.orgs import service as orgs
from app.pagination import PageRequest
from app.policies import service as policies

TYPES = ("compliance_summary", "agent_activity", "policy_changes", "audit_integrity")
TITLES = {
    "compliance_summary": "Compliance summary",
    "agent_activity": "Agent activity",
    "policy_changes": "Policy changes",
    "audit_integrity": "Audit integrity",
}
# one row per thing, so a CSV file says it all; the other types are several tables or a single verdict
TABULAR_TYPES = ("agent_activity", "policy_changes")
# agentIds narrows these; the integrity check always covers every record of the organisation
AGENT_FILTERED_TYPES = ("compliance_summary", "agent_activity", "policy_changes")
MAX_ROWS = 10_000  # policy changes and digests listed in one report
TOP_AGENTS = 10
NO_AGENT = "(no agent)"


@dataclass
class Chart:
    title: str
    kind: str  # "bar" | "line"
    labels: list[str]
    series: list[tuple[str, list[float]]]  # (name, one value per label)


@dataclass
class Table:
    header: list[str]
    rows: list[list[Any]]


@dataclass
class Section:
    title: str
    text: str | None = None
    table: Table | None = None
    chart: Chart | None = None


@dataclass
class Content:
    summary: dict[str, Any]
    data: dict[str, Any]
    sections: list[Section] = field(default_factory=list)
    table: Table | None = None  # the CSV, for tabular types


@dataclass
class Window:
    start: datetime
    end: datetime
    agent_ids: list[str] | None

    def days(self) -> list[date]:
        first = self.start.astimezone(UTC).date()
        last = (self.end - timedelta(microseconds=1)).astimezone(UTC).date()
        return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def _ratio(part: int, whole: int) -> float:
    return round(part / whole, 6) if whole else 0.0


def _rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _seconds_text(value: float | None) -> str:
    if value is None:
        return "–"
    if value < 120:
        return f"{value:.0f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    if value < 172800:
        return f"{value / 3600:.1f} h"
    return f"{value / 86400:.1f} d"


def _ms_text(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} ms"


async def _agent_names(session: AsyncSession, ids: Sequence[str | None]) -> dict[str | None, str]:
    found = await agents.agents_by_ids(session, [i for i in ids if i])
    names: dict[str | None, str] = {i: found[i].name if i in found else i for i in ids if i}
    names[None] = NO_AGENT
    return names


# --- compliance_summary ------------------------------------------------------------------------
async def compliance_summary(session: AsyncSession, window: Window, _keys: sealing.Keys) -> Content:
    breakdown = await alerts.alert_breakdown(
        session, created_from=window.start, created_to=window.end, agent_ids=window.agent_ids
    )
    resolution = await alerts.alert_resolution(
        session, created_from=window.start, created_to=window.end, agent_ids=window.agent_ids
    )
    names = await _agent_names(session, list(resolution.by_agent))
    policy_names = await policies.policy_names(session, [p for p, _, _ in breakdown.by_version if p])

    by_severity: list[dict[str, Any]] = [{"severity": s, "alerts": breakdown.by_severity.get(s, 0)} for s in SEVERITIES]
    by_rule: list[dict[str, Any]] = [
        {"ruleId": rule_id, "ruleName": name, "alerts": n}
        for rule_id, name, n in sorted(breakdown.by_rule, key=lambda r: (-r[2], r[1], r[0]))
    ]
    by_agent: list[dict[str, Any]] = [
        {"agentId": agent_id, "agentName": names.get(agent_id, agent_id), "alerts": n, "open": still_open}
        for agent_id, (n, still_open) in sorted(
            resolution.by_agent.items(), key=lambda item: (-item[1][0], names.get(item[0]) or "")
        )
    ]
    by_version: list[dict[str, Any]] = [
        {
            "policyId": policy_id,
            "policyName": policy_names.get(policy_id) if policy_id else "organisation rules",
            "version": version,
            "alerts": n,
        }
        for policy_id, version, n in sorted(breakdown.by_version, key=lambda v: (-v[2], v[0] or "", v[1] or 0))
    ]
    daily: list[dict[str, Any]] = [{"day": d.isoformat(), "alerts": breakdown.by_day.get(d, 0)} for d in window.days()]
    resolved = {
        "resolved": resolution.resolved,
        "open": resolution.open,
        "medianSeconds": _rounded(resolution.median_seconds),
        "p90Seconds": _rounded(resolution.p90_seconds),
    }
    top = by_agent[:TOP_AGENTS]
    summary = {
        "alerts": breakdown.total,
        "recordsWithAlerts": breakdown.records_with_alerts,
        "open": resolution.open,
        "resolved": resolution.resolved,
        "medianResolutionSeconds": resolved["medianSeconds"],
        "p90ResolutionSeconds": resolved["p90Seconds"],
        "bySeverity": {row["severity"]: row["alerts"] for row in by_severity},
        "topAgent": top[0]["agentName"] if top else None,
    }
    data = {
        "alerts": {"total": breakdown.total, "recordsWithAlerts": breakdown.records_with_alerts},
        "bySeverity": by_severity,
        "byRule": by_rule,
        "byAgent": by_agent,
        "byPolicyVersion": by_version,
        "resolution": resolved,
        "topViolatingAgents": top,
        "daily": daily,
    }
    sections = [
        Section(
            "Overview",
            text=(
                f"{breakdown.total} alerts were raised on {breakdown.records_with_alerts} records; "
                f"{resolution.resolved} have been resolved and {resolution.open} are open. Resolved alerts took "
                f"{_seconds_text(resolution.median_seconds)} (median) and {_seconds_text(resolution.p90_seconds)} "
                "(90th percentile) from alert to resolution."
            ),
            table=Table(
                ["Figure", "Value"],
                [
                    ["Alerts", breakdown.total],
                    ["Records with alerts", breakdown.records_with_alerts],
                    ["Resolved", resolution.resolved],
                    ["Open", resolution.open],
                    ["Median time to resolve", _seconds_text(resolution.median_seconds)],
                    ["90th percentile time to resolve", _seconds_text(resolution.p90_seconds)],
                ],
            ),
        ),
        Section(
            "Alerts by severity",
            table=Table(["Severity", "Alerts"], [[r["severity"], r["alerts"]] for r in by_severity]),
            chart=Chart(
                "Alerts by severity",
                "bar",
                [r["severity"] for r in by_severity],
                [("Alerts", [float(r["alerts"]) for r in by_severity])],
            ),
        ),
        Section(
            "Alerts per day",
            chart=Chart(
                "Alerts per UTC day", "line", [r["day"] for r in daily], [("Alerts", [r["alerts"] for r in daily])]
            ),
        ),
        Section(
            "Alerts by rule",
            table=Table(["Rule", "Rule id", "Alerts"], [[r["ruleName"], r["ruleId"], r["alerts"]] for r in by_rule]),
        ),
        Section(
            "Top violating agents",
            table=Table(
                ["Agent", "Agent id", "Alerts", "Open"],
                [[r["agentName"], r["agentId"] or "", r["alerts"], r["open"]] for r in top],
            ),
        ),
        Section(
            "Alerts by policy version",
            table=Table(
                ["Policy", "Version", "Alerts"],
                [
                    [r["policyName"] or r["policyId"], r["version"] if r["version"] is not None else "", r["alerts"]]
                    for r in by_version
                ],
            ),
        ),
    ]
    return Content(summary=summary, data=data, sections=sections)


# --- agent_activity ----------------------------------------------------------------------------
AGENT_HEADER = [
    "agentId",
    "agentName",
    "records",
    "traces",
    "errors",
    "errorRate",
    "blocked",
    "durationP50Ms",
    "durationP95Ms",
]


async def agent_activity(session: AsyncSession, window: Window, _keys: sealing.Keys) -> Content:
    # counts and duration percentiles from the metrics rollups (plus their live tail); traces from the records
    per_agent = await metrics.metrics(
        session,
        metrics.MetricsQuery(start=window.start, end=window.end, group_by=["agent"], agent_ids=window.agent_ids),
    )
    per_day = await metrics.metrics(
        session,
        metrics.MetricsQuery(start=window.start, end=window.end, group_by=["day"], agent_ids=window.agent_ids),
    )
    traces, all_traces = await audit.trace_counts_by_agent(
        session, occurred_from=window.start, occurred_to=window.end, agent_ids=window.agent_ids
    )
    rows_by_agent = {row.agent_id: row for row in per_agent}
    ids: list[str | None] = list(rows_by_agent)
    for wanted in window.agent_ids or []:
        if wanted not in rows_by_agent:
            ids.append(wanted)  # asked for, silent in the window: a row of zeros
    names = await _agent_names(session, ids)
    agent_rows: list[dict[str, Any]] = []
    for agent_id in ids:
        row = rows_by_agent.get(agent_id)
        records = row.count if row else 0
        errors = row.errors if row else 0
        agent_rows.append(
            {
                "agentId": agent_id,
                "agentName": names.get(agent_id, agent_id),
                "records": records,
                "traces": traces.get(agent_id, 0),
                "errors": errors,
                "errorRate": _ratio(errors, records),
                "blocked": row.blocked if row else 0,
                "durationP50Ms": _rounded(row.percentile(0.5)) if row else None,
                "durationP95Ms": _rounded(row.percentile(0.95)) if row else None,
            }
        )
    agent_rows.sort(key=lambda r: (-r["records"], r["agentName"] or ""))
    by_day = {row.start.astimezone(UTC).date(): row for row in per_day}
    daily: list[dict[str, Any]] = [
        {
            "day": d.isoformat(),
            "records": by_day[d].count if d in by_day else 0,
            "errors": by_day[d].errors if d in by_day else 0,
        }
        for d in window.days()
    ]
    records = sum(r["records"] for r in agent_rows)
    errors = sum(r["errors"] for r in agent_rows)
    totals = {
        "agents": len(agent_rows),
        "records": records,
        "traces": all_traces,
        "errors": errors,
        "errorRate": _ratio(errors, records),
        "blocked": sum(r["blocked"] for r in agent_rows),
    }
    table = Table(AGENT_HEADER, [[r[h] for h in AGENT_HEADER] for r in agent_rows])
    chart_rows = agent_rows[:20]
    sections = [
        Section(
            "Overview",
            text=(
                f"{totals['agents']} agents wrote {records} records in {totals['traces']} traces; "
                f"{errors} records were errors ({totals['errorRate'] * 100:.1f} %) and {totals['blocked']} were "
                "blocked. Durations are percentiles of the metrics histogram (within ±9 %)."
            ),
        ),
        Section(
            "Records per agent",
            chart=Chart(
                "Records and errors per agent" + (" (top 20)" if len(agent_rows) > 20 else ""),
                "bar",
                [r["agentName"] or "" for r in chart_rows],
                [
                    ("Records", [float(r["records"]) for r in chart_rows]),
                    ("Errors", [float(r["errors"]) for r in chart_rows]),
                ],
            ),
        ),
        Section(
            "Per agent",
            table=Table(
                ["Agent", "Records", "Traces", "Errors", "Error rate", "Blocked", "p50", "p95"],
                [
                    [
                        r["agentName"],
                        r["records"],
                        r["traces"],
                        r["errors"],
                        f"{r['errorRate'] * 100:.1f} %",
                        r["blocked"],
                        _ms_text(r["durationP50Ms"]),
                        _ms_text(r["durationP95Ms"]),
                    ]
                    for r in agent_rows
                ],
            ),
        ),
        Section(
            "Records per day",
            chart=Chart(
                "Records per UTC day",
                "line",
                [r["day"] for r in daily],
                [("Records", [r["records"] for r in daily]), ("Errors", [r["errors"] for r in daily])],
            ),
        ),
    ]
    return Content(
        summary=totals, data={"totals": totals, "agents": agent_rows, "daily": daily}, sections=sections, table=table
    )


# --- policy_changes ----------------------------------------------------------------------------
CHANGE_HEADER = [
    "occurredAt",
    "change",
    "policyId",
    "policyName",
    "version",
    "agentId",
    "agentName",
    "actor",
    "note",
]


def _actor(event: Any) -> str | None:
    return event.actor_email or event.actor_name or event.actor_id


async def policy_changes(session: AsyncSession, window: Window, _keys: sealing.Keys) -> Content:
    # narrowed to the agents in SQL, before the row limit: the limit and `truncated` describe what is shown
    events = await activity.list_activity(
        session,
        activity.ActivityQuery(
            actions=["policy.attached", "policy.detached"],
            occurred_from=window.start,
            occurred_to=window.end,
            agent_ids=window.agent_ids,
        ),
        page=PageRequest(MAX_ROWS),  # one row more than shown: `truncated`
    )
    relevant: set[str] | None = None
    if window.agent_ids is not None:
        # versions of the policies these agents run now, or were attached to or detached from in the window
        relevant = {e.target_id for e in events if e.target_id}
        for attached in (await policies.policies_of(session, set(window.agent_ids))).values():
            relevant.update(p.id for p in attached)
    versions = await policies.versions_created(
        session, created_from=window.start, created_to=window.end, limit=MAX_ROWS + 1, policy_ids=relevant
    )
    truncated = len(events) > MAX_ROWS or len(versions) > MAX_ROWS
    events, versions = events[:MAX_ROWS], versions[:MAX_ROWS]
    creators = await _people(session, [v.created_by for v, _ in versions])
    agent_names = await _agent_names(session, [(e.metadata_ or {}).get("agentId") for e in events])

    changes: list[dict[str, Any]] = []
    for version, name in versions:
        changes.append(
            {
                "occurredAt": iso(version.created_at),
                "change": "version_created",
                "policyId": version.policy_id,
                "policyName": name,
                "version": version.number,
                "agentId": None,
                "agentName": None,
                "actor": creators.get(version.created_by or "", version.created_by),
                "note": version.note,
            }
        )
    for event in events:
        agent_id = (event.metadata_ or {}).get("agentId")
        changes.append(
            {
                "occurredAt": iso(event.occurred_at),
                "change": "attached" if event.action == "policy.attached" else "detached",
                "policyId": event.target_id,
                "policyName": event.target_name,
                "version": None,
                "agentId": agent_id,
                "agentName": (event.metadata_ or {}).get("agentName") or agent_names.get(agent_id),
                "actor": _actor(event),
                "note": None,
            }
        )
    changes.sort(key=lambda c: (c["occurredAt"], c["change"], c["policyId"] or ""))
    per_day: dict[str, int] = {}
    for change in changes:
        per_day[change["occurredAt"][:10]] = per_day.get(change["occurredAt"][:10], 0) + 1
    daily: list[dict[str, Any]] = [
        {"day": d.isoformat(), "changes": per_day.get(d.isoformat(), 0)} for d in window.days()
    ]
    summary = {
        "versionsCreated": sum(1 for c in changes if c["change"] == "version_created"),
        "attached": sum(1 for c in changes if c["change"] == "attached"),
        "detached": sum(1 for c in changes if c["change"] == "detached"),
        "policiesChanged": len({c["policyId"] for c in changes}),
        "changes": len(changes),
        "truncated": truncated,
    }
    versions_data = [c for c in changes if c["change"] == "version_created"]
    attachments_data = [c for c in changes if c["change"] != "version_created"]
    sections = [
        Section(
            "Overview",
            text=(
                f"{summary['versionsCreated']} policy versions were created, {summary['attached']} attachments and "
                f"{summary['detached']} detachments were made, across {summary['policiesChanged']} policies."
                + (f" Only the first {MAX_ROWS} changes of each kind are listed." if truncated else "")
            ),
        ),
        Section(
            "Changes per day",
            chart=Chart(
                "Policy changes per UTC day",
                "bar",
                [r["day"] for r in daily],
                [("Changes", [r["changes"] for r in daily])],
            ),
        ),
        Section(
            "Policy versions created",
            table=Table(
                ["When (UTC)", "Policy", "Version", "By", "Note"],
                [
                    [c["occurredAt"], c["policyName"], c["version"], c["actor"] or "", c["note"] or ""]
                    for c in versions_data
                ],
            ),
        ),
        Section(
            "Attachments and detachments",
            table=Table(
                ["When (UTC)", "Change", "Policy", "Agent", "By"],
                [
                    [
                        c["occurredAt"],
                        c["change"],
                        c["policyName"] or c["policyId"],
                        c["agentName"] or "",
                        c["actor"] or "",
                    ]
                    for c in attachments_data
                ],
            ),
        ),
    ]
    return Content(
        summary=summary,
        data={
            "totals": summary,
            "versions": versions_data,
            "attachments": attachments_data,
            "changes": changes,
            "daily": daily,
        },
        sections=sections,
        table=Table(CHANGE_HEADER, [[c[h] for h in CHANGE_HEADER] for c in changes]),
    )


async def _people(session: AsyncSession, user_ids: Sequence[str | None]) -> dict[str, str]:
    return await orgs.user_labels(session, [u for u in user_ids if u])


# --- audit_integrity ---------------------------------------------------------------------------
async def audit_integrity(session: AsyncSession, window: Window, keys: sealing.Keys) -> Content:
    outcome = await sealing.verify(session, keys, occurred_from=window.start, occurred_to=window.end)
    digests = await sealing.digests_covering(session, occurred_from=window.start, occurred_to=window.end)
    verification = {
        "ok": outcome.ok,
        "recordsChecked": outcome.records_checked,
        "digestsChecked": outcome.digests_checked,
        "digestsCovered": len(digests),
        "recordsErased": outcome.records_erased,
        "firstBrokenRecordId": outcome.first_broken_record_id,
        "firstBrokenDigestId": outcome.first_broken_digest_id,
        "reason": outcome.reason,
    }
    digest_rows = [
        {
            "id": d.id,
            "sequence": d.sequence,
            "fromSeq": d.from_seq,
            "toSeq": d.to_seq,
            "recordCount": d.record_count,
            "firstOccurredAt": iso(d.first_occurred_at),
            "lastOccurredAt": iso(d.last_occurred_at),
            "sealedAt": iso(d.created_at),
            "merkleRoot": d.merkle_root,
        }
        for d in digests[:MAX_ROWS]
    ]
    erasures = sorted(
        (e for e in (await erasure.erasures_of(session)).values() if window.start <= e.requested_at < window.end),
        key=lambda e: (e.requested_at, e.id),
    )
    erasure_rows = [
        {
            "id": e.id,
            "requestedAt": iso(e.requested_at),
            "requestedBy": e.requested_by_name or e.requested_by,
            "status": e.status,
            "recordCount": e.record_count,
            "reason": e.reason,
        }
        for e in erasures[:MAX_ROWS]
    ]
    verdict = (
        "Every record in the window matches its checksum, and every digest's signature, Merkle root and chain "
        "link hold: nothing was altered, removed or reordered."
        if outcome.ok
        else f"The audit trail does NOT verify: {outcome.reason}."
    )
    sections = [
        Section(
            "Verification",
            text=verdict,
            table=Table(
                ["Check", "Result"],
                [
                    ["Verified", "yes" if outcome.ok else "NO"],
                    ["Records checked", outcome.records_checked],
                    ["Digests checked (whole chain)", outcome.digests_checked],
                    ["Digests covering the window", len(digests)],
                    ["Records erased (content removed, proof kept)", outcome.records_erased],
                    ["First broken record", outcome.first_broken_record_id or "–"],
                    ["First broken digest", outcome.first_broken_digest_id or "–"],
                    ["Reason", outcome.reason or "–"],
                ],
            ),
        ),
        Section(
            "Digests covering the window",
            table=Table(
                ["#", "Digest", "Records", "First record (UTC)", "Last record (UTC)", "Sealed (UTC)"],
                [
                    [d["sequence"], d["id"], d["recordCount"], d["firstOccurredAt"], d["lastOccurredAt"], d["sealedAt"]]
                    for d in digest_rows
                ],
            ),
        ),
        Section(
            "Erasures requested in the window (GDPR Art. 17)",
            table=Table(
                ["Erasure", "Requested (UTC)", "By", "Status", "Records", "Reason"],
                [
                    [e["id"], e["requestedAt"], e["requestedBy"], e["status"], e["recordCount"], e["reason"]]
                    for e in erasure_rows
                ],
            ),
        ),
    ]
    data = {"verification": verification, "digests": digest_rows, "erasures": erasure_rows}
    return Content(summary=verification, data=data, sections=sections)


GATHERERS: dict[str, Callable[[AsyncSession, Window, sealing.Keys], Awaitable[Content]]] = {
    "compliance_summary": compliance_summary,
    "agent_activity": agent_activity,
    "policy_changes": policy_changes,
    "audit_integrity": audit_integrity,
}


async def gather(session: AsyncSession, kind: str, window: Window, keys: sealing.Keys) -> Content:
    return await GATHERERS[kind](session, window, keys)
