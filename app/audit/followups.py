"""What happens after an ingest transaction commits: alerts and live spans out, search indexing queued (the
alert.created webhook deliveries are queued by the webhooks domain's own effect). Registered on the ingest's
unit of work by `app.audit.service.ingest`, run by its owner once the commit succeeded.

Both are best effort: the records are already safe in PostgreSQL. A lost publish means a live viewer
re-reads the trace when it resubscribes; a lost indexing job is caught by the search sweeper.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import structlog

from app import unit_of_work
from app.alerts import live as live_alerts
from app.alerts import notify
from app.alerts.models import Alert
from app.audit import live, search
from app.audit.models import AuditRecord
from app.db import AsyncSession
from app.runtime.resources import Runtime

log = structlog.get_logger(__name__)


def register(session: AsyncSession, created: Sequence[AuditRecord], alerts: Sequence[Alert]) -> None:
    if created:
        unit_of_work.after_commit(session, lambda runtime: after_commit(runtime, created, alerts))


async def after_commit(runtime: Runtime, created: Sequence[AuditRecord], alerts: Sequence[Alert] = ()) -> None:
    if not created:
        return
    if alerts:
        try:
            await live_alerts.publish_alerts(runtime.broadcaster, alerts)
        except Exception:
            log.warning("could not publish live alerts; subscribers resume from their cursor", exc_info=True)
        await notify.queue(runtime, {a.org_id for a in alerts})  # alert emails, for the members who want them
    try:
        await live.publish_spans(runtime.broadcaster, created)
    except Exception:
        log.warning("could not publish live spans", exc_info=True, records=len(created))
    by_org: dict[str, list[str]] = defaultdict(list)
    for record in created:
        by_org[record.org_id].append(record.id)
    try:
        await search.queue_for_indexing(runtime, by_org)
    except Exception:
        log.warning("could not queue search indexing; the sweeper will index", exc_info=True)
