"""GraphQL types and operations of the orgs domain. Thin: parse, authorise, call the service, map."""

from __future__ import annotations

import secrets
from datetime import datetime
from enum import Enum
from typing import Annotated, Any, cast

import strawberry

from app.activity.service import record_activity
from app.agents import service as agents
from app.db import utcnow
from app.errors import BadUserInput, Forbidden, NotFound, Unauthenticated
from app.info import Info, RequestInfo
from app.orgs import members, models, service, sessions
from app.pagination import (
    After,
    Before,
    Connection,
    First,
    Last,
    build_connection,
    page_request,
)
from app.principal import Scope
from app.scalars import JSON


@strawberry.enum(description="A member's role in the organisation, highest first.")
class Role(Enum):
    OWNER = strawberry.enum_value("owner", description="Everything, including billing and ownership.")
    ADMIN = strawberry.enum_value("admin", description="Everything but transferring ownership.")
    MEMBER = strawberry.enum_value("member", description="Reads, ingest and everyday changes.")
    VIEWER = strawberry.enum_value("viewer", description="Read-only: reads and exports, no changes, no ingest.")


@strawberry.enum(description="What an API key may do.")
class ApiKeyScope(Enum):
    INGEST = strawberry.enum_value("ingest", description="Write audit records and spans (GraphQL, REST, OTLP).")
    READ = strawberry.enum_value("read", description="Read the organisation's data.")
    FULL = strawberry.enum_value("full", description="Everything an API key may do (ingest and read).")


@strawberry.enum(description="What kind of credential made the request.")
class ViewerKind(Enum):
    USER = strawberry.enum_value("user", description="A person signed in with an access token.")
    API_KEY = strawberry.enum_value("api_key", description="An agent or script with an API key.")


@strawberry.type(description="An organisation: the unit of tenancy and billing.")
class Organization:
    id: strawberry.ID = strawberry.field(description="Organisation id (`org_…`).")
    name: str = strawberry.field(description="Display name.")
    created_at: datetime = strawberry.field(description="When it was created.")

    @classmethod
    def from_model(cls, org: models.Organization) -> Organization:
        return cls(id=strawberry.ID(org.id), name=org.name, created_at=org.created_at)


@strawberry.type(description="A person who signs in to the dashboard.")
class User:
    id: strawberry.ID = strawberry.field(description="User id (`usr_…`).")
    email: str = strawberry.field(description="Normalised email address, used to sign in.")
    name: str = strawberry.field(description="Display name.")
    role: Role = strawberry.field(description="Role in the organisation the caller is signed in to.")
    notification_preferences: JSON = strawberry.field(description="Notification settings (see the README).")
    created_at: datetime = strawberry.field(description="When the account was created.")
    email_verified: bool = strawberry.field(description="Whether the email address has been confirmed.")

    @classmethod
    def from_model(cls, user: models.User, role: str) -> User:
        return cls(
            id=strawberry.ID(user.id),
            email=user.email,
            name=user.name,
            role=Role(role),
            notification_preferences=user.notification_preferences,
            created_at=user.created_at,
            email_verified=user.email_verified_at is not None,
        )


@strawberry.type(description="An API key. The secret itself is shown only once, when it is created.")
class ApiKey:
    id: strawberry.ID = strawberry.field(description="Key id (`key_…`).")
    name: str = strawberry.field(description="What the key is for.")
    prefix: str = strawberry.field(description="The first characters of the secret, to recognise it.")
    created_at: datetime = strawberry.field(description="When it was created.")
    last_used_at: datetime | None = strawberry.field(description="Last successful use (minute resolution).")
    revoked_at: datetime | None = strawberry.field(description="When it was revoked; null while active.")
    scopes: list[ApiKeyScope] = strawberry.field(description="What the key may do.")
    agent_ids: list[strawberry.ID] | None = strawberry.field(
        description="The only agents the key may write records for; null: every agent."
    )

    @classmethod
    def from_model(cls, key: models.ApiKey) -> ApiKey:
        return cls(
            id=strawberry.ID(key.id),
            name=key.name,
            prefix=key.prefix,
            created_at=key.created_at,
            last_used_at=key.last_used_at,
            revoked_at=key.revoked_at,
            scopes=[ApiKeyScope(s) for s in key.scopes],
            agent_ids=[strawberry.ID(a) for a in key.agent_ids] if key.agent_ids is not None else None,
        )


@strawberry.type(description="A newly created API key with its secret.")
class CreatedApiKey:
    api_key: ApiKey = strawberry.field(description="The key's record.")
    secret: str = strawberry.field(description="The secret (`aa_live_…`). Store it now: it is never shown again.")


@strawberry.enum(description="Where a sign-in hands its refresh token.")
class TokenDelivery(Enum):
    BODY = strawberry.enum_value("body", description="In the answer (`refreshToken`): for scripts and apps.")
    COOKIE = strawberry.enum_value(
        "cookie",
        description="In an httpOnly, SameSite cookie (browsers); `csrfToken` must come back as `X-CSRF-Token`.",
    )


@strawberry.type(description="A signed-in session: a short access token and the refresh token that renews it.")
class AuthPayload:
    access_token: str = strawberry.field(description="Send as `Authorization: Bearer <accessToken>`.")
    expires_at: datetime = strawberry.field(description="When the access token stops working (15 minutes).")
    refresh_token: str | None = strawberry.field(
        description="Trade it for new tokens with `refreshSession` (once: it rotates). Null in cookie mode."
    )
    refresh_token_expires_at: datetime = strawberry.field(description="When the session ends unless renewed.")
    csrf_token: str | None = strawberry.field(
        description="Cookie mode: send it as `X-CSRF-Token` with `refreshSession` and `logout`."
    )
    session_id: strawberry.ID = strawberry.field(description="The sign-in session (`ses_…`).")
    user: User = strawberry.field(description="The signed-in user.")
    organization: Organization = strawberry.field(description="The organisation signed in to.")


@strawberry.type(description="Who is calling: a user or an API key, and its organisation.")
class Viewer:
    kind: ViewerKind = strawberry.field(description="USER or API_KEY.")
    user: User | None = strawberry.field(description="The user, when a user token was sent.")
    api_key: ApiKey | None = strawberry.field(description="The key, when an API key was sent.")
    organization: Organization = strawberry.field(description="The caller's organisation.")


@strawberry.type(description="A person in the organisation.")
class Member:
    user: User = strawberry.field(description="The person.")
    role: Role = strawberry.field(description="Their role here.")
    joined_at: datetime = strawberry.field(description="When they joined.")
    last_active_at: datetime | None = strawberry.field(description="Their last request here (minute resolution).")


@strawberry.enum(description="Where an invitation stands.")
class InvitationStatus(Enum):
    PENDING = strawberry.enum_value("pending", description="Sent, not yet accepted.")
    ACCEPTED = strawberry.enum_value("accepted", description="Accepted: the person is a member.")
    REVOKED = strawberry.enum_value("revoked", description="Revoked by an owner or admin.")
    EXPIRED = strawberry.enum_value("expired", description="Not accepted within its 7 days.")


@strawberry.type(description="An invitation to join the organisation (its token is only in the email).")
class Invitation:
    id: strawberry.ID = strawberry.field(description="Invitation id (`inv_…`).")
    email: str = strawberry.field(description="The invited address.")
    role: Role = strawberry.field(description="The role it grants.")
    status: InvitationStatus = strawberry.field(description="Where it stands.")
    invited_by: strawberry.ID | None = strawberry.field(description="Who sent it.")
    created_at: datetime = strawberry.field(description="When it was first sent.")
    expires_at: datetime = strawberry.field(description="When its current link stops working.")

    @classmethod
    def from_model(cls, row: models.Invitation) -> Invitation:
        if row.accepted_at is not None:
            status = InvitationStatus.ACCEPTED
        elif row.revoked_at is not None:
            status = InvitationStatus.REVOKED
        elif row.expires_at <= utcnow():
            status = InvitationStatus.EXPIRED
        else:
            status = InvitationStatus.PENDING
        return cls(
            id=strawberry.ID(row.id),
            email=row.email,
            role=Role(row.role),
            status=status,
            invited_by=strawberry.ID(row.invited_by) if row.invited_by else None,
            created_at=row.created_at,
            expires_at=row.expires_at,
        )


@strawberry.type(description="An organisation the signed-in user belongs to.")
class OrganizationMembership:
    organization: Organization = strawberry.field(description="The organisation.")
    role: Role = strawberry.field(description="The user's role there.")
    joined_at: datetime = strawberry.field(description="When the user joined it.")
    current: bool = strawberry.field(description="Whether the caller is signed in to it now.")


@strawberry.type(description="A signed-in browser or script.")
class SignInSession:
    id: strawberry.ID = strawberry.field(description="Session id (`ses_…`).")
    device: str | None = strawberry.field(description="The User-Agent it signed in with.")
    ip_address: str | None = strawberry.field(description="The address of its last sign-in or refresh.")
    organization_id: strawberry.ID = strawberry.field(description="The organisation it is signed in to.")
    method: str = strawberry.field(description="How it signed in: password, invitation, sso or reset.")
    created_at: datetime = strawberry.field(description="When it signed in.")
    last_used_at: datetime = strawberry.field(description="Its last request or refresh (minute resolution).")
    expires_at: datetime = strawberry.field(description="When it ends unless renewed.")
    current: bool = strawberry.field(description="Whether it is the caller's own session.")

    @classmethod
    def from_model(cls, row: models.SignInSession, current_id: str | None) -> SignInSession:
        return cls(
            id=strawberry.ID(row.id),
            device=row.user_agent,
            ip_address=row.ip_address,
            organization_id=strawberry.ID(row.org_id),
            method=row.method,
            created_at=row.created_at,
            last_used_at=row.last_used_at,
            expires_at=row.expires_at,
            current=row.id == current_id,
        )


ApiKeyConnection = Connection[ApiKey]
MemberConnection = Connection[Member]
InvitationConnection = Connection[Invitation]

REFRESH_COOKIE = "agentrail_refresh"
CSRF_COOKIE = "agentrail_csrf"
CSRF_HEADER = "x-csrf-token"


def _member(membership: models.Membership, user: models.User) -> Member:
    return Member(
        user=User.from_model(user, membership.role),
        role=Role(membership.role),
        joined_at=membership.joined_at,
        last_active_at=membership.last_active_at,
    )


def _cookie_attributes(info: RequestInfo) -> dict[str, Any]:
    settings = info.context.runtime.settings
    secure = settings.auth_cookie_secure if settings.auth_cookie_secure is not None else settings.is_production
    return {"secure": secure, "samesite": settings.auth_cookie_samesite, "path": "/"}


async def _signed_in(
    info: RequestInfo,
    issued: sessions.Issued,
    user: models.User,
    org: models.Organization,
    role: str,
    delivery: TokenDelivery,
) -> AuthPayload:
    """The payload; in cookie mode the refresh token goes into an httpOnly cookie, with a CSRF token beside it."""
    refresh: str | None = issued.refresh_token
    csrf: str | None = None
    if delivery is TokenDelivery.COOKIE:
        response = info.context.response
        if response is None:
            raise BadUserInput("cookie mode needs an HTTP request", field="refreshTokenIn")
        csrf = secrets.token_urlsafe(24)
        attributes = _cookie_attributes(info)
        max_age = int((issued.session.expires_at - utcnow()).total_seconds())
        response.set_cookie(REFRESH_COOKIE, issued.refresh_token, max_age=max_age, httponly=True, **attributes)
        response.set_cookie(CSRF_COOKIE, csrf, max_age=max_age, httponly=False, **attributes)
        refresh = None
    return AuthPayload(
        access_token=issued.access.token,
        expires_at=issued.access.expires_at,
        refresh_token=refresh,
        refresh_token_expires_at=issued.session.expires_at,
        csrf_token=csrf,
        session_id=strawberry.ID(issued.session.id),
        user=User.from_model(user, role),
        organization=Organization.from_model(org),
    )


def _cookie_refresh_token(info: RequestInfo) -> str:
    """The refresh cookie, once the CSRF token came back in its header (double submit): a page on another site
    can make the browser send the cookie, never read it or set the header."""
    request = info.context.connection
    token = request.cookies.get(REFRESH_COOKIE)
    if not token:
        raise Unauthenticated("no refresh token: send `refreshToken`, or the session cookie")
    expected = request.cookies.get(CSRF_COOKIE) or ""
    sent = request.headers.get(CSRF_HEADER) or ""
    if not expected or not secrets.compare_digest(expected, sent):
        raise Forbidden("cookie mode needs the CSRF token in the X-CSRF-Token header")
    return token


def _clear_cookies(info: RequestInfo) -> None:
    response = info.context.response
    if response is not None and REFRESH_COOKIE in info.context.connection.cookies:
        attributes = _cookie_attributes(info)
        response.delete_cookie(REFRESH_COOKIE, httponly=True, **attributes)
        response.delete_cookie(CSRF_COOKIE, **attributes)


def _user_agent(info: RequestInfo) -> str | None:
    return info.context.connection.headers.get("user-agent")


Delivery = Annotated[
    TokenDelivery, strawberry.argument(description="BODY (scripts) or COOKIE (browsers) for the refresh token.")
]
Token = Annotated[str, strawberry.argument(description="The token from the emailed link.")]
NewPassword = Annotated[str, strawberry.argument(description="At least 10 characters.")]
UserId = Annotated[strawberry.ID, strawberry.argument(description="The member's user id.")]


@strawberry.type
class OrgsQuery:
    @strawberry.field(description="The caller (user or API key) and its organisation.")
    async def me(self, info: Info) -> Viewer:
        principal = await info.context.principal()
        session = await info.context.db()
        org = await service.get_organization(session, principal.org_id)
        user = api_key = None
        if principal.is_user:
            user = User.from_model(await service.get_user(session, principal.user_id or ""), principal.role or "")
        else:
            key = await session.get(models.ApiKey, principal.api_key_id)
            api_key = ApiKey.from_model(key) if key else None
        return Viewer(
            kind=ViewerKind(principal.kind),
            user=user,
            api_key=api_key,
            organization=Organization.from_model(org),
        )

    @strawberry.field(description="The organisation's API keys, newest first.")
    async def api_keys(
        self,
        info: Info,
        first: First = None,
        after: After = None,
        last: Last = None,
        before: Before = None,
        include_revoked: Annotated[bool, strawberry.argument(description="Include revoked keys.")] = True,
    ) -> ApiKeyConnection:
        page = page_request(first, after, last, before, types=(datetime, str))
        rows = await service.list_api_keys(
            await info.context.db(),
            include_revoked=include_revoked,
            page=page,
        )
        return build_connection(rows, page=page, to_node=ApiKey.from_model, sort_key=lambda k: (k.created_at, k.id))

    @strawberry.field(description="The organisation's members, in the order they joined.")
    async def members(
        self, info: Info, first: First = None, after: After = None, last: Last = None, before: Before = None
    ) -> MemberConnection:
        page = page_request(first, after, last, before, types=(datetime, str))
        rows = await members.list_members(
            await info.context.db(),
            page=page,
        )
        connection = build_connection(
            rows, page=page, to_node=lambda r: _member(*r), sort_key=lambda r: (r[0].joined_at, r[0].id)
        )
        return cast(MemberConnection, connection)

    @strawberry.field(description="Invitations sent, newest first.")
    async def invitations(
        self,
        info: Info,
        first: First = None,
        after: After = None,
        last: Last = None,
        before: Before = None,
        pending_only: Annotated[bool, strawberry.argument(description="Only those still pending.")] = False,
    ) -> InvitationConnection:
        page = page_request(first, after, last, before, types=(datetime, str))
        rows = await members.list_invitations(
            await info.context.db(),
            pending_only=pending_only,
            page=page,
        )
        return build_connection(rows, page=page, to_node=Invitation.from_model, sort_key=lambda i: (i.created_at, i.id))

    @strawberry.field(description="Every organisation the signed-in user belongs to.")
    async def organizations(self, info: RequestInfo) -> list[OrganizationMembership]:
        principal = await info.context.principal()
        rows = await members.organizations_of(info.context.system_db(), principal.user_id or "")
        return [
            OrganizationMembership(
                organization=Organization.from_model(o),
                role=Role(m.role),
                joined_at=m.joined_at,
                current=o.id == principal.org_id,
            )
            for m, o in rows
        ]

    @strawberry.field(description="The signed-in user's active sessions (every organisation), latest used first.")
    async def sessions(self, info: RequestInfo) -> list[SignInSession]:
        principal = await info.context.principal()
        rows = await sessions.list_active(info.context.system_db(), principal.user_id or "")
        return [SignInSession.from_model(r, principal.session_id) for r in rows]


@strawberry.input(description="Profile fields to change; omitted fields stay as they are.")
class UpdateProfileInput:
    name: str | None = strawberry.field(default=None, description="New display name.")
    notification_preferences: JSON | None = strawberry.field(
        default=None, description="Replaces the notification settings."
    )


@strawberry.type
class OrgsMutation:
    @strawberry.mutation(description="Create an organisation and its owner account, and sign in.")
    async def register(
        self,
        info: RequestInfo,
        email: Annotated[str, strawberry.argument(description="Sign-in email.")],
        password: Annotated[str, strawberry.argument(description="At least 10 characters.")],
        name: Annotated[str, strawberry.argument(description="The owner's display name.")],
        organization_name: Annotated[str, strawberry.argument(description="The new organisation's name.")],
        refresh_token_in: Delivery = TokenDelivery.BODY,
    ) -> AuthPayload:
        ctx = info.context
        session = ctx.system_db()
        settings = ctx.runtime.settings
        user, org = await service.register(
            session,
            email=email,
            password=password,
            name=name,
            organization_name=organization_name,
            source_ip=ctx.source_ip,
            settings=settings,
        )
        issued = await sessions.start(
            session,
            ctx.signer,
            settings,
            user=user,
            org_id=org.id,
            user_agent=_user_agent(info),
            ip_address=ctx.source_ip,
        )
        return await _signed_in(info, issued, user, org, models.Role.OWNER, refresh_token_in)

    @strawberry.mutation(description="Sign in with email and password, in the organisation used last.")
    async def login(
        self,
        info: RequestInfo,
        email: Annotated[str, strawberry.argument(description="Sign-in email.")],
        password: Annotated[str, strawberry.argument(description="Password.")],
        refresh_token_in: Delivery = TokenDelivery.BODY,
    ) -> AuthPayload:
        ctx = info.context
        settings = ctx.runtime.settings
        session = ctx.system_db()
        result = await service.login(
            session, email=email, password=password, throttle=_throttle(info), source_ip=ctx.source_ip
        )
        issued = await sessions.start(
            session,
            ctx.signer,
            settings,
            user=result.user,
            org_id=result.organization.id,
            user_agent=_user_agent(info),
            ip_address=ctx.source_ip,
        )
        return await _signed_in(info, issued, result.user, result.organization, result.role, refresh_token_in)

    @strawberry.mutation(
        description="New tokens for a refresh token (it rotates: each works once; one used twice ends the "
        "session). Without `refreshToken`, the session cookie and the `X-CSRF-Token` header are read."
    )
    async def refresh_session(
        self,
        info: RequestInfo,
        refresh_token: Annotated[str | None, strawberry.argument(description="The refresh token (body mode).")] = None,
    ) -> AuthPayload:
        ctx = info.context
        delivery = TokenDelivery.BODY
        if refresh_token is None:
            refresh_token = _cookie_refresh_token(info)
            delivery = TokenDelivery.COOKIE
        session = ctx.system_db()
        try:
            issued, user = await sessions.refresh(session, ctx.signer, refresh_token, ip_address=ctx.source_ip)
        except sessions.RefreshReused:
            await ctx.commit()  # the session's end sticks, and its subscriptions are told
            _clear_cookies(info)
            raise
        membership = await members.membership_of(session, user.id, issued.session.org_id)
        org = await service.get_organization(session, issued.session.org_id)
        return await _signed_in(info, issued, user, org, membership.role, delivery)

    @strawberry.mutation(description="Sign out: ends the caller's session (its access and refresh tokens).")
    async def logout(self, info: RequestInfo) -> bool:
        principal = await info.context.principal()
        session = info.context.system_db()
        row = await sessions.get_own(session, principal.user_id or "", principal.session_id or "")
        if row is not None and row.revoked_at is None:
            await sessions.end(session, row, reason="signed out")
            record_activity(
                session,
                principal,
                "user.signed_out",
                target_type="session",
                target_id=row.id,
                source_ip=info.context.source_ip,
            )
        _clear_cookies(info)
        return True

    @strawberry.mutation(description="End one of the caller's own sessions (another device). Idempotent.")
    async def revoke_session(
        self, info: RequestInfo, id: Annotated[strawberry.ID, strawberry.argument(description="Session id.")]
    ) -> SignInSession:
        principal = await info.context.principal()
        session = info.context.system_db()
        row = await sessions.get_own(session, principal.user_id or "", str(id))
        if row is None:
            raise NotFound("session not found", id=str(id))
        if row.revoked_at is None:
            await sessions.end(session, row, reason="revoked")
            record_activity(
                session,
                principal,
                "session.revoked",
                target_type="session",
                target_id=row.id,
                metadata={"device": row.user_agent},
                source_ip=info.context.source_ip,
            )
        return SignInSession.from_model(row, principal.session_id)

    @strawberry.mutation(description="Change the password (the current one checked); ends every other session.")
    async def change_password(
        self,
        info: RequestInfo,
        current_password: Annotated[str, strawberry.argument(description="The current password.")],
        new_password: NewPassword,
    ) -> bool:
        principal = await info.context.principal()
        await service.change_password(
            info.context.system_db(),
            principal,
            current=current_password,
            new=new_password,
            source_ip=info.context.source_ip,
        )
        return True

    @strawberry.mutation(
        description="Email a password reset link, if the address has an account. Always answers true, "
        "whether or not it has one."
    )
    async def request_password_reset(
        self, info: RequestInfo, email: Annotated[str, strawberry.argument(description="The account's email.")]
    ) -> bool:
        ctx = info.context
        await service.limit_per_address(
            ctx.runtime.redis, "password-reset", ctx.source_ip, limit=20, window_seconds=3600
        )
        await service.request_password_reset(ctx.system_db(), email, ctx.runtime.settings)
        return True

    @strawberry.mutation(description="Set a new password with the emailed token; ends every session of the account.")
    async def reset_password(self, info: RequestInfo, token: Token, new_password: NewPassword) -> bool:
        await service.reset_password(
            info.context.system_db(), token=token, password=new_password, source_ip=info.context.source_ip
        )
        return True

    @strawberry.mutation(description="Confirm an email address with the emailed token.")
    async def verify_email(self, info: RequestInfo, token: Token) -> bool:
        await service.verify_email(info.context.system_db(), token)
        return True

    @strawberry.mutation(description="Email the signed-in user a new link to confirm their address.")
    async def request_email_verification(self, info: RequestInfo) -> bool:
        principal = await info.context.principal()
        session = info.context.system_db()
        user = await service.get_user(session, principal.user_id or "")
        if user.email_verified_at is None:
            await service.send_verification(session, user, info.context.runtime.settings)
        return True

    @strawberry.mutation(description="Change the signed-in user's name or notification preferences.")
    async def update_profile(
        self,
        info: RequestInfo,
        input: Annotated[UpdateProfileInput, strawberry.argument(description="Fields to change.")],
    ) -> User:
        principal = await info.context.principal()
        user = await service.update_profile(
            await info.context.db(),
            principal,
            name=input.name,
            notification_preferences=input.notification_preferences,
            source_ip=info.context.source_ip,
        )
        return User.from_model(user, principal.role or "")

    @strawberry.mutation(description="Create an API key for agents. Users only; the secret is returned once.")
    async def create_api_key(
        self,
        info: RequestInfo,
        name: Annotated[str, strawberry.argument(description="What the key is for.")],
        scopes: Annotated[
            list[ApiKeyScope] | None, strawberry.argument(description="What the key may do; FULL when omitted.")
        ] = None,
        agent_ids: Annotated[
            list[strawberry.ID] | None,
            strawberry.argument(description="Limit the key to these agents (at most 100); omit for every agent."),
        ] = None,
    ) -> CreatedApiKey:
        principal = await info.context.principal()
        session = await info.context.db()
        if agent_ids is not None:
            await agents.require_active_agent_ids(session, {str(a) for a in agent_ids})
        key, secret = await service.create_api_key(
            session,
            principal,
            name=name,
            source_ip=info.context.source_ip,
            scopes=[Scope[s.name] for s in scopes] if scopes is not None else None,
            agent_ids=[str(a) for a in agent_ids] if agent_ids is not None else None,
        )
        return CreatedApiKey(api_key=ApiKey.from_model(key), secret=secret)

    @strawberry.mutation(description="Revoke an API key; it fails from its very next request. Idempotent.")
    async def revoke_api_key(
        self, info: RequestInfo, id: Annotated[strawberry.ID, strawberry.argument(description="Key id.")]
    ) -> ApiKey:
        principal = await info.context.principal()
        key = await service.revoke_api_key(
            await info.context.db(), principal, str(id), source_ip=info.context.source_ip
        )
        return ApiKey.from_model(key)

    # --- members ------------------------------------------------------------------------------------
    @strawberry.mutation(description="Invite someone by email (a single-use link, valid 7 days).")
    async def invite_member(
        self,
        info: RequestInfo,
        email: Annotated[str, strawberry.argument(description="Their email address.")],
        role: Annotated[Role, strawberry.argument(description="The role they will have.")],
    ) -> Invitation:
        principal = await info.context.principal()
        row = await members.invite(
            await info.context.db(),
            principal,
            info.context.runtime.settings,
            email=email,
            role=models.Role[role.name],
            source_ip=info.context.source_ip,
        )
        return Invitation.from_model(row)

    @strawberry.mutation(description="Revoke a pending invitation: its link stops working.")
    async def revoke_invitation(
        self, info: RequestInfo, id: Annotated[strawberry.ID, strawberry.argument(description="Invitation id.")]
    ) -> Invitation:
        principal = await info.context.principal()
        row = await members.revoke_invitation(
            await info.context.db(), principal, str(id), source_ip=info.context.source_ip
        )
        return Invitation.from_model(row)

    @strawberry.mutation(description="Send a pending invitation again: a new link (the old one stops), 7 more days.")
    async def resend_invitation(
        self, info: RequestInfo, id: Annotated[strawberry.ID, strawberry.argument(description="Invitation id.")]
    ) -> Invitation:
        principal = await info.context.principal()
        row = await members.resend_invitation(
            await info.context.db(),
            principal,
            info.context.runtime.settings,
            str(id),
            source_ip=info.context.source_ip,
        )
        return Invitation.from_model(row)

    @strawberry.mutation(
        description="Accept an invitation: creates the account (name and password) or adds the existing one "
        "(its password, or signed in as it), and signs in to the organisation."
    )
    async def accept_invitation(
        self,
        info: RequestInfo,
        token: Token,
        name: Annotated[str | None, strawberry.argument(description="A new account's display name.")] = None,
        password: Annotated[
            str | None, strawberry.argument(description="A new account's password, or the existing one's.")
        ] = None,
        refresh_token_in: Delivery = TokenDelivery.BODY,
    ) -> AuthPayload:
        ctx = info.context
        signed_in = await ctx.caller()
        session = ctx.system_db()
        user, membership = await members.accept(
            session,
            token=token,
            name=name,
            password=password,
            signed_in_user_id=signed_in.user_id if signed_in is not None else None,
            source_ip=ctx.source_ip,
        )
        org = await service.get_organization(session, membership.org_id)
        issued = await sessions.start(
            session,
            ctx.signer,
            ctx.runtime.settings,
            user=user,
            org_id=org.id,
            user_agent=_user_agent(info),
            ip_address=ctx.source_ip,
            method="invitation",
        )
        return await _signed_in(info, issued, user, org, membership.role, refresh_token_in)

    @strawberry.mutation(description="Change a member's role (the owner role: owners only; one owner remains).")
    async def update_member_role(
        self,
        info: RequestInfo,
        user_id: UserId,
        role: Annotated[Role, strawberry.argument(description="The new role.")],
    ) -> Member:
        principal = await info.context.principal()
        session = await info.context.db()
        membership = await members.update_role(
            session, principal, str(user_id), models.Role[role.name], source_ip=info.context.source_ip
        )
        return _member(membership, await service.get_user(session, membership.user_id))

    @strawberry.mutation(description="Remove a member: their sessions here end and their subscriptions close.")
    async def remove_member(self, info: RequestInfo, user_id: UserId) -> bool:
        principal = await info.context.principal()
        await members.remove(await info.context.db(), principal, str(user_id), source_ip=info.context.source_ip)
        return True

    @strawberry.mutation(description="Make another member an owner; the caller becomes an admin.")
    async def transfer_ownership(self, info: RequestInfo, user_id: UserId) -> Member:
        principal = await info.context.principal()
        session = await info.context.db()
        membership = await members.transfer_ownership(
            session, principal, str(user_id), source_ip=info.context.source_ip
        )
        return _member(membership, await service.get_user(session, membership.user_id))

    @strawberry.mutation(description="Leave the organisation (not its last owner); the sessions in it end.")
    async def leave_organization(self, info: RequestInfo) -> bool:
        principal = await info.context.principal()
        await members.leave(await info.context.db(), principal, source_ip=info.context.source_ip)
        _clear_cookies(info)
        return True

    @strawberry.mutation(
        description="Sign the current session in to another of the user's organisations: new tokens (those "
        "for the previous one stop working); sign-in lands there next time."
    )
    async def switch_organization(
        self,
        info: RequestInfo,
        id: Annotated[strawberry.ID, strawberry.argument(description="Organisation id.")],
        refresh_token_in: Delivery = TokenDelivery.BODY,
    ) -> AuthPayload:
        principal = await info.context.principal()
        ctx = info.context
        session = ctx.system_db()
        membership = await members.membership_of(session, principal.user_id or "", str(id))
        row = await sessions.get_own(session, principal.user_id or "", principal.session_id or "")
        if row is None or row.revoked_at is not None:
            raise Unauthenticated("your session has ended; sign in again")
        issued = await sessions.move(session, ctx.signer, row, membership.org_id)
        user = await service.get_user(session, principal.user_id or "")
        org = await service.get_organization(session, membership.org_id)
        return await _signed_in(info, issued, user, org, membership.role, refresh_token_in)


def _throttle(info: RequestInfo) -> service.LoginThrottle:
    settings = info.context.runtime.settings
    return service.LoginThrottle(
        info.context.runtime.redis,
        max_failures=settings.login_max_failures,
        max_account_failures=settings.login_max_failures_per_account,
        window_seconds=settings.login_failure_window_seconds,
    )
