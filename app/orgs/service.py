"""Operations of the orgs domain: registration, sign-in, profiles and API keys."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email
from redis.asyncio import Redis
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from app.activity.service import record_activity
from app.db import AsyncSession, new_id, utcnow
from app.errors import BadUserInput, Conflict, NotFound, RateLimited, Unauthenticated
from app.masking import mask_json
from app.orgs import auth, revocation
from app.orgs.credentials import (
    AccessToken,
    TokenSigner,
    generate_api_key,
    hash_api_key,
    hash_password,
    looks_like_api_key,
    verify_password,
)
from app.orgs.models import ApiKey, Organization, Role, User
from app.orgs.revocation import Revoked
from app.principal import Principal, Scope
from app.unit_of_work import after_commit
from app.usage import quota as billing_quota

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024
LAST_USED_RESOLUTION_SECONDS = 60  # lastUsedAt is refreshed at most once a minute per key
BAD_CREDENTIALS = "email or password is incorrect"
_SCOPES = {s.value for s in Scope}
MAX_KEY_AGENTS = 100


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
) -> tuple[User, Organization]:
    """Creates an organisation and its owner. `session` is a system session."""
    email = normalise_email(email)
    name = _check_name(name, "name")
    organization_name = _check_name(organization_name, "organizationName")
    _check_password(password)
    org = Organization(id=new_id("org"), name=organization_name)
    user = User(
        id=new_id("usr"),
        org_id=org.id,
        email=email,
        name=name,
        password_hash=hash_password(password),
        role=Role.OWNER,
    )
    session.add(org)
    await session.flush()
    session.add(user)
    owner = Principal(
        kind="user", org_id=org.id, user_id=user.id, role=user.role, actor_name=user.name, actor_email=user.email
    )
    record_activity(
        session,
        owner,
        "organization.created",
        target_type="organization",
        target_id=org.id,
        source_ip=source_ip,
    )
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict("an account with this email already exists", field="email") from None
    return user, org


@dataclass(frozen=True)
class LoginResult:
    token: AccessToken
    user: User
    organization: Organization


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
    signer: TokenSigner,
    throttle: LoginThrottle,
    source_ip: str,
) -> LoginResult:
    """Signs a user in. Unknown email and wrong password fail the same way, in the same time."""
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
    org = await session.get(Organization, user.org_id)
    assert org is not None
    return LoginResult(token=signer.issue(user_id=user.id, org_id=user.org_id), user=user, organization=org)


async def principal_from_token(session: AsyncSession, signer: TokenSigner, token: str) -> Principal:
    claims = signer.verify(token)
    user = (await session.exec(select(User).where(User.id == claims.user_id, User.org_id == claims.org_id))).first()
    if user is None:
        raise Unauthenticated("access token is invalid")
    return Principal(
        kind="user",
        org_id=user.org_id,
        user_id=user.id,
        role=user.role,
        actor_name=user.name,
        actor_email=user.email,
        expires_at=claims.expires_at,
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
            raise BadUserInput(f"agentIds must name 1 to {MAX_KEY_AGENTS} agents (omit it for every agent)",
                               field="agentIds")  # fmt: skip
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


async def list_api_keys(
    session: AsyncSession, *, include_revoked: bool, limit: int, after: tuple[Any, str] | None
) -> list[ApiKey]:
    query = select(ApiKey)
    if not include_revoked:
        query = query.where(col(ApiKey.revoked_at).is_(None))
    if after is not None:
        created_at, key_id = after
        query = query.where(sa.tuple_(ApiKey.created_at, ApiKey.id) < sa.tuple_(created_at, key_id))
    query = query.order_by(col(ApiKey.created_at).desc(), col(ApiKey.id).desc()).limit(limit)
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
