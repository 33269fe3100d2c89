"""Audit jobs: sealing the trail into signed digests."""

from __future__ import annotations

from typing import Any

from app.audit import sealing


async def seal_audit_trail(ctx: dict[str, Any]) -> int:
    """Every minute (cron), and on demand: seals all records written since each organisation's last digest."""
    runtime = ctx["runtime"]
    return await sealing.seal_all(runtime.db, runtime.secret_key)
