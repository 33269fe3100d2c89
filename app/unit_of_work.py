"""One transaction per operation, and what must follow its commit.

Whoever runs an operation owns its transaction: the GraphQL request (each mutation commits when its resolver
returns, the rest when the request ends), the REST route, the OTLP handler, the job and the CLI command. They
open it with `unit_of_work` (or commit a session they hold with `commit`); services only flush.

A service whose work must be followed by something outside the database (a webhook delivery queued, a live
publish, the rule cache invalidated, search indexing or a job enqueued) registers it with `after_commit` on
the session it writes with. The owner's `commit` runs every registered effect once, in registration order,
after the commit succeeded; a rollback (or a failed commit) forgets them. Effects are best effort: the rows are
the truth and each has a sweeper or a resubscription that catches up, so one that fails is logged, not raised.

The registry lives in the session's `info`, so it follows the transaction wherever the session goes
(including the GraphQL request's shared `SerializedSession`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import structlog

from app.db import SYSTEM, AsyncSession, Database, TenancyError

if TYPE_CHECKING:
    from app.runtime.resources import Runtime

log = structlog.get_logger(__name__)

Effect = Callable[["Runtime"], Awaitable[object]]

_EFFECTS = "unit_of_work.effects"  # key → effect, in registration order
_COLLECTED = "unit_of_work.collected"  # key → the list a collecting effect is handed


def after_commit(session: Any, effect: Effect, *, key: Hashable | None = None) -> None:
    """Runs `effect(runtime)` once after this session's transaction commits, never if it rolls back.
    With a `key`, only the first effect registered under it in the transaction counts (e.g. one rule-cache
    invalidation per organisation however many rules a mutation changed)."""
    effects: dict[Hashable, Effect] = session.info.setdefault(_EFFECTS, {})
    effects.setdefault(key if key is not None else object(), effect)


def collect(session: Any, key: Hashable, effect: Callable[[Runtime, list[Any]], Awaitable[object]]) -> list[Any]:
    """A list, fresh in each transaction, that `effect(runtime, items)` receives once after the commit with
    everything appended to it (e.g. every webhook delivery a transaction wrote, queued in one job)."""
    collected: dict[Hashable, list[Any]] = session.info.setdefault(_COLLECTED, {})
    items = collected.get(key)
    if items is None:
        items = collected[key] = []
        after_commit(session, lambda runtime: effect(runtime, items), key=("collect", key))
    return items


def pending(session: Any) -> bool:
    """Whether effects wait for this session's commit."""
    return bool(session.info.get(_EFFECTS))


def forget(session: Any) -> None:
    """Drops what waits for a commit that will not come (after a rollback)."""
    session.info.pop(_EFFECTS, None)
    session.info.pop(_COLLECTED, None)


async def commit(session: Any, runtime: Runtime | None) -> None:
    """Commits the session's transaction, then runs its effects. Only an owner calls this. `runtime` may
    be None only where nothing registers effects (a runner that has just a database)."""
    try:
        await session.commit()
    except BaseException:
        forget(session)
        raise
    effects = session.info.pop(_EFFECTS, None)
    session.info.pop(_COLLECTED, None)
    if not effects:
        return
    if runtime is None:
        raise RuntimeError("after-commit effects were registered in a transaction whose owner has no runtime")
    for effect in effects.values():
        try:
            await effect(runtime)
        except Exception:
            log.warning("an after-commit effect failed; its sweeper catches up", exc_info=True)


async def rollback(session: Any) -> None:
    forget(session)
    await session.rollback()


@asynccontextmanager
async def owned(session: AsyncSession, runtime: Runtime | None) -> AsyncIterator[AsyncSession]:
    """The session's transaction committed (with its effects) when the block ends, rolled back when it raises;
    the session closed either way."""
    async with session:
        try:
            yield session
        except BaseException:
            await rollback(session)
            raise
        await commit(session, runtime)


def unit_of_work(runtime: Runtime, org_id: str) -> Any:
    """`async with unit_of_work(runtime, org_id) as session:` one organisation's operation, committed at the end."""
    if not org_id or org_id == SYSTEM:
        raise TenancyError("unit_of_work needs a real organisation id (system_unit_of_work for the system)")
    return owned(runtime.db.session(org_id=org_id), runtime)


def system_unit_of_work(runtime: Runtime) -> Any:
    """An unscoped operation (sign-up, log-in, sweeps across organisations), committed at the end."""
    return owned(runtime.db.session(org_id=SYSTEM), runtime)


def transaction(db: Database, org_id: str) -> Any:
    """For a runner that holds only the database (a job's heartbeat, a search indexing chunk): one of its
    transactions, scoped to `org_id` (or `SYSTEM`), committed at the end. Nothing in it may register effects."""
    if not org_id:
        raise TenancyError("transaction needs an organisation id or SYSTEM")
    return owned(db.session(org_id=org_id), None)


__all__ = [
    "after_commit",
    "collect",
    "commit",
    "forget",
    "owned",
    "pending",
    "rollback",
    "system_unit_of_work",
    "transaction",
    "unit_of_work",
]
