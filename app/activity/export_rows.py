"""The activity trail as exports read it: a whole CSV row and a whole JSON record, built by PostgreSQL and read
with COPY (`app.runtime.copy_out`), like the audit record's (`app.audit.export_rows`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from app.activity.models import ActivityEvent
from app.runtime.copy_out import JsonText, iso_text, json_object_text


def csv_line(text_cell: Callable[[Any], Any]) -> Any:
    """id, orgId, actor (email, else name, else id; empty counts as missing), action, targetType, targetId,
    metadata (its JSON text), occurredAt, sourceIp, checksum; every cell formatted with `text_cell`."""
    cells = [
        ActivityEvent.id,
        ActivityEvent.org_id,
        sa.func.coalesce(
            sa.func.nullif(ActivityEvent.actor_email, ""),
            sa.func.nullif(ActivityEvent.actor_name, ""),
            ActivityEvent.actor_id,
        ),
        ActivityEvent.action,
        ActivityEvent.target_type,
        ActivityEvent.target_id,
        sa.cast(ActivityEvent.metadata_, sa.Text),
        iso_text(ActivityEvent.occurred_at),
        ActivityEvent.source_ip,
        ActivityEvent.checksum,
    ]
    return sa.func.concat_ws(",", *[text_cell(cell) for cell in cells])


ACTOR_JSON = json_object_text(  # the actor as the activity API shows it
    [
        ("type", ActivityEvent.actor_type),
        ("id", ActivityEvent.actor_id),
        ("name", ActivityEvent.actor_name),
        ("email", ActivityEvent.actor_email),
    ]
)

# one event as the activity API shows it, keys in the same order
JSON_RECORD = [
    json_object_text(
        [
            ("id", ActivityEvent.id),
            ("orgId", ActivityEvent.org_id),
            ("actor", JsonText(ACTOR_JSON)),
            ("action", ActivityEvent.action),
            ("targetType", ActivityEvent.target_type),
            ("targetId", ActivityEvent.target_id),
            ("targetName", ActivityEvent.target_name),
            ("metadata", ActivityEvent.metadata_),
            ("occurredAt", iso_text(ActivityEvent.occurred_at)),
            ("sourceIp", ActivityEvent.source_ip),
            ("userAgent", ActivityEvent.user_agent),
            ("checksum", ActivityEvent.checksum),
        ]
    )
]
