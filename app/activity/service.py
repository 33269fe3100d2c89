"""Writing and reading the organisation's activity trail."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select

from app.activity import chain as _chain  # noqa: F401  registers the hook that chains new events
from app.activity.models import ActivityEvent
from app.db import AsyncSession, new_id, utcnow, within
from app.integrity import record_checksum
from app.masking import mask_json, mask_text
from app.pagination import PageRequest
from app.principal import Principal

# Where the current request comes from, set once by the HTTP middleware: (source address, user agent).
REQUEST_ORIGIN: ContextVar[tuple[str | None, str | None]] = ContextVar("request_origin", default=(None, None))

_CHECKSUM_FIELDS = (
    "id",
    "org_id",
    "actor_type",
    "actor_id",
    "actor_name",
    "actor_email",
    "action",
    "target_type",
    "target_id",
    "target_name",
    "metadata",
    "occurred_at",
    "source_ip",
    "user_agent",
)


def record_activity(
    session: AsyncSession,
    principal: Principal | None,
    action: str,
    *,
    org_id: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    target_name: str | None = None,
    metadata: dict[str, Any] | None = None,
    source_ip: str | None = None,
) -> ActivityEvent:
    """Adds the event to the caller's transaction: it lands exactly when the change it describes does."""
    origin_ip, user_agent = REQUEST_ORIGIN.get()
    if target_name is None and metadata and isinstance(metadata.get("name"), str):
        target_name = metadata["name"]
    values: dict[str, Any] = {
        "id": new_id("act"),
        "org_id": org_id or (principal.org_id if principal else None),
        "actor_type": principal.kind if principal else "system",
        "actor_id": principal.actor_id if principal else None,
        "actor_name": principal.actor_name if principal else None,
        "actor_email": principal.actor_email if principal else None,
        "action": action,
        "target_type": target_type,
        "target_id": target_id,
        "target_name": mask_text(target_name)[0][:200] if target_name else None,
        "metadata": mask_json(metadata)[0] if metadata else {},
        "occurred_at": utcnow(),
        "source_ip": source_ip or origin_ip,
        "user_agent": user_agent[:300] if user_agent else None,
    }
    metadata_value = values.pop("metadata")
    # chained (chain index, hashes, checksum) when the transaction flushes: app/activity/chain.py
    event = ActivityEvent(**values, metadata_=metadata_value)
    session.add(event)
    return event


@dataclass
class ActivityQuery:
    target_types: list[str] | None = None
    actions: list[str] | None = None
    actor_id: str | None = None
    target_id: str | None = None
    occurred_from: datetime | None = None
    occurred_to: datetime | None = None
    search: str | None = None
    agent_ids: list[str] | None = None  # events whose metadata names one of these agents (attachments)
    action_verbs: list[str] | None = None  # the action's last part: `created` selects agent.created, policy.created …
    actor: str | None = None  # the actor's id or email (any case)


def _conditions(query: ActivityQuery) -> list[Any]:
    conditions: list[Any] = []
    if query.target_types:
        conditions.append(col(ActivityEvent.target_type).in_(query.target_types))
    if query.actions:
        # `agent.*` selects a family of actions
        exact = [a for a in query.actions if not a.endswith("*")]
        prefixes = [a[:-1] for a in query.actions if a.endswith("*")]
        options: list[sa.ColumnElement[bool]] = [col(ActivityEvent.action).in_(exact)] if exact else []
        options += [col(ActivityEvent.action).startswith(p, autoescape=True) for p in prefixes]
        conditions.append(sa.or_(*options))
    if query.action_verbs:
        verbs = [col(ActivityEvent.action).endswith("." + verb, autoescape=True) for verb in query.action_verbs]
        conditions.append(sa.or_(*verbs, col(ActivityEvent.action).in_(query.action_verbs)))
    if query.actor_id:
        conditions.append(ActivityEvent.actor_id == query.actor_id)
    if query.actor:
        conditions.append(
            sa.or_(
                col(ActivityEvent.actor_id) == query.actor,
                sa.func.lower(ActivityEvent.actor_email) == query.actor.lower(),
            )
        )
    if query.target_id:
        conditions.append(ActivityEvent.target_id == query.target_id)
    conditions += within(ActivityEvent.occurred_at, query.occurred_from, query.occurred_to)
    if query.agent_ids is not None:
        conditions.append(ActivityEvent.metadata_["agentId"].astext.in_(query.agent_ids))
    if query.search:
        pattern = f"%{_escape_like(query.search)}%"
        conditions.append(
            sa.or_(
                col(ActivityEvent.action).ilike(pattern, escape="\\"),
                col(ActivityEvent.target_name).ilike(pattern, escape="\\"),
                col(ActivityEvent.actor_name).ilike(pattern, escape="\\"),
                col(ActivityEvent.actor_email).ilike(pattern, escape="\\"),
                sa.cast(ActivityEvent.metadata_, sa.Text).ilike(pattern, escape="\\"),
            )
        )
    return conditions


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def list_activity(session: AsyncSession, query: ActivityQuery, *, page: PageRequest) -> list[ActivityEvent]:
    """Newest first; keyset pagination on (occurred_at, id)."""
    stmt = page.apply(
        select(ActivityEvent).where(*_conditions(query)), col(ActivityEvent.occurred_at), col(ActivityEvent.id)
    )
    return list((await session.exec(stmt)).all())


async def count_activity(session: AsyncSession, query: ActivityQuery) -> int:
    stmt = sa.select(sa.func.count()).select_from(ActivityEvent).where(*_conditions(query))
    return int((await session.execute(stmt)).scalar_one())


def export_statement(query: ActivityQuery, columns: Sequence[Any], *, limit: int | None = None) -> Any:
    """The given columns of every matching event, newest first (at most `limit`)."""
    stmt = (
        sa.select(*columns)
        .select_from(ActivityEvent)
        .where(*_conditions(query))
        .order_by(col(ActivityEvent.occurred_at).desc(), col(ActivityEvent.id).desc())
    )
    return stmt if limit is None else stmt.limit(limit)


async def stream_activity_batches(
    session: AsyncSession, query: ActivityQuery, *, batch_size: int, limit: int | None = None
) -> AsyncIterator[list[ActivityEvent]]:
    """Every matching event (the first `limit`), newest first, in lists of up to `batch_size`, through a
    server-side cursor."""
    stmt = export_statement(query, [ActivityEvent], limit=limit).execution_options(yield_per=batch_size)
    result = await session.stream_scalars(stmt)
    async for partition in result.partitions(batch_size):
        yield list(partition)


# --- the chain (app/activity/chain.py), for sealing and verification (app.audit.streams) ---------------------


def legacy_checksum(event: ActivityEvent) -> str:
    """The checksum events carried before the chain (over _CHECKSUM_FIELDS)."""
    values = {k: (event.metadata_ if k == "metadata" else getattr(event, k)) for k in _CHECKSUM_FIELDS}
    return record_checksum(values)


async def chain_heads(session: AsyncSession) -> dict[str, int]:
    """Every organisation's last chain index (a system session's read)."""
    stmt = sa.select(col(ActivityEvent.org_id), sa.func.max(col(ActivityEvent.chain_index))).group_by(
        col(ActivityEvent.org_id)
    )
    return {org: int(top) for org, top in (await session.execute(stmt)).all()}


async def chain_entries(session: AsyncSession, low: int, high: int) -> list[tuple[int, bytes]]:
    if high < low:
        return []
    stmt = (
        sa.select(col(ActivityEvent.chain_index), col(ActivityEvent.entry_hash))
        .where(col(ActivityEvent.chain_index).between(low, high))
        .order_by(col(ActivityEvent.chain_index))
    )
    return [(int(i), bytes(e)) for i, e in (await session.execute(stmt)).all()]


async def chain_span(session: AsyncSession, low: int, high: int) -> tuple[int, int, datetime, datetime] | None:
    """(count, last index, first and last occurred_at) of the events with chain indexes low..high."""
    stmt = sa.select(
        sa.func.count(),
        sa.func.max(col(ActivityEvent.chain_index)),
        sa.func.min(col(ActivityEvent.occurred_at)),
        sa.func.max(col(ActivityEvent.occurred_at)),
    ).where(col(ActivityEvent.chain_index).between(low, high))
    row = (await session.execute(stmt)).one()
    return None if not row[0] else (int(row[0]), int(row[1]), row[2], row[3])


async def chain_events(session: AsyncSession, after: int, limit: int, high: int | None) -> list[ActivityEvent]:
    stmt = select(ActivityEvent).where(col(ActivityEvent.chain_index) > after)
    if high is not None:
        stmt = stmt.where(col(ActivityEvent.chain_index) <= high)
    return list((await session.exec(stmt.order_by(col(ActivityEvent.chain_index)).limit(limit))).all())


async def chain_window(
    session: AsyncSession, occurred_from: datetime | None, occurred_to: datetime | None
) -> tuple[int, int] | None:
    stmt = sa.select(sa.func.min(col(ActivityEvent.chain_index)), sa.func.max(col(ActivityEvent.chain_index))).where(
        *within(ActivityEvent.occurred_at, occurred_from, occurred_to)
    )
    low, high = (await session.execute(stmt)).one()
    return None if low is None else (int(low), int(high))


async def events_by_action(session: AsyncSession, actions: Sequence[str]) -> list[ActivityEvent]:
    """Every event of the organisation with one of these actions, in chain order."""
    stmt = (
        select(ActivityEvent)
        .where(col(ActivityEvent.action).in_(list(actions)))
        .order_by(col(ActivityEvent.chain_index))
    )
    return list((await session.exec(stmt)).all())


async def find_event(session: AsyncSession, event_id: str) -> ActivityEvent | None:
    return (await session.exec(select(ActivityEvent).where(col(ActivityEvent.id) == event_id))).first()
