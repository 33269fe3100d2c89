"""Writing and reading the organisation's activity trail."""

from __future__ import annotations

from typing import Any

from app.activity.models import ActivityEvent
from app.db import AsyncSession, new_id
from app.orgs.principal import Principal


def record_activity(
    session: AsyncSession,
    principal: Principal | None,
    action: str,
    *,
    org_id: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    source_ip: str | None = None,
) -> ActivityEvent:
    """Adds the event to the caller's transaction: it lands exactly when the change it describes does."""
    event = ActivityEvent(
        id=new_id("act"),
        org_id=org_id or (principal.org_id if principal else None),
        actor_type=principal.kind if principal else "system",
        actor_id=principal.actor_id if principal else None,
        action=action,
        target_type=target_type,
        target_id=target_id,
        metadata_=metadata or {},
        source_ip=source_ip,
    )
    session.add(event)
    return event
