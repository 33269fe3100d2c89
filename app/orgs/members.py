"""Members and invitations: who belongs to an organisation, with which role, and how people join and leave.

Rules: there is always at least one owner; only owners grant, change or remove the OWNER role (an admin manages
admins, members and viewers); everyone may leave but the last owner. Removing someone (or their leaving) ends
their sessions in that organisation at once and closes their open subscriptions (the revocation announcement).
Every change is on the activity trail. Invitations carry a single-use token, stored hashed, valid 7 days.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select

from app.activity.service import record_activity
from app.db import AsyncSession, iso, new_id, utcnow
from app.errors import BadUserInput, Conflict, Forbidden, NotFound
from app.mail import service as mail
from app.orgs import revocation, sessions
from app.orgs.credentials import hash_password, hash_secret, new_secret_token, verify_password
from app.orgs.models import Invitation, Membership, Organization, Role, User
from app.orgs.revocation import Revoked
from app.orgs.service import _check_name, _check_password, get_organization, link, normalise_email
from app.pagination import PageRequest
from app.principal import Principal
from app.settings import Settings
from app.unit_of_work import after_commit

INVITATION_INVALID = "this invitation is invalid, already used, revoked or expired; ask for a new one"


def _role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise BadUserInput(f"unknown role {value!r}", field="role") from None


def _may_manage(principal: Principal, role: str) -> None:
    """Granting, changing or removing `role` takes an owner when it is OWNER (an admin manages the rest)."""
    if role == Role.OWNER and principal.role != Role.OWNER:
        raise Forbidden("only an owner may grant, change or remove the owner role")


async def _owners(session: AsyncSession) -> int:
    query = select(sa.func.count()).select_from(Membership).where(Membership.role == Role.OWNER)
    return int((await session.exec(query)).one())


async def _lock_members(session: AsyncSession) -> None:
    """Serialises the changes that count owners (two owners demoting each other at once leave one)."""
    await session.exec(select(Membership.id).where(Membership.role == Role.OWNER).with_for_update())


async def member(session: AsyncSession, user_id: str) -> Membership:
    row = (await session.exec(select(Membership).where(Membership.user_id == user_id))).first()
    if row is None:  # a tenant session: another organisation's member is simply not found
        raise NotFound("member not found", id=user_id)
    return row


# --- reading ------------------------------------------------------------------------------------------
async def list_members(session: AsyncSession, *, page: PageRequest) -> list[tuple[Membership, User]]:
    """In the order they joined (oldest first)."""
    query = select(Membership, User).join(User, col(User.id) == col(Membership.user_id))
    query = page.apply(query, col(Membership.joined_at), col(Membership.id), descending=False)
    return [(m, u) for m, u in (await session.exec(query)).all()]


async def list_invitations(session: AsyncSession, *, pending_only: bool, page: PageRequest) -> list[Invitation]:
    query = select(Invitation)
    if pending_only:
        query = query.where(
            col(Invitation.accepted_at).is_(None),
            col(Invitation.revoked_at).is_(None),
            col(Invitation.expires_at) > utcnow(),
        )
    query = page.apply(query, col(Invitation.created_at), col(Invitation.id))
    return list((await session.exec(query)).all())


async def organizations_of(session: AsyncSession, user_id: str) -> list[tuple[Membership, Organization]]:
    """Every organisation the user belongs to (a system session), in the order they joined."""
    query = (
        select(Membership, Organization)
        .join(Organization, col(Organization.id) == col(Membership.org_id))
        .where(Membership.user_id == user_id)
        .order_by(col(Membership.joined_at))
    )
    return [(m, o) for m, o in (await session.exec(query)).all()]


# --- invitations --------------------------------------------------------------------------------------
async def invite(
    session: AsyncSession, principal: Principal, settings: Settings, *, email: str, role: str, source_ip: str | None
) -> Invitation:
    email = normalise_email(email)
    granted = _role(role)
    _may_manage(principal, granted)
    already = (
        await session.exec(
            select(Membership.id).join(User, col(User.id) == col(Membership.user_id)).where(User.email == email)
        )
    ).first()
    if already is not None:
        raise Conflict("this person is already a member", field="email")
    pending = (
        await session.exec(
            select(Invitation.id).where(
                Invitation.email == email,
                col(Invitation.accepted_at).is_(None),
                col(Invitation.revoked_at).is_(None),
                col(Invitation.expires_at) > utcnow(),
            )
        )
    ).first()
    if pending is not None:
        raise Conflict("an invitation to this address is pending: resend it or revoke it", field="email", id=pending)
    invitation = Invitation(
        id=new_id("inv"),
        org_id=principal.org_id,
        email=email,
        role=granted.value,
        token_hash="",
        invited_by=principal.user_id,
    )
    session.add(invitation)
    await _send(session, principal, settings, invitation)
    record_activity(
        session,
        principal,
        "member.invited",
        target_type="invitation",
        target_id=invitation.id,
        metadata={"email": email, "role": granted.value},
        source_ip=source_ip,
    )
    await session.flush()
    return invitation


async def _send(session: AsyncSession, principal: Principal, settings: Settings, invitation: Invitation) -> None:
    """A fresh token (any earlier one stops working), a fresh 7-day expiry, and the email."""
    token, token_hash = new_secret_token()
    invitation.token_hash = token_hash
    invitation.expires_at = utcnow() + timedelta(days=settings.invitation_days)
    org = await get_organization(session, invitation.org_id)
    mail.enqueue(
        session,
        to=invitation.email,
        template="invitation",
        values={
            "inviter": principal.actor_name or "Someone",
            "organization": org.name,
            "role": invitation.role,
            "link": link(settings, "accept-invitation", token),
            "expires": iso(invitation.expires_at),
        },
        org_id=invitation.org_id,
        settings=settings,
    )


async def _pending_invitation(session: AsyncSession, invitation_id: str) -> Invitation:
    invitation = await session.get(Invitation, invitation_id)
    if invitation is None:
        raise NotFound("invitation not found", id=invitation_id)
    if invitation.accepted_at is not None:
        raise Conflict("this invitation was already accepted", id=invitation_id)
    if invitation.revoked_at is not None:
        raise Conflict("this invitation was revoked", id=invitation_id)
    return invitation


async def revoke_invitation(
    session: AsyncSession, principal: Principal, invitation_id: str, *, source_ip: str | None
) -> Invitation:
    invitation = await _pending_invitation(session, invitation_id)
    _may_manage(principal, invitation.role)
    invitation.revoked_at = utcnow()
    record_activity(
        session,
        principal,
        "invitation.revoked",
        target_type="invitation",
        target_id=invitation.id,
        metadata={"email": invitation.email},
        source_ip=source_ip,
    )
    await session.flush()
    return invitation


async def resend_invitation(
    session: AsyncSession, principal: Principal, settings: Settings, invitation_id: str, *, source_ip: str | None
) -> Invitation:
    invitation = await _pending_invitation(session, invitation_id)
    _may_manage(principal, invitation.role)
    await _send(session, principal, settings, invitation)
    record_activity(
        session,
        principal,
        "invitation.resent",
        target_type="invitation",
        target_id=invitation.id,
        metadata={"email": invitation.email},
        source_ip=source_ip,
    )
    await session.flush()
    return invitation


async def accept(
    session: AsyncSession,
    *,
    token: str,
    name: str | None,
    password: str | None,
    signed_in_user_id: str | None,
    source_ip: str | None,
) -> tuple[User, Membership]:
    """Joins the invited address to the organisation: a new account (name and password), or an existing one
    (its password, or signed in as it). The token is used up. A system session."""
    invitation = (
        await session.exec(
            select(Invitation).where(Invitation.token_hash == hash_secret(token.strip())).with_for_update()
        )
    ).first()
    now = utcnow()
    if invitation is None or invitation.accepted_at or invitation.revoked_at or invitation.expires_at <= now:
        raise BadUserInput(INVITATION_INVALID, field="token")
    user = (await session.exec(select(User).where(User.email == invitation.email))).first()
    if user is None:
        if not name or not password:
            raise BadUserInput("a new account needs a name and a password", field="password")
        _check_password(password)
        user = User(
            id=new_id("usr"),
            email=invitation.email,
            name=_check_name(name, "name"),
            password_hash=hash_password(password),
            email_verified_at=now,
        )
        session.add(user)
        await session.flush()
    elif signed_in_user_id != user.id and not (password and verify_password(password, user.password_hash)):
        raise BadUserInput("this address has an account: sign in, or give its password", field="password")
    existing = (
        await session.exec(
            select(Membership).where(Membership.user_id == user.id, Membership.org_id == invitation.org_id)
        )
    ).first()
    if existing is not None:
        raise Conflict("you are already a member of this organisation")
    invitation.accepted_at = now
    invitation.accepted_by = user.id
    if user.email_verified_at is None:
        user.email_verified_at = now  # the invitation reached the address
    membership = await join(
        session,
        user,
        invitation.org_id,
        invitation.role,
        metadata={"role": invitation.role, "invitationId": invitation.id},
        source_ip=source_ip,
    )
    return user, membership


async def join(
    session: AsyncSession,
    user: User,
    org_id: str,
    role: str,
    *,
    metadata: dict[str, Any],
    source_ip: str | None,
) -> Membership:
    """Make `user` a member of `org_id` with `role`, written on the organisation's activity trail as the new
    member's own `member.joined` (by invitation or by single sign-on)."""
    membership = Membership(id=new_id("mem"), org_id=org_id, user_id=user.id, role=role)
    session.add(membership)
    joined = Principal(
        kind="user", org_id=org_id, user_id=user.id, role=role, actor_name=user.name, actor_email=user.email
    )
    record_activity(
        session, joined, "member.joined", target_type="user", target_id=user.id, metadata=metadata, source_ip=source_ip
    )
    await session.flush()
    return membership


# --- members ------------------------------------------------------------------------------------------
async def update_role(
    session: AsyncSession, principal: Principal, user_id: str, role: str, *, source_ip: str | None
) -> Membership:
    granted = _role(role)
    await _lock_members(session)
    target = await member(session, user_id)
    _may_manage(principal, target.role)
    _may_manage(principal, granted)
    if target.role == granted:
        return target
    if target.role == Role.OWNER and await _owners(session) <= 1:
        raise Conflict("an organisation keeps at least one owner: transfer ownership first")
    previous = target.role
    target.role = granted.value
    record_activity(
        session,
        principal,
        "member.role_changed",
        target_type="user",
        target_id=user_id,
        metadata={"from": previous, "to": granted.value},
        source_ip=source_ip,
    )
    await session.flush()
    return target


async def _end_membership(session: AsyncSession, target: Membership, reason: str) -> None:
    await session.delete(target)
    await sessions.end_all(session, target.user_id, org_id=target.org_id, reason=reason)
    revoked = Revoked(memberships=((target.user_id, target.org_id),))
    after_commit(session, lambda runtime: revocation.announce(runtime.broadcaster, revoked))
    await session.flush()


async def remove(session: AsyncSession, principal: Principal, user_id: str, *, source_ip: str | None) -> Membership:
    await _lock_members(session)
    target = await member(session, user_id)
    if user_id == principal.user_id:
        raise BadUserInput("use leaveOrganization to leave", field="userId")
    _may_manage(principal, target.role)
    if target.role == Role.OWNER and await _owners(session) <= 1:
        raise Conflict("an organisation keeps at least one owner")
    await _end_membership(session, target, "removed from the organisation")
    record_activity(
        session,
        principal,
        "member.removed",
        target_type="user",
        target_id=user_id,
        metadata={"role": target.role},
        source_ip=source_ip,
    )
    await session.flush()
    return target


async def leave(session: AsyncSession, principal: Principal, *, source_ip: str | None) -> None:
    await _lock_members(session)
    target = await member(session, principal.user_id or "")
    if target.role == Role.OWNER and await _owners(session) <= 1:
        raise Conflict("the last owner cannot leave: transfer ownership first")
    record_activity(
        session,
        principal,
        "member.left",
        target_type="user",
        target_id=target.user_id,
        metadata={"role": target.role},
        source_ip=source_ip,
    )
    await _end_membership(session, target, "left the organisation")


async def transfer_ownership(
    session: AsyncSession, principal: Principal, user_id: str, *, source_ip: str | None
) -> Membership:
    """The target becomes an owner; the caller (an owner) becomes an admin."""
    if user_id == principal.user_id:
        raise BadUserInput("you are the owner already", field="userId")
    await _lock_members(session)
    target = await member(session, user_id)
    caller = await member(session, principal.user_id or "")
    target.role = Role.OWNER.value
    caller.role = Role.ADMIN.value
    record_activity(
        session,
        principal,
        "organization.ownership_transferred",
        target_type="user",
        target_id=user_id,
        metadata={"from": principal.user_id, "to": user_id},
        source_ip=source_ip,
    )
    await session.flush()
    return target


async def membership_of(session: AsyncSession, user_id: str, org_id: str) -> Membership:
    """The user's membership in `org_id` (a system session); NOT_FOUND when they are not a member."""
    row = (
        await session.exec(select(Membership).where(Membership.user_id == user_id, Membership.org_id == org_id))
    ).first()
    if row is None:
        raise NotFound("organization not found (or you are not a member)", id=org_id)
    return row


def role_of(user_id: Any, org_id: Any) -> Any:
    """SQL for the current role of the user `user_id` in the organisation `org_id` (columns of an outer query:
    an export names each actor's role); NULL when they are not, or no longer, a member."""
    return (
        sa.select(col(Membership.role))
        .where(col(Membership.user_id) == user_id, col(Membership.org_id) == org_id)
        .limit(1)
        .scalar_subquery()
    )
