"""GraphQL types and operations of single sign-on. Thin: parse, call the service, map."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import strawberry

from app.errors import AppError
from app.info import Info, RequestInfo
from app.orgs import sessions
from app.orgs.models import Role as OrgRole
from app.orgs.schema import AuthPayload, Delivery, Role, TokenDelivery, _signed_in, _user_agent
from app.sso import service
from app.sso.models import SsoDomain as SsoDomainRow


@strawberry.type(description="An email domain the organisation claims for single sign-on.")
class SsoDomain:
    id: strawberry.ID = strawberry.field(description="Domain id (`dom_…`).")
    domain: str = strawberry.field(description="The domain, e.g. example.com.")
    verified: bool = strawberry.field(description="Whether it has been verified.")
    verified_at: datetime | None = strawberry.field(description="When it was verified.")
    verification_token: str = strawberry.field(description="Serve this text at `verificationUrl`, then verify.")
    verification_url: str = strawberry.field(description="Where the token must be served.")

    @classmethod
    def from_model(cls, row: SsoDomainRow, info: Any) -> SsoDomain:
        return cls(
            id=strawberry.ID(row.id),
            domain=row.domain,
            verified=row.verified_at is not None,
            verified_at=row.verified_at,
            verification_token=row.verification_token,
            verification_url=service.verification_url(info.context.runtime.settings, row.domain),
        )


@strawberry.type(description="The organisation's single sign-on (OpenID Connect) settings.")
class SsoSettings:
    configured: bool = strawberry.field(description="Whether an identity provider is set up.")
    issuer: str | None = strawberry.field(description="The provider's issuer URL (discovery is read from it).")
    client_id: str | None = strawberry.field(description="Our client id at the provider.")
    default_role: Role | None = strawberry.field(description="The role of people who join through a domain.")
    enabled: bool = strawberry.field(description="Whether members may sign in through the provider.")
    sso_required: bool = strawberry.field(description="Whether password sign-in is off for members (not owners).")
    redirect_uri: str = strawberry.field(description="Register this redirect URI at the provider.")
    domains: list[SsoDomain] = strawberry.field(description="The claimed email domains.")


@strawberry.input(description="Identity provider settings.")
class ConfigureSsoInput:
    issuer: str = strawberry.field(description="Issuer URL; `/.well-known/openid-configuration` must answer.")
    client_id: str = strawberry.field(description="Client id registered at the provider.")
    client_secret: str | None = strawberry.field(
        default=None, description="Client secret (stored encrypted; omit to keep the current one)."
    )
    default_role: Role = strawberry.field(default=Role.MEMBER, description="Role of people joining by domain.")
    enabled: bool = strawberry.field(default=True, description="Allow sign-in through the provider.")
    sso_required: bool = strawberry.field(default=False, description="Turn password sign-in off for members.")


@strawberry.type(description="Where to send the browser to sign in at the provider.")
class SsoStart:
    authorization_url: str = strawberry.field(description="The provider's authorization URL (code flow, PKCE).")
    state: str = strawberry.field(description="Comes back with the code; pass both to completeSso.")


async def _settings(info: Any) -> SsoSettings:
    principal = await info.context.principal()
    session = await info.context.db()
    row = await service.provider(session, principal.org_id)
    org = await service.organization(session, principal.org_id)
    domains = [SsoDomain.from_model(d, info) for d in await service.list_domains(session)]
    return SsoSettings(
        configured=row is not None,
        issuer=row.issuer if row else None,
        client_id=row.client_id if row else None,
        default_role=Role(row.default_role) if row else None,
        enabled=bool(row and row.enabled),
        sso_required=org.sso_required,
        redirect_uri=service.redirect_uri(info.context.runtime.settings),
        domains=domains,
    )


DomainId = Annotated[strawberry.ID, strawberry.argument(description="Domain id.")]


@strawberry.type
class SsoQuery:
    @strawberry.field(description="The organisation's single sign-on settings (never the client secret).")
    async def sso_settings(self, info: Info) -> SsoSettings:
        return await _settings(info)


@strawberry.type
class SsoMutation:
    @strawberry.mutation(description="Set up (or change) the organisation's OpenID provider.")
    async def configure_sso(
        self, info: RequestInfo, input: Annotated[ConfigureSsoInput, strawberry.argument(description="Settings.")]
    ) -> SsoSettings:
        ctx = info.context
        await service.configure(
            await ctx.db(),
            await ctx.principal(),
            ctx.runtime.settings,
            ctx.runtime.secret_key,
            issuer=input.issuer,
            client_id=input.client_id,
            client_secret=input.client_secret,
            default_role=OrgRole[input.default_role.name].value,
            enabled=input.enabled,
            sso_required=input.sso_required,
            source_ip=ctx.source_ip,
        )
        return await _settings(info)

    @strawberry.mutation(description="Claim an email domain; verify it by serving its token.")
    async def add_sso_domain(
        self, info: RequestInfo, domain: Annotated[str, strawberry.argument(description="e.g. example.com")]
    ) -> SsoDomain:
        row = await service.add_domain(
            await info.context.db(), await info.context.principal(), domain, source_ip=info.context.source_ip
        )
        return SsoDomain.from_model(row, info)

    @strawberry.mutation(description="Check that the domain serves its token at its verification URL.")
    async def verify_sso_domain(self, info: RequestInfo, id: DomainId) -> SsoDomain:
        row = await service.verify_domain(
            await info.context.db(),
            await info.context.principal(),
            info.context.runtime.settings,
            str(id),
            source_ip=info.context.source_ip,
        )
        return SsoDomain.from_model(row, info)

    @strawberry.mutation(description="Give up a claimed domain.")
    async def remove_sso_domain(self, info: RequestInfo, id: DomainId) -> bool:
        await service.remove_domain(
            await info.context.db(), await info.context.principal(), str(id), source_ip=info.context.source_ip
        )
        return True

    @strawberry.mutation(description="Start signing in through the organisation's provider (by id or by email).")
    async def start_sso(
        self,
        info: RequestInfo,
        organization_id: Annotated[strawberry.ID | None, strawberry.argument(description="The organisation.")] = None,
        email: Annotated[str | None, strawberry.argument(description="Or an address in a verified domain.")] = None,
    ) -> SsoStart:
        url, state = await service.start(
            info.context.system_db(),
            info.context.runtime.settings,
            organization_id=str(organization_id) if organization_id else None,
            email=email,
        )
        return SsoStart(authorization_url=url, state=state)

    @strawberry.mutation(description="Finish signing in with the provider's code and the state (once).")
    async def complete_sso(
        self,
        info: RequestInfo,
        code: Annotated[str, strawberry.argument(description="The `code` the provider redirected with.")],
        state: Annotated[str, strawberry.argument(description="The `state` it came back with.")],
        refresh_token_in: Delivery = TokenDelivery.BODY,
    ) -> AuthPayload:
        ctx = info.context
        session = ctx.system_db()
        try:
            user, membership = await service.complete(
                session,
                ctx.runtime.settings,
                ctx.runtime.secret_key,
                code=code,
                state=state,
                source_ip=ctx.source_ip,
            )
        except AppError:
            await ctx.commit()  # the state is spent: a failed sign-in cannot be replayed
            raise
        org = await service.organization(session, membership.org_id)
        issued = await sessions.start(
            session,
            ctx.signer,
            ctx.runtime.settings,
            user=user,
            org_id=org.id,
            user_agent=_user_agent(info),
            ip_address=ctx.source_ip,
            method="sso",
        )
        return await _signed_in(info, issued, user, org, membership.role, refresh_token_in)
