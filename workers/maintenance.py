"""Housekeeping jobs."""

from __future__ import annotations

from typing import Any


async def remove_expired_files(ctx: dict[str, Any]) -> int:
    """Deletes stored exports and reports past their expiry (their download links have expired too)."""
    return await ctx["runtime"].files.delete_expired()
