"""OTLP export → audit records: map, register agents by `service.name`, check each span on its own,
write in chunks of at most `max_batch_records` (one ingest transaction each), then the usual follow-ups.

Everything a record gets elsewhere (masking, checksums, compliance, alerts, live spans, search) comes from
going through the one ingest entry, `app.audit.ingest.ingest`, like the REST and GraphQL ingest.
Re-sent spans (exporters retry) write nothing new: each record's idempotency key is
`otlp:{traceId}:{spanId}`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import structlog
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from app.agents import service as agents
from app.audit.ingest import ingest
from app.audit.validation import AuditLogDraft, check_records
from app.errors import BadUserInput, QuotaExceeded
from app.otel.logs import map_logs_request
from app.otel.mapping import Mapped, MappedSpan, Rejection, map_request
from app.principal import Principal
from app.runtime.resources import Runtime
from app.unit_of_work import unit_of_work

log = structlog.get_logger(__name__)

AGENT_SOURCE = "opentelemetry"
MAX_ERROR_MESSAGE = 1024
MAX_REASONS_SHOWN = 5


@dataclass(slots=True)
class ExportOutcome:
    received: int
    written: int  # new records
    duplicates: int  # spans already stored (a retried export)
    rejections: list[Rejection]
    noun: str = "spans"

    @property
    def rejected(self) -> int:
        return len(self.rejections)

    def error_message(self) -> str:
        if not self.rejections:
            return ""
        shown = "; ".join(f"{r.label}: {r.reason}" for r in self.rejections[:MAX_REASONS_SHOWN])
        more = self.rejected - MAX_REASONS_SHOWN
        message = f"{self.rejected} of {self.received} {self.noun} rejected: {shown}"
        if more > 0:
            message += f"; and {more} more"
        return message[:MAX_ERROR_MESSAGE]


def _check(chunk: list[MappedSpan], max_batch: int) -> tuple[list[AuditLogDraft], list[MappedSpan], list[Rejection]]:
    """Spans are checked one by one in effect: the invalid ones are set aside, the rest go on."""
    rejections: list[Rejection] = []
    pending = chunk
    while pending:
        try:
            drafts = check_records([s.record for s in pending], max_batch=max_batch, batch=True)
            return drafts, pending, rejections
        except BadUserInput as exc:
            reasons: dict[int, list[str]] = {}
            for problem in exc.extensions.get("problems") or []:
                if isinstance(problem.get("index"), int):
                    reasons.setdefault(problem["index"], []).append(f"{problem['field']} {problem['message']}")
            if not reasons:
                raise
            rejections.extend(Rejection(pending[i].label, "; ".join(r)) for i, r in sorted(reasons.items()))
            pending = [s for i, s in enumerate(pending) if i not in reasons]
    return [], [], rejections


class _AgentIds:
    """(org, service.name) → agent id, remembered for a minute so that an exporter sending every few
    milliseconds does not look its agent up each time. Safe to be stale: a deleted agent makes the
    ingest fail on its id, and the export then registers the name again (see `_write`)."""

    seconds = 60.0
    max_entries = 10_000
    entries: ClassVar[dict[tuple[str, str], tuple[str, float]]] = {}

    @classmethod
    def get(cls, org_id: str, name: str) -> str | None:
        found = cls.entries.get((org_id, name))
        return found[0] if found is not None and found[1] > time.monotonic() else None

    @classmethod
    def put(cls, org_id: str, ids: dict[str, str]) -> None:
        if len(cls.entries) + len(ids) > cls.max_entries:
            cls.entries.clear()
        expires = time.monotonic() + cls.seconds
        cls.entries.update({(org_id, name): (agent_id, expires) for name, agent_id in ids.items()})


async def _register_agents(
    runtime: Runtime, principal: Principal, names: set[str], source_ip: str | None, *, cached: bool = True
) -> dict[str, str]:
    known = {n: i for n in names if (i := _AgentIds.get(principal.org_id, n)) is not None} if cached else {}
    missing = names - known.keys()
    if not missing:
        return known
    async with unit_of_work(runtime, principal.org_id) as session:
        found = await agents.ensure_agents_by_name(
            session, principal, missing, source=AGENT_SOURCE, source_ip=source_ip
        )
    _AgentIds.put(principal.org_id, found)
    return {**known, **found}


async def _write(
    runtime: Runtime,
    principal: Principal,
    drafts: list[AuditLogDraft],
    names_by_id: dict[str, str],
    source_ip: str | None,
) -> tuple[int, int]:
    """One ingest transaction; (created, duplicates). An agent deleted between registration and the
    write is registered again (once) instead of failing the export."""
    for attempt in (1, 2):
        try:
            result = await ingest(runtime, principal, drafts, batch=True)
        except BadUserInput as exc:
            missing = exc.extensions.get("agentIds")
            if attempt == 2 or exc.extensions.get("field") != "agentId" or not missing:
                raise
            names = {names_by_id[i] for i in missing if i in names_by_id}
            fresh = await _register_agents(runtime, principal, names, source_ip, cached=False)
            for draft in drafts:
                if draft.agent_id in missing and draft.agent_id in names_by_id:
                    draft.agent_id = fresh[names_by_id[draft.agent_id]]
            names_by_id.update({agent_id: name for name, agent_id in fresh.items()})
            continue
        return len(result.created), len(drafts) - len(result.created)
    raise AssertionError("unreachable")


async def export(
    runtime: Runtime, principal: Principal, request: ExportTraceServiceRequest, *, source_ip: str | None = None
) -> ExportOutcome:
    mapped = map_request(request)
    return await _write_mapped(runtime, principal, mapped, len(mapped.spans) + len(mapped.rejections), source_ip)


async def export_logs(
    runtime: Runtime, principal: Principal, request: ExportLogsServiceRequest, *, source_ip: str | None = None
) -> ExportOutcome:
    """OTLP logs: the GenAI content events, one record per span (see `app.otel.logs`); other log records are
    acknowledged and not stored. `received` counts log records; `written` counts records."""
    mapped, received = map_logs_request(request)
    outcome = await _write_mapped(runtime, principal, mapped, received, source_ip)
    outcome.noun = "log records"
    return outcome


async def _write_mapped(
    runtime: Runtime, principal: Principal, mapped: Mapped, received: int, source_ip: str | None
) -> ExportOutcome:
    agent_ids = await _register_agents(
        runtime, principal, {s.service_name for s in mapped.spans if s.service_name}, source_ip
    )
    names_by_id = {agent_id: name for name, agent_id in agent_ids.items()}
    for span in mapped.spans:
        if span.service_name:
            span.record["agentId"] = agent_ids[span.service_name]

    outcome = ExportOutcome(received=received, written=0, duplicates=0, rejections=list(mapped.rejections))
    max_batch = runtime.settings.max_batch_records
    for start in range(0, len(mapped.spans), max_batch):
        chunk = mapped.spans[start : start + max_batch]
        drafts, kept, rejections = _check(chunk, max_batch)
        outcome.rejections.extend(rejections)
        if not drafts:
            continue
        try:
            created, duplicates = await _write(runtime, principal, drafts, names_by_id, source_ip)
        except QuotaExceeded as exc:
            if not outcome.written and not outcome.duplicates:
                raise  # nothing written: the whole export is refused with the quota's status
            # earlier chunks are stored: report the rest as rejected (exporters must not retry them)
            unwritten = [*kept, *mapped.spans[start + max_batch :]]
            outcome.rejections.extend(Rejection(s.label, exc.message) for s in unwritten)
            break
        outcome.written += created
        outcome.duplicates += duplicates
    if outcome.rejections:
        log.info(
            "otlp spans rejected",
            rejected=outcome.rejected,
            received=received,
            first=_first_reason(outcome.rejections),
        )
    return outcome


def _first_reason(rejections: list[Rejection]) -> Any:
    return f"{rejections[0].label}: {rejections[0].reason}" if rejections else None
