"""The one ingest entry: every path that brings audit records in (REST, GraphQL, OTLP, and those to come)
calls `ingest` with the caller and the records as received.

It checks them (BAD_USER_INPUT listing every problem, nothing written), writes them through
`app.audit.service.ingest` in the caller's unit of work (its own one when the caller holds none), whose
commit then runs the follow-ups that service registered: live spans and alerts out, search indexing and
webhook deliveries queued.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.audit import service
from app.audit.service import IngestResult
from app.audit.validation import check_records
from app.db import AsyncSession
from app.principal import Principal
from app.runtime.resources import Runtime
from app.unit_of_work import unit_of_work


async def ingest(
    runtime: Runtime,
    principal: Principal,
    records: Sequence[Any],
    *,
    batch: bool,
    session: AsyncSession | None = None,
) -> IngestResult:
    """`records`: raw JSON objects, or drafts a path has already checked (OTLP checks span by span so as to
    set aside only the bad ones). `batch`: the records came as a batch (its size limits, per-record problem
    indexes). `session`: the caller's unit of work (a GraphQL request's), committed by its owner; without
    one the records are written and committed here, and the follow-ups run before this returns."""
    drafts = check_records(list(records), max_batch=runtime.settings.max_batch_records, batch=batch)
    if session is not None:
        return await service.ingest(session, principal, drafts)
    async with unit_of_work(runtime, principal.org_id) as own:
        return await service.ingest(own, principal, drafts)
