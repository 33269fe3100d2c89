"""GraphQL types and operations of the orgs domain. Thin: parse, authorise, call the service, map."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated

import strawberry

from app.agents import service as agents
from app.info import Info, RequestInfo
from app.orgs import models, service
from app.pagination import Connection, build_connection, decode_cursor, page_size
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
    USER = "user"
    API_KEY = "api_key"


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
    role: Role = strawberry.field(description="Role in the organisation.")
    notification_preferences: JSON = strawberry.field(description="Free-form notification settings.")
    created_at: datetime = strawberry.field(description="When the account was created.")

    @classmethod
    def from_model(cls, user: models.User) -> User:
        return cls(
            id=strawberry.ID(user.id),
            email=user.email,
            name=user.name,
            role=Role(user.role),
            notification_preferences=user.notification_preferences,
            created_at=user.created_at,
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


@strawberry.type(description="A signed-in session.")
class AuthPayload:
    access_token: str = strawberry.field(description="Send as `Authorization: Bearer <accessToken>`.")
    expires_at: datetime = strawberry.field(description="When the token stops working.")
    user: User = strawberry.field(description="The signed-in user.")
    organization: Organization = strawberry.field(description="The user's organisation.")


@strawberry.type(description="Who is calling: a user or an API key, and its organisation.")
class Viewer:
    kind: ViewerKind = strawberry.field(description="USER or API_KEY.")
    user: User | None = strawberry.field(description="The user, when a user token was sent.")
    api_key: ApiKey | None = strawberry.field(description="The key, when an API key was sent.")
    organization: Organization = strawberry.field(description="The caller's organisation.")


ApiKeyConnection = Connection[ApiKey]


@strawberry.type
class OrgsQuery:
    @strawberry.field(description="The caller (user or API key) and its organisation.")
    async def me(self, info: Info) -> Viewer:
        principal = await info.context.principal()
        session = await info.context.db()
        org = await service.get_organization(session, principal.org_id)
        user = api_key = None
        if principal.is_user:
            user = User.from_model(await service.get_user(session, principal.user_id or ""))
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
        first: Annotated[int | None, strawberry.argument(description="Page size, at most 500.")] = None,
        after: Annotated[str | None, strawberry.argument(description="Cursor of the previous page.")] = None,
        include_revoked: Annotated[bool, strawberry.argument(description="Include revoked keys.")] = True,
    ) -> ApiKeyConnection:
        limit = page_size(first)
        cursor = decode_cursor(after, (datetime, str))
        rows = await service.list_api_keys(
            await info.context.db(),
            include_revoked=include_revoked,
            limit=limit + 1,
            after=tuple(cursor) if cursor else None,
        )
        return build_connection(rows, limit=limit, to_node=ApiKey.from_model, sort_key=lambda k: (k.created_at, k.id))


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
    ) -> AuthPayload:
        ctx = info.context
        session = ctx.system_db()
        user, org = await service.register(
            session,
            email=email,
            password=password,
            name=name,
            organization_name=organization_name,
            source_ip=ctx.source_ip,
        )
        token = ctx.signer.issue(user_id=user.id, org_id=org.id)
        return AuthPayload(
            access_token=token.token,
            expires_at=token.expires_at,
            user=User.from_model(user),
            organization=Organization.from_model(org),
        )

    @strawberry.mutation(description="Sign in with email and password; returns a short-lived access token.")
    async def login(
        self,
        info: RequestInfo,
        email: Annotated[str, strawberry.argument(description="Sign-in email.")],
        password: Annotated[str, strawberry.argument(description="Password.")],
    ) -> AuthPayload:
        ctx = info.context
        settings = ctx.runtime.settings
        throttle = service.LoginThrottle(
            ctx.runtime.redis,
            max_failures=settings.login_max_failures,
            max_account_failures=settings.login_max_failures_per_account,
            window_seconds=settings.login_failure_window_seconds,
        )
        result = await service.login(
            ctx.system_db(),
            email=email,
            password=password,
            signer=ctx.signer,
            throttle=throttle,
            source_ip=ctx.source_ip,
        )
        return AuthPayload(
            access_token=result.token.token,
            expires_at=result.token.expires_at,
            user=User.from_model(result.user),
            organization=Organization.from_model(result.organization),
        )

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
        return User.from_model(user)

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
