"""Rule changes. Whatever changes the rules an organisation's records are assessed with (its rules, packs,
policies and their attachments) calls `rules_changed(session, org_id)` in the transaction that changes them;
once that commits, every process drops its compiled copy: this one at once, the others through Redis.

The compiled copies live above this domain (`app.guardrails.cache`), which hands its invalidation in with
`on_rules_changed`, so that compliance and policies tell it without importing it.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from app import unit_of_work
from app.db import AsyncSession
from app.runtime.redis import Broadcaster

log = structlog.get_logger(__name__)

RULES_CHANGED_CHANNEL = "agentrail:compliance:rules-changed"

_LOCAL: list[Callable[[str], None]] = []  # this process's caches of compiled rules


def on_rules_changed(invalidate: Callable[[str], None]) -> None:
    _LOCAL.append(invalidate)


def rules_changed(session: AsyncSession, org_id: str) -> None:
    """Announced after the commit, once per transaction however many changes it made."""
    unit_of_work.after_commit(
        session,
        lambda runtime: announce_rules_changed(runtime.broadcaster, org_id),
        key=(RULES_CHANGED_CHANNEL, org_id),
    )


async def announce_rules_changed(broadcaster: Broadcaster, org_id: str) -> None:
    """After a commit that changed rules (or policies): every process drops its compiled copy."""
    for invalidate in _LOCAL:
        invalidate(org_id)
    try:
        await broadcaster.publish(RULES_CHANGED_CHANNEL, org_id.encode())
    except Exception:
        log.warning("could not announce a rule change; other processes refresh within a minute", exc_info=True)
