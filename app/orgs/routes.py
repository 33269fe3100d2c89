"""REST `/api/v1/auth/*` as the API reference documents it (seed 002): register, login, me, API keys, plus the
session endpoints (refresh, logout). Thin adapters over the same service functions and declarations as GraphQL.
REST sessions are body mode: the refresh token is in the answer (browsers use GraphQL's cookie mode)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator
from sqlmodel import select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.agents import service as agents
from app.db import AsyncSession, iso
from app.errors import AppError, NotFound
from app.orgs import models, service, sessions
from app.pagination import PageRequest
from app.principal import Principal, Scope
from app.rest.openapi import Answer, Body, body_of, documented, one_of
from app.rest.params import accepts, boolean, query_of
from app.rest.responses import JSONResponse, answers, principal_of
from app.unit_of_work import system_unit_of_work, unit_of_work
from app.usage import quota


class RegisterIn(Body):
    email: str = Field(max_length=320)
    password: str = Field(max_length=1000)
    name: str = Field(max_length=200)
    organization_name: str = Field(max_length=200)


class LoginIn(Body):
    email: str = Field(max_length=320)
    password: str = Field(max_length=1000)


class RefreshIn(Body):
    refresh_token: str = Field(max_length=1000)


class ProfilePatch(Body):
    name: str | None = Field(default=None, max_length=200)
    notification_preferences: dict[str, Any] | None = None


class ApiKeyIn(Body):
    name: str = Field(max_length=200)
    scopes: list[str] | None = Field(default=None, description="INGEST, READ, FULL (any case); default FULL")
    agent_ids: list[str] | None = Field(default=None, description="Limit the key to writing for these agents")

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: Any) -> Any:
        return [one_of(tuple(s.value for s in Scope), v) for v in value] if isinstance(value, list) else value


class UserOut(Answer):
    id: str
    email: str
    name: str
    role: str
    email_verified: bool
    notification_preferences: dict[str, Any]
    created_at: str


class OrganizationOut(Answer):
    id: str
    name: str
    email: str | None = None
    plan: str


class SignedIn(Answer):
    access_token: str
    expires_at: str
    refresh_token: str
    refresh_token_expires_at: str
    user: UserOut
    organization: OrganizationOut


class ApiKeyOut(Answer):
    id: str
    name: str
    prefix: str
    scopes: list[str]
    agent_ids: list[str] | None
    created_at: str
    last_used_at: str | None
    revoked_at: str | None


class CreatedApiKey(ApiKeyOut):
    key: str = Field(description="The secret, shown once")


class ApiKeyList(Answer):
    api_keys: list[ApiKeyOut]


class MeOut(Answer):
    kind: str = Field(description="user or api_key")
    user: UserOut | None = None
    api_key: ApiKeyOut | None = None
    organization: OrganizationOut


def _ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _user_json(user: models.User, role: str) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "role": role,
        "emailVerified": user.email_verified_at is not None,
        "notificationPreferences": user.notification_preferences,
        "createdAt": iso(user.created_at),
    }


async def _org_json(session: AsyncSession, org: models.Organization, email: str) -> dict[str, Any]:
    return {"id": org.id, "name": org.name, "email": email, "plan": await quota.current_plan(session, org.id)}


def _key_json(key: models.ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "scopes": key.scopes,
        "agentIds": key.agent_ids,
        "createdAt": iso(key.created_at),
        "lastUsedAt": iso(key.last_used_at),
        "revokedAt": iso(key.revoked_at),
    }


async def _signed_in(
    session: AsyncSession, issued: sessions.Issued, user: models.User, org: models.Organization, role: str
) -> dict[str, Any]:
    return {
        "accessToken": issued.access.token,
        "expiresAt": iso(issued.access.expires_at),
        "refreshToken": issued.refresh_token,
        "refreshTokenExpiresAt": iso(issued.session.expires_at),
        "user": _user_json(user, role),
        "organization": await _org_json(session, org, user.email),
    }


@documented(
    "Create an organisation and its owner, signed in",
    body=RegisterIn,
    responses={201: SignedIn},
    graphql="Mutation.register",
    tag="auth",
)
@answers
async def register(request: Request) -> Response:
    """Creates an organisation and its owner, signed in."""
    body = await body_of(request, RegisterIn)
    runtime, signer = request.app.state.runtime, request.app.state.signer
    async with system_unit_of_work(runtime) as session:
        user, org = await service.register(
            session,
            email=body.email,
            password=body.password,
            name=body.name,
            organization_name=body.organization_name,
            source_ip=_ip(request),
            settings=runtime.settings,
        )
        issued = await sessions.start(
            session,
            signer,
            runtime.settings,
            user=user,
            org_id=org.id,
            user_agent=request.headers.get("user-agent"),
            ip_address=_ip(request),
        )
        answer = await _signed_in(session, issued, user, org, models.Role.OWNER)
    return JSONResponse(answer, status_code=201)


@documented(
    "Obtain a JWT: {accessToken, organization: {id, email, plan, name}}",
    body=LoginIn,
    responses={200: SignedIn},
    graphql="Mutation.login",
    tag="auth",
)
@answers
async def login(request: Request) -> Response:
    """Email and password: an access token (15 minutes) and a refresh token, in the organisation used last."""
    body = await body_of(request, LoginIn)
    runtime, signer = request.app.state.runtime, request.app.state.signer
    settings = runtime.settings
    throttle = service.LoginThrottle(
        runtime.redis,
        max_failures=settings.login_max_failures,
        max_account_failures=settings.login_max_failures_per_account,
        window_seconds=settings.login_failure_window_seconds,
    )
    async with system_unit_of_work(runtime) as session:
        result = await service.login(
            session, email=body.email, password=body.password, throttle=throttle, source_ip=_ip(request)
        )
        issued = await sessions.start(
            session,
            signer,
            settings,
            user=result.user,
            org_id=result.organization.id,
            user_agent=request.headers.get("user-agent"),
            ip_address=_ip(request),
        )
        answer = await _signed_in(session, issued, result.user, result.organization, result.role)
    return JSONResponse(answer)


@documented(
    "New tokens for a refresh token (it rotates)",
    body=RefreshIn,
    responses={200: SignedIn},
    graphql="Mutation.refreshSession",
    tag="auth",
)
@answers
async def refresh(request: Request) -> Response:
    """A refresh token for new tokens (it rotates; reusing one ends the session)."""
    body = await body_of(request, RefreshIn)
    runtime, signer = request.app.state.runtime, request.app.state.signer
    error: AppError | None = None
    async with system_unit_of_work(runtime) as session:
        try:
            issued, user = await sessions.refresh(session, signer, body.refresh_token, ip_address=_ip(request))
        except sessions.RefreshReused as reused:
            error = reused  # answered once the session's end is committed
        else:
            membership = (
                await session.exec(
                    select(models.Membership).where(
                        models.Membership.user_id == user.id, models.Membership.org_id == issued.session.org_id
                    )
                )
            ).one()
            org = await service.get_organization(session, issued.session.org_id)
            answer = await _signed_in(session, issued, user, org, membership.role)
    if error is not None:
        raise error
    return JSONResponse(answer)


@documented("End the caller's session", responses={204: None}, graphql="Mutation.logout", tag="auth")
@answers
async def logout(request: Request) -> Response:
    """Ends the caller's session."""
    principal = principal_of(request)
    async with system_unit_of_work(request.app.state.runtime) as session:
        row = await sessions.get_own(session, principal.user_id or "", principal.session_id or "")
        if row is not None:
            await sessions.end(session, row, reason="signed out")
    return Response(status_code=204)


async def _me(session: AsyncSession, principal: Principal) -> dict[str, Any]:
    org = await service.get_organization(session, principal.org_id)
    if principal.is_user:
        user = await service.get_user(session, principal.user_id or "")
        return {
            "kind": "user",
            "user": _user_json(user, principal.role or ""),
            "organization": await _org_json(session, org, user.email),
        }
    key = await session.get(models.ApiKey, principal.api_key_id)
    return {
        "kind": "api_key",
        "apiKey": _key_json(key) if key else None,
        "organization": {"id": org.id, "name": org.name, "plan": await quota.current_plan(session, org.id)},
    }


@documented("The caller and its organisation", responses={200: MeOut}, graphql="Query.me", tag="auth")
@answers
async def me(request: Request) -> Response:
    """The caller and its organisation."""
    principal = principal_of(request)
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        return JSONResponse(await _me(session, principal))


@documented(
    "Update profile & notification prefs",
    body=ProfilePatch,
    responses={200: MeOut},
    graphql="Mutation.updateProfile",
    tag="auth",
)
@answers
async def update_me(request: Request) -> Response:
    """The caller's name or notification preferences."""
    principal = principal_of(request)
    body = await body_of(request, ProfilePatch)
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        await service.update_profile(
            session,
            principal,
            name=body.name,
            notification_preferences=body.notification_preferences,
            source_ip=_ip(request),
        )
        return JSONResponse(await _me(session, principal))


@documented("The organisation's API keys", responses={200: ApiKeyList}, graphql="Query.apiKeys", tag="auth")
@accepts(boolean("includeRevoked"))  # checked by the route guard (app/rest/params.py)
@answers
async def list_api_keys(request: Request) -> Response:
    """The organisation's keys, newest first (at most 500; GraphQL `apiKeys` pages further)."""
    principal = principal_of(request)
    include_revoked = query_of(request)["includeRevoked"] is not False
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        rows = await service.list_api_keys(session, include_revoked=include_revoked, page=PageRequest(500))
        return JSONResponse({"apiKeys": [_key_json(k) for k in rows]})


@documented(
    "Create an API key: {key, id, name} (the key shown once)",
    body=ApiKeyIn,
    responses={201: CreatedApiKey},
    graphql="Mutation.createApiKey",
    tag="auth",
)
@answers
async def create_api_key(request: Request) -> Response:
    """A new key; its secret (`key`) is shown once."""
    principal = principal_of(request)
    runtime = request.app.state.runtime
    body = await body_of(request, ApiKeyIn)
    parsed = [Scope(s) for s in body.scopes] if body.scopes is not None else None
    agent_ids = body.agent_ids
    async with unit_of_work(runtime, principal.org_id) as session:
        if agent_ids is not None:
            await agents.require_active_agent_ids(session, set(agent_ids))
        key, secret = await service.create_api_key(
            session, principal, name=body.name, source_ip=_ip(request), scopes=parsed, agent_ids=agent_ids
        )
        answer = {"key": secret, **_key_json(key)}
    return JSONResponse(answer, status_code=201)


@documented("Revoke an API key", responses={200: ApiKeyOut}, graphql="Mutation.revokeApiKey", tag="auth")
@answers
async def revoke_api_key(request: Request) -> Response:
    """Revokes a key (idempotent)."""
    principal = principal_of(request)
    key_id = request.path_params["key_id"]
    if len(key_id) > 40:
        raise NotFound("API key not found", id=key_id[:40])
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        key = await service.revoke_api_key(session, principal, key_id, source_ip=_ip(request))
        return JSONResponse(_key_json(key))


routes = [
    Route("/api/v1/auth/register", register, methods=["POST"]),
    Route("/api/v1/auth/login", login, methods=["POST"]),
    Route("/api/v1/auth/refresh", refresh, methods=["POST"]),
    Route("/api/v1/auth/logout", logout, methods=["POST"]),
    Route("/api/v1/auth/me", me, methods=["GET"]),
    Route("/api/v1/auth/me", update_me, methods=["PATCH"]),
    Route("/api/v1/auth/api-keys", list_api_keys, methods=["GET"]),
    Route("/api/v1/auth/api-keys", create_api_key, methods=["POST"]),
    Route("/api/v1/auth/api-keys/{key_id}", revoke_api_key, methods=["DELETE"]),
]
