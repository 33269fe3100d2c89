"""REST `/api/v1/auth/*` as the API reference documents it (seed 002): register, login, me, API keys, plus the
session endpoints (refresh, logout). Thin adapters over the same service functions and declarations as GraphQL.
REST sessions are body mode: the refresh token is in the answer (browsers use GraphQL's cookie mode)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlmodel import select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.agents import service as agents
from app.db import AsyncSession, InvalidJSON, iso, request_json
from app.errors import AppError, BadUserInput, NotFound
from app.orgs import models, service, sessions
from app.pagination import PageRequest
from app.principal import Principal, Scope
from app.rest.openapi import documented
from app.rest.params import accepts, boolean, query_of
from app.rest.responses import JSONResponse, error_response, principal_of
from app.unit_of_work import system_unit_of_work, unit_of_work
from app.usage import quota


async def _body(
    request: Request, allowed: set[str], required: frozenset[str] | set[str] = frozenset()
) -> dict[str, Any]:
    try:
        body = request_json(await request.body() or b"{}")
    except InvalidJSON as exc:
        raise BadUserInput(exc.message) from None
    if not isinstance(body, dict):
        raise BadUserInput("send a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadUserInput(f"unknown field(s): {', '.join(unknown)}", fields=unknown)
    missing = sorted(k for k in required if not isinstance(body.get(k), str))
    if missing:
        raise BadUserInput(f"{', '.join(missing)} must be given as strings", fields=missing)
    return body


def _no_query(request: Request) -> None:
    if request.query_params:
        raise BadUserInput(f"unknown parameter(s): {', '.join(sorted(request.query_params))}")


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


def _answers(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except AppError as exc:
            return error_response(exc)

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


@documented("Create an organisation and its owner, signed in", responses={201: None}, graphql="Mutation.register")
@_answers
async def register(request: Request) -> Response:
    """Creates an organisation and its owner, signed in."""
    _no_query(request)
    body = await _body(
        request, {"email", "password", "name", "organizationName"}, {"email", "password", "name", "organizationName"}
    )
    runtime, signer = request.app.state.runtime, request.app.state.signer
    async with system_unit_of_work(runtime) as session:
        user, org = await service.register(
            session,
            email=body["email"],
            password=body["password"],
            name=body["name"],
            organization_name=body["organizationName"],
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


@documented("Obtain a JWT: {accessToken, organization: {id, email, plan, name}}", graphql="Mutation.login")
@_answers
async def login(request: Request) -> Response:
    """Email and password: an access token (15 minutes) and a refresh token, in the organisation used last."""
    _no_query(request)
    body = await _body(request, {"email", "password"}, {"email", "password"})
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
            session, email=body["email"], password=body["password"], throttle=throttle, source_ip=_ip(request)
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


@documented("New tokens for a refresh token (it rotates)", graphql="Mutation.refreshSession")
@_answers
async def refresh(request: Request) -> Response:
    """A refresh token for new tokens (it rotates; reusing one ends the session)."""
    _no_query(request)
    body = await _body(request, {"refreshToken"}, {"refreshToken"})
    runtime, signer = request.app.state.runtime, request.app.state.signer
    error: AppError | None = None
    async with system_unit_of_work(runtime) as session:
        try:
            issued, user = await sessions.refresh(session, signer, body["refreshToken"], ip_address=_ip(request))
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


@documented("End the caller's session", responses={204: None}, graphql="Mutation.logout")
@_answers
async def logout(request: Request) -> Response:
    """Ends the caller's session."""
    _no_query(request)
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


@documented("The caller and its organisation", graphql="Query.me")
@_answers
async def me(request: Request) -> Response:
    """The caller and its organisation."""
    _no_query(request)
    principal = principal_of(request)
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        return JSONResponse(await _me(session, principal))


@documented("Update profile & notification prefs", graphql="Mutation.updateProfile")
@_answers
async def update_me(request: Request) -> Response:
    """The caller's name or notification preferences."""
    _no_query(request)
    principal = principal_of(request)
    body = await _body(request, {"name", "notificationPreferences"})
    prefs = body.get("notificationPreferences")
    if prefs is not None and not isinstance(prefs, dict):
        raise BadUserInput("notificationPreferences must be an object", field="notificationPreferences")
    if "name" in body and not isinstance(body["name"], str):
        raise BadUserInput("name must be a string", field="name")
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        await service.update_profile(
            session, principal, name=body.get("name"), notification_preferences=prefs, source_ip=_ip(request)
        )
        return JSONResponse(await _me(session, principal))


@documented("The organisation's API keys", graphql="Query.apiKeys")
@accepts(boolean("includeRevoked"))  # checked by the route guard (app/rest/params.py)
@_answers
async def list_api_keys(request: Request) -> Response:
    """The organisation's keys, newest first (at most 500; GraphQL `apiKeys` pages further)."""
    principal = principal_of(request)
    include_revoked = query_of(request)["includeRevoked"] is not False
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        rows = await service.list_api_keys(session, include_revoked=include_revoked, page=PageRequest(500))
        return JSONResponse({"apiKeys": [_key_json(k) for k in rows]})


@documented(
    "Create an API key: {key, id, name} (the key shown once)", responses={201: None}, graphql="Mutation.createApiKey"
)
@_answers
async def create_api_key(request: Request) -> Response:
    """A new key; its secret (`key`) is shown once."""
    principal = principal_of(request)
    runtime = request.app.state.runtime
    _no_query(request)
    body = await _body(request, {"name", "scopes", "agentIds"}, {"name"})
    scopes, agent_ids = body.get("scopes"), body.get("agentIds")
    if scopes is not None and (not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes)):
        raise BadUserInput("scopes must be a list of INGEST, READ, FULL", field="scopes")
    try:
        parsed = [Scope(s.lower()) for s in scopes] if scopes is not None else None
    except ValueError:
        raise BadUserInput("scopes must be a list of INGEST, READ, FULL", field="scopes") from None
    if agent_ids is not None and (not isinstance(agent_ids, list) or not all(isinstance(a, str) for a in agent_ids)):
        raise BadUserInput("agentIds must be a list of agent ids", field="agentIds")
    async with unit_of_work(runtime, principal.org_id) as session:
        if agent_ids is not None:
            await agents.require_active_agent_ids(session, set(agent_ids))
        key, secret = await service.create_api_key(
            session, principal, name=body["name"], source_ip=_ip(request), scopes=parsed, agent_ids=agent_ids
        )
        answer = {"key": secret, **_key_json(key)}
    return JSONResponse(answer, status_code=201)


@documented("Revoke an API key", graphql="Mutation.revokeApiKey")
@_answers
async def revoke_api_key(request: Request) -> Response:
    """Revokes a key (idempotent)."""
    _no_query(request)
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
