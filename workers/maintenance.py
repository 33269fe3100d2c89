"""Housekeeping jobs."""

from __future__ import annotations

from typing import Any

from app.orgs import sessions
from app.unit_of_work import system_unit_of_work


async def remove_expired_files(ctx: dict[str, Any]) -> int:
    """Deletes stored exports and reports past their expiry (their download links have expired too)."""
    return await ctx["runtime"].files.delete_expired()


async def remove_expired_sign_ins(ctx: dict[str, Any]) -> int:
    """Deletes sign-in sessions, emailed tokens, invitations and SSO logins long past their use."""
    async with system_unit_of_work(ctx["runtime"]) as session:
        return await sessions.remove_expired(session)
