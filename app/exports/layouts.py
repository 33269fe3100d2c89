"""The columns of the activity trail in the layouts other systems' documents give their audit exports (the seeds),
beside Agentrail's own (`datasets.ACTIVITY`, which makes data sets of them): the same events, filters and readers
(PostgreSQL builds each CSV row and JSON record; COPY streams them), other columns.

- `GATEWAY` (seed 000, `POST /v1/audit/export`): id, orgId, actor, action, target, metadata, occurredAt.
- `ORGANIZATION_AUDIT_LOG` (seed 001, `GET /v1/organizations/{id}/audit-log/export`): Timestamp, Entity Type,
  Entity Name, Action, Actor Name, Actor Email, Target Name, Previous Value, New Value (CSV only).
- `OPERATIONS_AUDIT` (seed 003, `GET /api/v1/audit/export`): id, timestamp, action, user, role, resource,
  resourceType, namespace, sourceIP, checksum; also an export job's data set (above 10,000 records).

How Agentrail's event fills them: the actor is its email, else its name, else its id; the target (entity,
resource) its name, else its id; a change's previous and new values come from the event's metadata
(`changes: {field: {from, to}}`, or `from`/`to`); the role is the actor's current role in the organisation
(an API key's: `api_key`; the system's: `system`); Agentrail has no namespaces (null).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlmodel import col

from app.activity.export_rows import ACTOR_JSON
from app.activity.models import ActivityEvent
from app.exports.formats import csv_text_sql
from app.orgs.members import role_of
from app.runtime.copy_out import JsonText, iso_text, json_object_text

_METADATA: Any = col(ActivityEvent.metadata_)


def _present(column: Any) -> Any:
    return sa.func.nullif(column, "")


ACTOR = sa.func.coalesce(
    _present(ActivityEvent.actor_email), _present(ActivityEvent.actor_name), ActivityEvent.actor_id
)
TARGET_NAME = sa.func.coalesce(_present(ActivityEvent.target_name), ActivityEvent.target_id)
# `agent:agent_01…`: the target's type and id in one cell
TARGET = sa.func.nullif(sa.func.concat_ws(":", ActivityEvent.target_type, ActivityEvent.target_id), "")


def _changed(side: str) -> Any:
    """The values before (`from`) or after (`to`) a change, as text: `{field: value}` for an update's changes,
    the plain value of a single change (a role: `member`), else NULL."""
    changes = sa.func.jsonb_each(_METADATA["changes"]).table_valued("key", "value").alias("change")
    per_field = (
        sa.select(sa.cast(sa.func.jsonb_object_agg(changes.c.key, changes.c.value.op("->")(side)), sa.Text))
        .select_from(changes)
        .scalar_subquery()
    )
    return sa.case(
        (sa.func.jsonb_typeof(_METADATA["changes"]) == "object", per_field),
        else_=_METADATA.op("->>")(side),
    )


def _csv(cells: list[Any]) -> Any:
    return sa.func.concat_ws(",", *[csv_text_sql(cell) for cell in cells])


# --- seed 000 -------------------------------------------------------------------------------------------------
_GATEWAY_CSV = [
    ActivityEvent.id,
    ActivityEvent.org_id,
    ACTOR,
    ActivityEvent.action,
    TARGET,
    sa.cast(_METADATA, sa.Text),
    iso_text(ActivityEvent.occurred_at),
]
_TARGET_JSON = json_object_text(
    [("type", ActivityEvent.target_type), ("id", ActivityEvent.target_id), ("name", ActivityEvent.target_name)]
)
_GATEWAY_JSON = json_object_text(
    [
        ("id", ActivityEvent.id),
        ("orgId", ActivityEvent.org_id),
        ("actor", JsonText(ACTOR_JSON)),
        ("action", ActivityEvent.action),
        ("target", JsonText(_TARGET_JSON)),
        ("metadata", _METADATA),
        ("occurredAt", iso_text(ActivityEvent.occurred_at)),
    ]
)

# --- seed 001 -------------------------------------------------------------------------------------------------
_ORGANIZATION_CSV = [
    iso_text(ActivityEvent.occurred_at),
    ActivityEvent.target_type,
    TARGET_NAME,
    ActivityEvent.action,
    ActivityEvent.actor_name,
    ActivityEvent.actor_email,
    _METADATA.op("->>")("agentName"),  # the second object an event names: the agent a policy was attached to
    _changed("from"),
    _changed("to"),
]

# --- seed 003 -------------------------------------------------------------------------------------------------
ROLE = sa.case(
    (col(ActivityEvent.actor_type) == "user", role_of(ActivityEvent.actor_id, ActivityEvent.org_id)),
    else_=ActivityEvent.actor_type,
)
_OPERATIONS = [
    ("id", ActivityEvent.id),
    ("timestamp", iso_text(ActivityEvent.occurred_at)),
    ("action", ActivityEvent.action),
    ("user", ACTOR),
    ("role", ROLE),
    ("resource", TARGET_NAME),
    ("resourceType", ActivityEvent.target_type),
    ("namespace", sa.cast(sa.null(), sa.Text)),
    ("sourceIP", ActivityEvent.source_ip),
    ("checksum", ActivityEvent.checksum),
]


GATEWAY_HEADER = ("id", "orgId", "actor", "action", "target", "metadata", "occurredAt")
GATEWAY_CSV = _csv(_GATEWAY_CSV)
GATEWAY_JSON = _GATEWAY_JSON
ORGANIZATION_HEADER = (
    "Timestamp",
    "Entity Type",
    "Entity Name",
    "Action",
    "Actor Name",
    "Actor Email",
    "Target Name",
    "Previous Value",
    "New Value",
)
ORGANIZATION_CSV = _csv(_ORGANIZATION_CSV)
OPERATIONS_HEADER = tuple(name for name, _ in _OPERATIONS)
OPERATIONS_CSV = _csv([cell for _, cell in _OPERATIONS])
OPERATIONS_JSON = json_object_text(_OPERATIONS)
