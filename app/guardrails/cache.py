"""Compiled rule sets, cached per process and dropped everywhere at once (through Redis) when rules change."""

from __future__ import annotations

import asyncio
import time

import structlog

from app.compliance.changes import RULES_CHANGED_CHANNEL, on_rules_changed
from app.compliance.engine import RuleSet
from app.runtime.redis import Broadcaster

log = structlog.get_logger(__name__)

CACHE_TTL_SECONDS = 60.0  # a safety net: changes are announced through Redis at once


class RuleCache:
    """Compiled rule sets per (organisation, agent): the organisation's rules plus those of the current
    version of every policy attached to the agent (agent None: the organisation's rules alone)."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str | None], tuple[float, RuleSet]] = {}

    def get(self, org_id: str, agent_id: str | None = None) -> RuleSet | None:
        entry = self._entries.get((org_id, agent_id))
        if entry is None or time.monotonic() - entry[0] > CACHE_TTL_SECONDS:
            return None
        return entry[1]

    def put(self, org_id: str, ruleset: RuleSet, agent_id: str | None = None) -> None:
        self._entries[(org_id, agent_id)] = (time.monotonic(), ruleset)

    def invalidate(self, org_id: str | None = None) -> None:
        if org_id is None:
            self._entries.clear()
        else:
            for key in [k for k in self._entries if k[0] == org_id]:
                del self._entries[key]


RULES = RuleCache()
on_rules_changed(RULES.invalidate)  # rule changes committed in this process drop the copies at once


async def listen_for_rule_changes(broadcaster: Broadcaster) -> None:
    """Runs for the life of the process."""
    while True:
        try:
            async with broadcaster.subscribe(RULES_CHANGED_CHANNEL, gaps=True) as messages:
                RULES.invalidate()  # anything could have changed while we were not listening
                async for message in messages:
                    # a Gap: announcements may have been lost with the connection
                    RULES.invalidate(message.decode() if isinstance(message, bytes) else None)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("rule-change listener lost Redis; retrying", exc_info=True)
        await asyncio.sleep(1.0)
