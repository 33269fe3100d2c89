"""Sign-in sessions: short access tokens, rotating refresh tokens (reuse ends the family), their end.

A session is one signed-in browser or script in one organisation. Its refresh token rotates on every use
(`generation` + 1); presenting an older generation than the current one means it was copied: the session is
ended at once (the whole family of tokens), and its open subscriptions close. Access tokens name their session
(`sid`) and are checked against it on every request, so ending a session ends its access tokens at once.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlmodel import col, select

from app.db import AsyncSession, new_id, utcnow
from app.errors import Unauthenticated
from app.orgs import revocation
from app.orgs.credentials import AccessToken, TokenSigner, parse_refresh_token
from app.orgs.models import Membership, SignInSession, User
from app.orgs.revocation import Revoked
from app.settings import Settings
from app.unit_of_work import after_commit

SESSION_UNKNOWN = "refresh token is invalid or its session has ended"


@dataclass(frozen=True)
class Issued:
    """What a sign-in (or a refresh) hands out."""

    access: AccessToken
    refresh_token: str
    session: SignInSession


def _issue(signer: TokenSigner, signed_in: SignInSession) -> Issued:
    access = signer.issue(user_id=signed_in.user_id, org_id=signed_in.org_id, session_id=signed_in.id)
    refresh = signer.refresh_token(signed_in.id, signed_in.generation, signed_in.salt)
    return Issued(access=access, refresh_token=refresh, session=signed_in)


async def start(
    session: AsyncSession,
    signer: TokenSigner,
    settings: Settings,
    *,
    user: User,
    org_id: str,
    user_agent: str | None,
    ip_address: str | None,
    method: str = "password",
) -> Issued:
    """A new session for `user` in `org_id` (a membership the caller checked); sign-in lands there next time."""
    now = utcnow()
    signed_in = SignInSession(
        id=new_id("ses"),
        user_id=user.id,
        org_id=org_id,
        salt=secrets.token_hex(16),
        created_at=now,
        last_used_at=now,
        expires_at=now + timedelta(days=settings.refresh_token_days),
        user_agent=(user_agent or "")[:500] or None,
        ip_address=(ip_address or "")[:100] or None,
        method=method,
    )
    session.add(signed_in)
    user.last_org_id = org_id
    await session.flush()
    return _issue(signer, signed_in)


async def refresh(
    session: AsyncSession, signer: TokenSigner, token: str, *, ip_address: str | None
) -> tuple[Issued, User]:
    """New tokens for a refresh token (the next generation). A reused one ends its session: UNAUTHENTICATED
    either way, and the commit must happen (the caller commits before raising) so that the end sticks."""
    session_id, _, _ = parse_refresh_token(token)
    row = (await session.exec(select(SignInSession).where(SignInSession.id == session_id).with_for_update())).first()
    if row is None:
        raise Unauthenticated(SESSION_UNKNOWN)
    generation = signer.check_refresh(token, row.salt)
    now = utcnow()
    if row.revoked_at is not None or row.expires_at <= now:
        raise Unauthenticated(SESSION_UNKNOWN)
    if generation != row.generation:
        # an old refresh token again: whoever holds the current one, the family is no longer trusted
        await end(session, row, reason="refresh token reused")
        raise RefreshReused("this refresh token was already used: the session has been ended; sign in again")
    membership = (
        await session.exec(select(Membership).where(Membership.user_id == row.user_id, Membership.org_id == row.org_id))
    ).first()
    user = await session.get(User, row.user_id)
    if membership is None or user is None:
        await end(session, row, reason="no longer a member")
        raise RefreshReused("you are no longer a member of this organisation")
    row.generation += 1
    row.last_used_at = now
    if ip_address:
        row.ip_address = ip_address[:100]
    await session.flush()
    return _issue(signer, row), user


class RefreshReused(Unauthenticated):
    """UNAUTHENTICATED after the session was ended: the caller commits that end before answering."""


async def move(session: AsyncSession, signer: TokenSigner, signed_in: SignInSession, org_id: str) -> Issued:
    """The same session, now in another organisation (switchOrganization): new tokens; those issued for the
    previous organisation stop working at once (their organisation no longer matches the session's)."""
    signed_in.org_id = org_id
    signed_in.generation += 1
    signed_in.last_used_at = utcnow()
    user = await session.get(User, signed_in.user_id)
    if user is not None:
        user.last_org_id = org_id
    await session.flush()
    return _issue(signer, signed_in)


async def end(session: AsyncSession, signed_in: SignInSession, *, reason: str) -> None:
    if signed_in.revoked_at is None:
        signed_in.revoked_at = utcnow()
        signed_in.revoked_reason = reason[:100]
        await session.flush()
        _announce(session, Revoked(session_ids=(signed_in.id,)))


async def end_all(
    session: AsyncSession, user_id: str, *, reason: str, org_id: str | None = None, except_id: str | None = None
) -> list[str]:
    """Ends every active session of the user (in `org_id` only, when given), but `except_id`."""
    query = sa.update(SignInSession).where(
        col(SignInSession.user_id) == user_id, col(SignInSession.revoked_at).is_(None)
    )
    if org_id is not None:
        query = query.where(col(SignInSession.org_id) == org_id)
    if except_id is not None:
        query = query.where(col(SignInSession.id) != except_id)
    result = await session.execute(
        query.values(revoked_at=utcnow(), revoked_reason=reason[:100]).returning(col(SignInSession.id))
    )
    ended = [str(r[0]) for r in result.all()]
    if ended:
        _announce(session, Revoked(session_ids=tuple(ended)))
    return ended


def _announce(session: AsyncSession, revoked: Revoked) -> None:
    after_commit(session, lambda runtime: revocation.announce(runtime.broadcaster, revoked))


async def get_own(session: AsyncSession, user_id: str, session_id: str) -> SignInSession | None:
    row = await session.get(SignInSession, session_id)
    return row if row is not None and row.user_id == user_id else None


async def list_active(session: AsyncSession, user_id: str) -> list[SignInSession]:
    query = (
        select(SignInSession)
        .where(
            SignInSession.user_id == user_id,
            col(SignInSession.revoked_at).is_(None),
            col(SignInSession.expires_at) > utcnow(),
        )
        .order_by(col(SignInSession.last_used_at).desc())
        .limit(200)
    )
    return list((await session.exec(query)).all())


_EXPIRED = (
    # sign-in sessions ended or expired a month ago (kept meanwhile for `sessions` history and audits)
    "DELETE FROM sign_in_sessions"
    " WHERE coalesce(revoked_at, expires_at) < CAST(:now AS timestamptz) - interval '30 days'",
    # emailed tokens and invitations a week past their expiry (used or not)
    "DELETE FROM user_tokens WHERE expires_at < CAST(:now AS timestamptz) - interval '7 days'",
    "DELETE FROM invitations WHERE accepted_at IS NULL AND expires_at < CAST(:now AS timestamptz) - interval '30 days'",
    # single sign-on logins in flight last 10 minutes
    "DELETE FROM sso_logins WHERE expires_at < CAST(:now AS timestamptz) - interval '1 day'",
)


async def remove_expired(session: AsyncSession) -> int:
    """Housekeeping across organisations (a system session): what no sign-in can use any more."""
    removed = 0
    for statement in _EXPIRED:
        result = await session.execute(sa.text(statement), {"now": utcnow()})
        removed += int(getattr(result, "rowcount", 0) or 0)
    return removed
