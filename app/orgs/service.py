"""Operations of the orgs domain: registration, sign-in, profiles and API keys."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email
from redis.asyncio import Redis
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from app.activity.service import record_activity
from app.db import AsyncSession, iso, new_id, utcnow
from app.errors import BadUserInput, Conflict, Forbidden, NotFound, RateLimited, Unauthenticated
from app.mail import service as mail
from app.masking import mask_json
from app.orgs import auth, preferences, revocation, sessions
from app.orgs.credentials import (
    TokenSigner,
    generate_api_key,
    hash_api_key,
    hash_password,
    hash_secret,
    looks_like_api_key,
    new_secret_token,
    verify_password,
)
from app.orgs.models import ApiKey, Membership, Organization, Role, SignInSession, User, UserToken
from app.orgs.revocation import Revoked
from app.pagination import PageRequest
from app.principal import Principal, Scope
from app.settings import Settings
from app.unit_of_work import after_commit
from app.usage import quota as billing_quota

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024
LAST_USED_RESOLUTION_SECONDS = 60  # lastUsedAt is refreshed at most once a minute per key
BAD_CREDENTIALS = "email or password is incorrect"
_SCOPES = {s.value for s in Scope}
MAX_KEY_AGENTS = 100
VERIFY, RESET = "verify", "reset"
MAX_RESETS_PER_HOUR = 5


def normalise_email(email: str) -> str:
    try:
        return validate_email(email.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise BadUserInput(f"email is not valid: {exc}", field="email") from None


def _check_name(value: str, field: str, *, max_length: int = 200) -> str:
    value = value.strip()
    if not value:
        raise BadUserInput(f"{field} must not be empty", field=field)
    if len(value) > max_length:
        raise BadUserInput(f"{field} must be at most {max_length} characters", field=field)
    return value


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise BadUserInput(f"password must be at least {MIN_PASSWORD_LENGTH} characters", field="password")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise BadUserInput(f"password must be at most {MAX_PASSWORD_LENGTH} characters", field="password")


async def register(
    session: AsyncSession,
    *,
    email: str,
    password: str,
    name: str,
    organization_name: str,
    source_ip: str | None,
    settings: Settings | None = None,
) -> tuple[User, Organization]:
    """Creates an organisation and its owner, and emails the owner a link to verify the address. `session` is a
    system session."""
    email = normalise_email(email)
    name = _check_name(name, "name")
    organization_name = _check_name(organization_name, "organizationName")
    _check_password(password)
    org = Organization(id=new_id("org"), name=organization_name)
    user = User(id=new_id("usr"), email=email, name=name, password_hash=hash_password(password), last_org_id=org.id)
    session.add(org)
    session.add(user)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict("an account with this email already exists", field="email") from None
    session.add(Membership(id=new_id("mem"), org_id=org.id, user_id=user.id, role=Role.OWNER))
    owner = Principal(
        kind="user", org_id=org.id, user_id=user.id, role=Role.OWNER, actor_name=user.name, actor_email=user.email
    )
    record_activity(
        session,
        owner,
        "organization.created",
        target_type="organization",
        target_id=org.id,
        source_ip=source_ip,
    )
    await session.flush()
    if settings is not None:
        await send_verification(session, user, settings)
    return user, org


async def send_verification(session: AsyncSession, user: User, settings: Settings) -> None:
    """Emails a single-use link that verifies the user's address (48 hours by default)."""
    token, token_hash = new_secret_token()
    expires = utcnow() + timedelta(hours=settings.email_verification_hours)
    session.add(UserToken(id=new_id("utk"), user_id=user.id, purpose=VERIFY, token_hash=token_hash, expires_at=expires))
    mail.enqueue(
        session,
        to=user.email,
        template="verification",
        values={"email": user.email, "link": link(settings, "verify-email", token), "expires": iso(expires)},
        user_id=user.id,
        settings=settings,
    )
    await session.flush()


def public_url(settings: Settings) -> str:
    return (settings.public_url or f"http://{settings.host}:{settings.port}").rstrip("/")


def link(settings: Settings, page: str, token: str) -> str:
    """A dashboard link carrying a single-use token (in the fragment: never sent to a server, never logged)."""
    return f"{public_url(settings)}/{page}#token={token}"


@dataclass(frozen=True)
class LoginResult:
    user: User
    organization: Organization
    role: str


class LoginThrottle:
    """Counts failed sign-ins in Redis per client address and per account (the email as given, normalised
    when it can be, hashed: no address book in Redis); too many of either in the window is RATE_LIMITED. The
    account count stops guessing spread over many addresses; unknown emails count the same, so the throttle
    tells nothing about which accounts exist."""

    def __init__(
        self, redis: Redis, *, max_failures: int, window_seconds: int, max_account_failures: int | None = None
    ) -> None:
        self._redis = redis
        self._max = max_failures
        self._max_account = max_account_failures if max_account_failures is not None else max_failures * 2
        self._window = window_seconds

    @staticmethod
    def _keys(address: str, account: str) -> tuple[str, str]:
        digest = hashlib.sha256(account.encode()).hexdigest()[:32]
        return f"agentrail:login-failures:{address}", f"agentrail:login-failures:account:{digest}"

    async def check(self, address: str, account: str) -> None:
        keys = self._keys(address, account)
        failures = await self._redis.mget(keys)
        for key, count, limit in zip(keys, failures, (self._max, self._max_account), strict=True):
            if count is not None and int(count) >= limit:
                ttl = await self._redis.ttl(key)
                raise RateLimited("too many failed sign-ins; try again later", retry_after=max(ttl, 1))

    async def failed(self, address: str, account: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            for key in self._keys(address, account):
                # the window starts at the first failure (SET NX works on Redis 6, unlike EXPIRE NX)
                pipe.set(key, 0, ex=self._window, nx=True)
                pipe.incr(key)
            await pipe.execute()

    async def succeeded(self, address: str, account: str) -> None:
        await self._redis.delete(*self._keys(address, account))


async def login(
    session: AsyncSession,
    *,
    email: str,
    password: str,
    throttle: LoginThrottle,
    source_ip: str,
) -> LoginResult:
    """Checks email and password (unknown email and wrong password fail the same way, in the same time) and
    picks the organisation sign-in lands in: the last used one while the user is still a member there."""
    try:
        normalised = normalise_email(email)
    except BadUserInput:
        normalised = None
    account = normalised or email.strip().lower()
    await throttle.check(source_ip, account)
    user = None
    if normalised is not None:
        user = (await session.exec(select(User).where(User.email == normalised))).first()
    if not verify_password(password, user.password_hash if user else None) or user is None:
        await throttle.failed(source_ip, account)
        raise Unauthenticated(BAD_CREDENTIALS)
    await throttle.succeeded(source_ip, account)
    membership = await landing_membership(session, user)
    if membership is None:
        raise Forbidden("this account belongs to no organisation any more; ask an admin for an invitation")
    org = await session.get(Organization, membership.org_id)
    assert org is not None
    if org.sso_required and membership.role != Role.OWNER:
        raise Forbidden("this organisation signs in with single sign-on: use startSso")
    return LoginResult(user=user, organization=org, role=membership.role)


async def landing_membership(session: AsyncSession, user: User) -> Membership | None:
    """The user's membership in the last organisation used, else the oldest one; None when there is none."""
    rows = (
        await session.exec(select(Membership).where(Membership.user_id == user.id).order_by(col(Membership.joined_at)))
    ).all()
    return next((m for m in rows if m.org_id == user.last_org_id), rows[0] if rows else None)


async def principal_from_token(session: AsyncSession, signer: TokenSigner, token: str) -> Principal:
    """The user of a valid access token: its session active, the user still a member of its organisation (one
    query). Refreshes the session's and the membership's last use at most once a minute."""
    claims = signer.verify(token)
    row = (
        await session.exec(
            select(User, Membership, SignInSession)
            .join(Membership, col(Membership.user_id) == col(User.id))
            .join(SignInSession, col(SignInSession.user_id) == col(User.id))
            .where(
                User.id == claims.user_id,
                Membership.org_id == claims.org_id,
                SignInSession.id == claims.session_id,
                SignInSession.org_id == claims.org_id,
                col(SignInSession.revoked_at).is_(None),
            )
        )
    ).first()
    if row is None:
        raise Unauthenticated("access token is invalid or its session has ended")
    user, membership, signed_in = row
    now = utcnow()
    if (now - signed_in.last_used_at).total_seconds() > LAST_USED_RESOLUTION_SECONDS:
        signed_in.last_used_at = now
        membership.last_active_at = now
        await session.flush()  # the caller's session autocommits: written at once
    return Principal(
        kind="user",
        org_id=membership.org_id,
        user_id=user.id,
        role=membership.role,
        actor_name=user.name,
        actor_email=user.email,
        expires_at=claims.expires_at,
        session_id=signed_in.id,
    )


async def principal_from_api_key(session: AsyncSession, secret: str) -> Principal:
    if not looks_like_api_key(secret):
        raise Unauthenticated("API key is invalid")
    key = (await session.exec(select(ApiKey).where(ApiKey.secret_hash == hash_api_key(secret)))).first()
    if key is None:
        raise Unauthenticated("API key is invalid")
    if key.revoked_at is not None:
        raise Unauthenticated("API key has been revoked")
    now = utcnow()
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() > LAST_USED_RESOLUTION_SECONDS:
        key.last_used_at = now
        await session.flush()  # the caller's session autocommits: written at once
    return Principal(
        kind="api_key",
        org_id=key.org_id,
        api_key_id=key.id,
        actor_name=f"{key.name} ({key.prefix}…)",
        scopes=frozenset(Scope(s) for s in key.scopes if s in _SCOPES),
        agent_ids=frozenset(key.agent_ids) if key.agent_ids is not None else None,
    )


async def get_user(session: AsyncSession, user_id: str) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound("user not found")
    return user


async def user_labels(session: AsyncSession, user_ids: list[str]) -> dict[str, str]:
    """`Name <email>` of users by id, one query; unknown ids are absent."""
    ids = list(set(user_ids))
    if not ids:
        return {}
    rows = (
        await session.exec(select(col(User.id), col(User.name), col(User.email)).where(col(User.id).in_(ids)))
    ).all()
    return {user_id: f"{name} <{email}>" for user_id, name, email in rows}


async def get_organization(session: AsyncSession, org_id: str) -> Organization:
    org = await session.get(Organization, org_id)
    if org is None:
        raise NotFound("organization not found")
    return org


async def update_profile(
    session: AsyncSession,
    principal: Principal,
    *,
    name: str | None,
    notification_preferences: dict[str, Any] | None,
    source_ip: str | None,
) -> User:
    user = await get_user(session, principal.user_id or "")
    changed: list[str] = []
    if name is not None:
        user.name = _check_name(name, "name")
        changed.append("name")
    if notification_preferences is not None:
        if not all(isinstance(k, str) for k in notification_preferences):
            raise BadUserInput("notificationPreferences must be an object", field="notificationPreferences")
        problem = preferences.check_preferences(notification_preferences)
        if problem:
            raise BadUserInput(problem, field="notificationPreferences")
        user.notification_preferences = mask_json(notification_preferences)[0]  # secrets never land
        changed.append("notificationPreferences")
    if changed:
        user.updated_at = utcnow()
        record_activity(
            session,
            principal,
            "user.profile_updated",
            target_type="user",
            target_id=user.id,
            metadata={"fields": changed},
            source_ip=source_ip,
        )
        await session.flush()
    return user


async def create_api_key(
    session: AsyncSession,
    principal: Principal,
    *,
    name: str,
    source_ip: str | None,
    scopes: list[Scope] | None = None,
    agent_ids: list[str] | None = None,
) -> tuple[ApiKey, str]:
    """Returns the key and its secret; the secret is never stored and never shown again. `scopes`: FULL when
    omitted; `agent_ids` (already checked to be the organisation's active agents): the only agents it may
    write records for."""
    name = _check_name(name, "name")
    chosen = sorted({Scope(s).value for s in (scopes if scopes is not None else [Scope.FULL])})
    if not chosen:
        raise BadUserInput("scopes must name at least one scope", field="scopes")
    if agent_ids is not None:
        agent_ids = sorted(set(agent_ids))
        if not agent_ids or len(agent_ids) > MAX_KEY_AGENTS:
            raise BadUserInput(
                f"agentIds must name 1 to {MAX_KEY_AGENTS} agents (omit it for every agent)", field="agentIds"
            )
    # the plan's limit on active keys (QUOTA_EXCEEDED); counted under a per-organisation lock until the commit
    await billing_quota.require_capacity(
        session, principal.org_id, "api_keys", count=lambda: count_active_api_keys(session)
    )
    generated = generate_api_key()
    key = ApiKey(
        id=new_id("key"),
        org_id=principal.org_id,
        name=name,
        prefix=generated.prefix,
        secret_hash=generated.secret_hash,
        created_by=principal.user_id,
        scopes=chosen,
        agent_ids=agent_ids,
    )
    session.add(key)
    record_activity(
        session,
        principal,
        "api_key.created",
        target_type="api_key",
        target_id=key.id,
        metadata={"name": name, "prefix": key.prefix, "scopes": chosen, "agentIds": agent_ids},
        source_ip=source_ip,
    )
    await session.flush()
    return key, generated.secret


async def count_active_api_keys(session: AsyncSession) -> int:
    query = select(sa.func.count()).select_from(ApiKey).where(col(ApiKey.revoked_at).is_(None))
    return int((await session.exec(query)).one())


async def list_api_keys(session: AsyncSession, *, include_revoked: bool, page: PageRequest) -> list[ApiKey]:
    query = select(ApiKey)
    if not include_revoked:
        query = query.where(col(ApiKey.revoked_at).is_(None))
    query = page.apply(query, col(ApiKey.created_at), col(ApiKey.id))
    return list((await session.exec(query)).all())


async def revoke_api_key(session: AsyncSession, principal: Principal, key_id: str, *, source_ip: str | None) -> ApiKey:
    key = await session.get(ApiKey, key_id)
    # the session is tenant-scoped (app/db.py): another organisation's key is simply not found
    if key is None:
        raise NotFound("API key not found", id=key_id)
    auth.REVOKE_API_KEY.require_owner_or_role(principal, key.created_by)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        record_activity(
            session,
            principal,
            "api_key.revoked",
            target_type="api_key",
            target_id=key.id,
            metadata={"name": key.name, "prefix": key.prefix},
            source_ip=source_ip,
        )
        revoked = Revoked(api_key_ids=(key.id,))
        after_commit(session, lambda runtime: revocation.announce(runtime.broadcaster, revoked))
        await session.flush()
    return key


# --- the password's life -------------------------------------------------------------------------------
async def change_password(
    session: AsyncSession, principal: Principal, *, current: str, new: str, source_ip: str | None
) -> list[str]:
    """Changes the caller's password (the current one checked) and ends every other session; their ids."""
    user = await get_user(session, principal.user_id or "")
    if not verify_password(current, user.password_hash):
        raise BadUserInput("the current password is incorrect", field="currentPassword")
    _check_password(new)
    user.password_hash = hash_password(new)
    user.updated_at = utcnow()
    ended = await sessions.end_all(session, user.id, reason="password changed", except_id=principal.session_id)
    record_activity(
        session,
        principal,
        "user.password_changed",
        target_type="user",
        target_id=user.id,
        metadata={"sessionsEnded": len(ended)},
        source_ip=source_ip,
    )
    await session.flush()
    return ended


async def limit_per_address(redis: Redis, action: str, address: str, *, limit: int, window_seconds: int) -> None:
    """At most `limit` calls of `action` per client address per window (requests that email someone: an inbox
    is not a free megaphone); RATE_LIMITED beyond, whatever the email given."""
    key = f"agentrail:{action}:{address}"
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(key, 0, ex=window_seconds, nx=True)
        pipe.incr(key)
        pipe.ttl(key)
        _, count, ttl = await pipe.execute()
    if int(count) > limit:
        raise RateLimited("too many requests of this kind from your address; try again later", retry_after=max(ttl, 1))


async def request_password_reset(session: AsyncSession, email: str, settings: Settings) -> None:
    """Emails a single-use reset link when the address is an account's; does the same work either way (the
    answer says nothing about which addresses have accounts). A system session."""
    try:
        normalised = normalise_email(email)
    except BadUserInput:
        return
    user = (await session.exec(select(User).where(User.email == normalised))).first()
    token, token_hash = new_secret_token()
    if user is None:
        return
    recent = (
        select(sa.func.count())
        .select_from(UserToken)
        .where(
            UserToken.user_id == user.id,
            UserToken.purpose == RESET,
            UserToken.created_at > utcnow() - timedelta(hours=1),
        )
    )
    if int((await session.exec(recent)).one()) >= MAX_RESETS_PER_HOUR:
        return  # an inbox is not flooded: the links already sent still work
    expires = utcnow() + timedelta(minutes=settings.password_reset_minutes)
    session.add(UserToken(id=new_id("utk"), user_id=user.id, purpose=RESET, token_hash=token_hash, expires_at=expires))
    mail.enqueue(
        session,
        to=user.email,
        template="password_reset",
        values={"email": user.email, "link": link(settings, "reset-password", token), "expires": iso(expires)},
        user_id=user.id,
        settings=settings,
    )
    await session.flush()


async def use_token(session: AsyncSession, token: str, purpose: str) -> User:
    """The user of a valid, unused, unexpired emailed token, which is used up now. BAD_USER_INPUT otherwise
    (one message for every reason)."""
    row = (
        await session.exec(
            select(UserToken)
            .where(UserToken.token_hash == hash_secret(token.strip()), UserToken.purpose == purpose)
            .with_for_update()
        )
    ).first()
    if row is None or row.used_at is not None or row.expires_at <= utcnow():
        raise BadUserInput("this link is invalid, already used or expired; ask for a new one", field="token")
    row.used_at = utcnow()
    user = await get_user(session, row.user_id)
    await session.flush()
    return user


async def reset_password(session: AsyncSession, *, token: str, password: str, source_ip: str | None) -> User:
    """Sets a new password with an emailed token and ends every session of the user. A system session."""
    _check_password(password)
    user = await use_token(session, token, RESET)
    user.password_hash = hash_password(password)
    user.updated_at = utcnow()
    if user.email_verified_at is None:
        user.email_verified_at = utcnow()  # the link reached the address
    await sessions.end_all(session, user.id, reason="password reset")
    await session.flush()
    return user


async def verify_email(session: AsyncSession, token: str) -> User:
    user = await use_token(session, token, VERIFY)
    if user.email_verified_at is None:
        user.email_verified_at = utcnow()
    await session.flush()
    return user
