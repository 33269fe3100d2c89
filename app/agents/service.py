"""Operations of the agents domain: create, rename, describe, soft-delete, read, and validate ids for ingest.

Writes are dashboard actions (users only) and each writes an activity event in the same transaction.
Reads work for users and API keys. Sessions are tenant sessions: every query sees only the caller's
organisation, so another organisation's agent is indistinguishable from an unknown one.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from app.activity.service import record_activity
from app.agents.models import NAME_UNIQUE_INDEX, Agent
from app.alerts.service import agent_has_open_alerts
from app.db import AsyncSession, new_id, utcnow
from app.errors import BadUserInput, Conflict, NotFound
from app.inputs import check_json_object
from app.masking import mask_json, mask_text
from app.pagination import PageRequest
from app.principal import Principal

MAX_NAME_LENGTH = 200
MAX_DESCRIPTION_LENGTH = 2000
MAX_METADATA_BYTES = 64 * 1024  # compact JSON, UTF-8


# --- validation --------------------------------------------------------------------------------
def check_name(value: str) -> str:
    value = value.strip()
    if not value:
        raise BadUserInput("name must not be empty", field="name")
    if len(value) > MAX_NAME_LENGTH:
        raise BadUserInput(f"name must be at most {MAX_NAME_LENGTH} characters", field="name")
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise BadUserInput("name must not contain control characters", field="name")
    return value


def check_description(value: str) -> str:
    value = value.strip()
    if len(value) > MAX_DESCRIPTION_LENGTH:
        raise BadUserInput(f"description must be at most {MAX_DESCRIPTION_LENGTH} characters", field="description")
    if "\x00" in value:
        raise BadUserInput("description must not contain NUL characters", field="description")
    return mask_text(value)[0]  # secrets never land, in any free text


def check_metadata(value: Any) -> dict[str, Any]:
    return mask_json(check_json_object(value, field="metadata", max_bytes=MAX_METADATA_BYTES))[0]


def _canonical(value: Any) -> str:
    """Compares JSON values as JSON (in Python, True == 1 and 1 == 1.0)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _is_duplicate_name(exc: IntegrityError) -> bool:
    return NAME_UNIQUE_INDEX in str(exc.orig)


def _duplicate(name: str) -> Conflict:
    return Conflict(f"an agent named {name!r} already exists", field="name")


# --- writes ------------------------------------------------------------------------------------
async def create_agent(
    session: AsyncSession,
    principal: Principal,
    *,
    name: str,
    description: str | None = None,
    metadata: Any = None,
    source_ip: str | None = None,
) -> Agent:
    """Users only. CONFLICT when a non-deleted agent of the organisation has the same name (any case)."""
    agent = Agent(
        id=new_id("agent"),
        org_id=principal.org_id,
        name=check_name(name),
        description=check_description(description or ""),
        metadata_=check_metadata({} if metadata is None else metadata),
    )
    session.add(agent)
    record_activity(
        session,
        principal,
        "agent.created",
        target_type="agent",
        target_id=agent.id,
        metadata={"name": agent.name},
        source_ip=source_ip,
    )
    try:
        await session.flush()
    except IntegrityError as exc:
        if _is_duplicate_name(exc):
            raise _duplicate(agent.name) from None
        raise
    return agent


async def update_agent(
    session: AsyncSession,
    principal: Principal,
    agent_id: str,
    *,
    name: str | None = None,
    description: str | None = None,
    metadata: Any = None,
    source_ip: str | None = None,
) -> Agent:
    """Users only. `None` leaves a field as it is; `metadata` replaces the whole object.

    Only fields whose value actually changes count: an update that changes nothing writes nothing.
    NOT_FOUND for unknown, another organisation's and deleted agents.
    """
    new_name = check_name(name) if name is not None else None
    new_description = check_description(description) if description is not None else None
    new_metadata = check_metadata(metadata) if metadata is not None else None
    agent = await get_agent(session, agent_id)
    changes: dict[str, Any] = {}
    if new_name is not None and new_name != agent.name:
        changes["name"] = {"from": agent.name, "to": new_name}
        agent.name = new_name
    if new_description is not None and new_description != agent.description:
        changes["description"] = {"from": agent.description, "to": new_description}
        agent.description = new_description
    if new_metadata is not None and _canonical(new_metadata) != _canonical(agent.metadata_):
        changes["metadata"] = _metadata_diff(agent.metadata_, new_metadata)
        agent.metadata_ = new_metadata
    if not changes:
        return agent
    agent.updated_at = utcnow()
    record_activity(
        session,
        principal,
        "agent.updated",
        target_type="agent",
        target_id=agent.id,
        metadata={"name": agent.name, "fields": list(changes), "changes": changes},
        source_ip=source_ip,
    )
    try:
        await session.flush()
    except IntegrityError as exc:
        if _is_duplicate_name(exc) and new_name is not None:
            raise _duplicate(new_name) from None
        raise
    return agent


MAX_TRAIL_VALUE_BYTES = 4096  # a metadata value larger than this (serialised) is named in the trail, not copied


def _trail_values(values: dict[str, Any]) -> dict[str, Any]:
    """Top-level metadata values as the activity trail keeps them: masked (secret-like keys and secret-shaped
    strings become [REDACTED]), and each at most MAX_TRAIL_VALUE_BYTES serialised."""
    masked, _ = mask_json(values)
    out: dict[str, Any] = {}
    for key, value in masked.items():
        size = len(_canonical(value).encode())
        out[key] = value if size <= MAX_TRAIL_VALUE_BYTES else f"[{size} bytes, too large for the activity trail]"
    return out


def _metadata_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Which top-level keys were added, removed and changed, with their previous (`from`) and new (`to`)
    values, masked."""
    added = sorted(k for k in new if k not in old)
    removed = sorted(k for k in old if k not in new)
    changed = sorted(k for k in new if k in old and _canonical(new[k]) != _canonical(old[k]))
    return {
        "keysAdded": added,
        "keysRemoved": removed,
        "keysChanged": changed,
        "from": _trail_values({k: old[k] for k in removed + changed}),
        "to": _trail_values({k: new[k] for k in added + changed}),
    }


async def delete_agent(
    session: AsyncSession, principal: Principal, agent_id: str, *, source_ip: str | None = None
) -> Agent:
    """Users only. Soft delete: the row stays (audit records point at it), the name is free again,
    and the id can no longer be used for new records. NOT_FOUND when already deleted."""
    agent = await get_agent(session, agent_id)
    agent.deleted_at = utcnow()
    agent.updated_at = agent.deleted_at
    record_activity(
        session,
        principal,
        "agent.deleted",
        target_type="agent",
        target_id=agent.id,
        metadata={"name": agent.name},
        source_ip=source_ip,
    )
    await session.flush()
    return agent


async def ensure_agents_by_name(
    session: AsyncSession,
    principal: Principal,
    names: Iterable[str],
    *,
    source: str,
    source_ip: str | None = None,
) -> dict[str, str]:
    """The id of the non-deleted agent with each name (any case), registering the missing ones.

    For ingest that names agents instead of passing ids (OpenTelemetry's `service.name`): API keys may
    call it. Each agent registered here writes one `agent.created` activity event (metadata says
    `autoRegistered` and the `source`) by the calling principal, in the same transaction. Concurrent
    callers registering the same name race safely: the insert is `ON CONFLICT DO NOTHING` on the
    partial unique index, and the loser reads the winner's row. Names must pass `check_name`
    (BAD_USER_INPUT otherwise). Returns {name as given: agent id}.
    """
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    checked = {name: check_name(name) for name in names}
    if not checked:
        return {}
    wanted = sorted(set(checked.values()), key=str.lower)
    rows = (
        await session.exec(
            select(Agent.id, Agent.name).where(
                sa.func.lower(Agent.name).in_([sa.func.lower(sa.literal(n)) for n in wanted]),
                col(Agent.deleted_at).is_(None),
            )
        )
    ).all()
    by_lower = {name.lower(): agent_id for agent_id, name in rows}
    resolved: dict[str, str] = {}
    for name in wanted:  # a stable order: concurrent registrations take index locks in the same order
        agent_id = by_lower.get(name.lower())
        if agent_id is None:
            now = utcnow()
            statement = (
                pg_insert(Agent)
                .values(
                    id=new_id("agent"),
                    org_id=principal.org_id,
                    name=name,
                    description="",
                    metadata={"autoRegistered": True, "source": source},
                    created_at=now,
                    updated_at=now,
                )
                .on_conflict_do_nothing(
                    index_elements=[col(Agent.org_id), sa.text("lower(name)")],
                    index_where=sa.text("deleted_at IS NULL"),
                )
                .returning(col(Agent.id))
            )
            agent_id = (await session.execute(statement)).scalar_one_or_none()
            if agent_id is not None:
                record_activity(
                    session,
                    principal,
                    "agent.created",
                    target_type="agent",
                    target_id=agent_id,
                    metadata={"name": name, "autoRegistered": True, "source": source},
                    source_ip=source_ip,
                )
            else:  # registered concurrently (or cased differently than Python's lower() guessed)
                agent_id = (
                    await session.exec(
                        select(Agent.id).where(
                            sa.func.lower(col(Agent.name)) == sa.func.lower(sa.literal(name)),
                            col(Agent.deleted_at).is_(None),
                        )
                    )
                ).one()
        resolved[name] = agent_id
    return {given: resolved[name] for given, name in checked.items()}


async def find_agent(session: AsyncSession, agent_id: str, *, include_deleted: bool = False) -> Agent | None:
    """The agent, or None for unknown ids, another organisation's ids and (unless asked) deleted ones."""
    query = select(Agent).where(Agent.id == agent_id)
    if not include_deleted:
        query = query.where(col(Agent.deleted_at).is_(None))
    return (await session.exec(query)).first()


async def get_agent(session: AsyncSession, agent_id: str, *, include_deleted: bool = False) -> Agent:
    agent = await find_agent(session, agent_id, include_deleted=include_deleted)
    if agent is None:
        raise NotFound("agent not found", id=agent_id)
    return agent


def _filtered(query: Any, *, search: str | None, include_deleted: bool, has_open_alerts: bool | None = None) -> Any:
    if has_open_alerts is not None:
        condition = agent_has_open_alerts(Agent.id)
        query = query.where(condition if has_open_alerts else sa.not_(condition))
    if not include_deleted:
        query = query.where(col(Agent.deleted_at).is_(None))
    if search is not None and search.strip():
        escaped = search.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{escaped}%"
        query = query.where(
            sa.or_(col(Agent.name).ilike(pattern, escape="\\"), col(Agent.description).ilike(pattern, escape="\\"))
        )
    return query


async def list_agents(
    session: AsyncSession,
    *,
    search: str | None = None,
    include_deleted: bool = False,
    has_open_alerts: bool | None = None,
    page: PageRequest,
) -> list[Agent]:
    """Newest first, keyset pagination on (created_at, id). `search` is a case-insensitive substring of the name
    or the description."""
    query = _filtered(select(Agent), search=search, include_deleted=include_deleted, has_open_alerts=has_open_alerts)
    query = page.apply(query, col(Agent.created_at), col(Agent.id))
    return list((await session.exec(query)).all())


async def count_agents(
    session: AsyncSession,
    *,
    search: str | None = None,
    include_deleted: bool = False,
    has_open_alerts: bool | None = None,
) -> int:
    query = _filtered(
        select(sa.func.count(col(Agent.id))),
        search=search,
        include_deleted=include_deleted,
        has_open_alerts=has_open_alerts,
    )
    return int((await session.exec(query)).one())


async def agents_by_ids(session: AsyncSession, ids: Iterable[str]) -> dict[str, Agent]:
    """One query; deleted agents included (records keep pointing at them). Unknown ids are absent."""
    wanted = set(ids)
    if not wanted:
        return {}
    rows = (await session.exec(select(Agent).where(col(Agent.id).in_(wanted)))).all()
    return {agent.id: agent for agent in rows}


def is_agent_id(value: str) -> bool:
    """Whether `value` is meant as an agent id (our prefix): on ingest, anything else names the agent, and an
    unknown `agent_…` stays an error rather than registering an agent by a mistyped id."""
    return value.startswith("agent_")


async def require_active_agent_ids(session: AsyncSession, ids: Iterable[str]) -> None:
    """One query. BAD_USER_INPUT naming every id that is unknown, another organisation's, or deleted."""
    wanted = set(ids)
    if not wanted:
        return
    query = select(col(Agent.id)).where(col(Agent.id).in_(wanted), col(Agent.deleted_at).is_(None))
    found = set((await session.exec(query)).all())
    missing = sorted(wanted - found)
    if missing:
        raise BadUserInput(
            f"unknown or deleted agent id(s): {', '.join(missing[:20])}"
            + (f" and {len(missing) - 20} more" if len(missing) > 20 else ""),
            field="agentId",
            agentIds=missing,
        )


async def touch_last_seen(session: AsyncSession, seen: Mapping[str, datetime]) -> None:
    """Moves each agent's `last_seen_at` forward to the given time, never back; part of the caller's
    transaction (no commit). Two statements whatever the batch size: the rows are first locked in id
    order, so concurrent ingests naming the same agents cannot deadlock on them."""
    if not seen:
        return
    ids = sorted(seen)
    locked = select(col(Agent.id)).where(col(Agent.id).in_(ids)).order_by(col(Agent.id)).with_for_update(key_share=True)
    ids = list((await session.exec(locked)).all())  # tenant-scoped: only the caller's agents
    if not ids:
        return
    batch = sa.select(
        sa.func.unnest(sa.literal(ids, ARRAY(sa.String()))).label("id"),
        sa.func.unnest(sa.literal([seen[i] for i in ids], ARRAY(sa.DateTime(timezone=True)))).label("seen"),
    ).subquery("batch")
    await session.exec(
        sa.update(Agent)
        .where(col(Agent.id) == batch.c.id)
        .where(sa.or_(col(Agent.last_seen_at).is_(None), col(Agent.last_seen_at) < batch.c.seen))
        .values(last_seen_at=batch.c.seen)
        .execution_options(synchronize_session=False)
    )
