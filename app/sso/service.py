"""Single sign-on: an organisation's provider and domains, and the authorization code flow.

`start` records a login in flight (state hashed, nonce, PKCE verifier) and answers the provider's authorization
URL; `complete` takes the code and state back once, exchanges the code, checks the ID token and signs the person
in: a member signs in; someone else joins with the provider's default role only when their (verified, per the
provider) email address is in one of the organisation's verified domains.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import timedelta
from typing import Any

from sqlmodel import col, select

from app.activity.service import record_activity
from app.db import AsyncSession, new_id, utcnow
from app.errors import BadUserInput, Conflict, Forbidden, NotFound, Unavailable
from app.orgs import members
from app.orgs import service as orgs
from app.orgs.models import Membership, Organization, Role, User
from app.principal import Principal
from app.settings import Settings
from app.sso import oidc
from app.sso.models import SsoDomain, SsoLogin, SsoProvider
from app.webhooks import secretbox

DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
UNUSABLE_PASSWORD = "!sso"  # never verifies: argon2 hashes start with $argon2


def _context(org_id: str) -> str:
    return f"sso:{org_id}"


def _unavailable(exc: oidc.ProviderError) -> Unavailable:
    return Unavailable(f"the identity provider could not be used: {exc}", retry_after=30)


def _check_role(role: str) -> str:
    if role not in {r.value for r in Role} or role == Role.OWNER:
        raise BadUserInput("defaultRole must be ADMIN, MEMBER or VIEWER", field="defaultRole")
    return role


async def provider(session: AsyncSession, org_id: str) -> SsoProvider | None:
    return await session.get(SsoProvider, org_id)


async def configure(
    session: AsyncSession,
    principal: Principal,
    settings: Settings,
    secret_key: str,
    *,
    issuer: str,
    client_id: str,
    client_secret: str | None,
    default_role: str,
    enabled: bool,
    sso_required: bool,
    source_ip: str | None,
) -> SsoProvider:
    """Saves the provider once its discovery document answers (through the SSRF guard)."""
    issuer = oidc.check_issuer(issuer, settings)
    client_id = client_id.strip()
    if not client_id or len(client_id) > 500:
        raise BadUserInput("clientId must be 1 to 500 characters", field="clientId")
    _check_role(default_role)
    try:
        await oidc.discover(issuer, settings, fresh=True)
    except oidc.ProviderError as exc:
        raise BadUserInput(f"issuer discovery failed: {exc}", field="issuer") from None
    row = await provider(session, principal.org_id)
    if row is None:
        if not client_secret:
            raise BadUserInput("clientSecret is required", field="clientSecret")
        row = SsoProvider(org_id=principal.org_id, issuer=issuer, client_id=client_id, client_secret_sealed="")
        session.add(row)
    if client_secret is not None:
        if len(client_secret) > 1000:
            raise BadUserInput("clientSecret must be at most 1000 characters", field="clientSecret")
        row.client_secret_sealed = secretbox.seal(client_secret, secret_key, context=_context(principal.org_id))
    row.issuer, row.client_id, row.default_role, row.enabled = issuer, client_id, default_role, enabled
    row.updated_at = utcnow()
    org = await orgs.get_organization(session, principal.org_id)
    org.sso_required = sso_required and enabled
    record_activity(
        session,
        principal,
        "sso.configured",
        target_type="organization",
        target_id=principal.org_id,
        metadata={
            "issuer": issuer,
            "clientId": client_id,
            "enabled": enabled,
            "ssoRequired": org.sso_required,
            "defaultRole": default_role,
        },
        source_ip=source_ip,
    )
    await session.flush()
    return row


# --- domains ------------------------------------------------------------------------------------------
async def list_domains(session: AsyncSession) -> list[SsoDomain]:
    return list((await session.exec(select(SsoDomain).order_by(col(SsoDomain.domain)))).all())


async def add_domain(session: AsyncSession, principal: Principal, domain: str, *, source_ip: str | None) -> SsoDomain:
    domain = domain.strip().lower().rstrip(".")
    if not DOMAIN.match(domain):
        raise BadUserInput("not a domain name (e.g. example.com)", field="domain")
    existing = (await session.exec(select(SsoDomain).where(SsoDomain.domain == domain))).first()
    if existing is not None:
        raise Conflict("this domain is already added", id=existing.id)
    row = SsoDomain(
        id=new_id("dom"),
        org_id=principal.org_id,
        domain=domain,
        verification_token=f"agentrail-domain-verification={secrets.token_urlsafe(24)}",
    )
    session.add(row)
    record_activity(
        session,
        principal,
        "sso.domain_added",
        target_type="sso_domain",
        target_id=row.id,
        metadata={"domain": domain},
        source_ip=source_ip,
    )
    await session.flush()
    return row


def verification_url(settings: Settings, domain: str) -> str:
    return settings.sso_domain_verification_url.format(domain=domain)


async def verify_domain(
    session: AsyncSession, principal: Principal, settings: Settings, domain_id: str, *, source_ip: str | None
) -> SsoDomain:
    """Verified when the domain serves the row's token at its well-known URL (through the SSRF guard)."""
    row = await session.get(SsoDomain, domain_id)
    if row is None:
        raise NotFound("domain not found", id=domain_id)
    if row.verified_at is None:
        try:
            served = await oidc.fetch_text(verification_url(settings, row.domain), settings)
        except oidc.ProviderError as exc:
            raise BadUserInput(f"could not read the verification file: {exc}", field="id") from None
        if row.verification_token not in served:
            raise BadUserInput("the verification file does not hold this domain's token", field="id")
        taken = (
            await session.exec(
                select(SsoDomain.id)
                .where(SsoDomain.domain == row.domain, col(SsoDomain.verified_at).is_not(None), SsoDomain.id != row.id)
                .execution_options(populate_existing=True)
            )
        ).first()
        if taken is not None:
            raise Conflict("another organisation has verified this domain")
        row.verified_at = utcnow()
        record_activity(
            session,
            principal,
            "sso.domain_verified",
            target_type="sso_domain",
            target_id=row.id,
            metadata={"domain": row.domain},
            source_ip=source_ip,
        )
        await session.flush()
    return row


async def remove_domain(session: AsyncSession, principal: Principal, domain_id: str, *, source_ip: str | None) -> None:
    row = await session.get(SsoDomain, domain_id)
    if row is None:
        raise NotFound("domain not found", id=domain_id)
    await session.delete(row)
    record_activity(
        session,
        principal,
        "sso.domain_removed",
        target_type="sso_domain",
        target_id=row.id,
        metadata={"domain": row.domain},
        source_ip=source_ip,
    )
    await session.flush()


# --- the flow (system sessions) -----------------------------------------------------------------------
def redirect_uri(settings: Settings) -> str:
    return settings.sso_redirect_url or f"{orgs.public_url(settings)}/sso/callback"


async def _org_for(session: AsyncSession, organization_id: str | None, email: str | None) -> str:
    if organization_id:
        return organization_id
    if email:
        domain = email.strip().lower().rpartition("@")[2]
        row = (
            await session.exec(
                select(SsoDomain).where(SsoDomain.domain == domain, col(SsoDomain.verified_at).is_not(None))
            )
        ).first()
        if row is not None:
            return row.org_id
    raise NotFound("no single sign-on is set up for this organisation or address")


async def start(
    session: AsyncSession, settings: Settings, *, organization_id: str | None, email: str | None
) -> tuple[str, str]:
    """(the provider's authorization URL, the state). The state, nonce and PKCE verifier are kept 10 minutes."""
    org_id = await _org_for(session, organization_id, email)
    row = (await session.exec(select(SsoProvider).where(SsoProvider.org_id == org_id))).first()
    if row is None or not row.enabled:
        raise NotFound("no single sign-on is set up for this organisation or address")
    try:
        discovery = await oidc.discover(row.issuer, settings)
    except oidc.ProviderError as exc:
        raise _unavailable(exc) from None
    state, nonce, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(32), secrets.token_urlsafe(64)
    redirect = redirect_uri(settings)
    session.add(
        SsoLogin(
            id=new_id("ssl"),
            state_hash=hashlib.sha256(state.encode()).hexdigest(),
            org_id=org_id,
            nonce=nonce,
            code_verifier=verifier,
            redirect_uri=redirect,
            expires_at=utcnow() + timedelta(minutes=settings.sso_login_minutes),
        )
    )
    await session.flush()
    url = oidc.authorization_url(
        discovery, client_id=row.client_id, redirect_uri=redirect, state=state, nonce=nonce, code_verifier=verifier
    )
    return url, state


async def complete(
    session: AsyncSession, settings: Settings, secret_key: str, *, code: str, state: str, source_ip: str | None
) -> tuple[User, Membership]:
    """The person the provider signed in, as a member of the organisation (joined now when their domain is
    verified). The state works once."""
    login = (
        await session.exec(
            select(SsoLogin).where(SsoLogin.state_hash == hashlib.sha256(state.encode()).hexdigest()).with_for_update()
        )
    ).first()
    if login is None or login.used_at is not None or login.expires_at <= utcnow():
        raise BadUserInput("this sign-in is unknown, already completed or expired; start again", field="state")
    login.used_at = utcnow()
    await session.flush()  # the state is spent even when what follows fails (committed by the caller)
    row = (await session.exec(select(SsoProvider).where(SsoProvider.org_id == login.org_id))).first()
    if row is None or not row.enabled:
        raise Forbidden("single sign-on is no longer set up for this organisation")
    try:
        discovery = await oidc.discover(row.issuer, settings)
        secret = secretbox.open_sealed(row.client_secret_sealed, secret_key, context=_context(row.org_id))
        id_token = await oidc.exchange_code(
            discovery,
            settings,
            client_id=row.client_id,
            client_secret=secret,
            redirect_uri=login.redirect_uri,
            code=code,
            code_verifier=login.code_verifier,
        )
        claims = await oidc.verify_id_token(id_token, discovery, settings, client_id=row.client_id, nonce=login.nonce)
    except oidc.ProviderError as exc:
        raise _unavailable(exc) from None
    return await _member_for(session, row, claims, source_ip)


async def _member_for(
    session: AsyncSession, row: SsoProvider, claims: dict[str, Any], source_ip: str | None
) -> tuple[User, Membership]:
    email = claims.get("email")
    if not isinstance(email, str) or claims.get("email_verified") is False:
        raise Forbidden("the provider did not vouch for an email address")
    email = orgs.normalise_email(email)
    user = (await session.exec(select(User).where(User.email == email))).first()
    if user is not None:
        existing = (
            await session.exec(select(Membership).where(Membership.user_id == user.id, Membership.org_id == row.org_id))
        ).first()
        if existing is not None:
            return user, existing
    domain = email.rpartition("@")[2]
    verified = (
        await session.exec(
            select(SsoDomain.id).where(
                SsoDomain.org_id == row.org_id, SsoDomain.domain == domain, col(SsoDomain.verified_at).is_not(None)
            )
        )
    ).first()
    if verified is None:
        raise Forbidden(f"{domain} is not a verified domain of this organisation: ask an admin for an invitation")
    if user is None:
        name = claims.get("name") if isinstance(claims.get("name"), str) else email.partition("@")[0]
        user = User(
            id=new_id("usr"),
            email=email,
            name=str(name)[:200] or email,
            password_hash=UNUSABLE_PASSWORD,
            email_verified_at=utcnow(),
        )
        session.add(user)
        await session.flush()
    membership = await members.join(
        session,
        user,
        row.org_id,
        row.default_role,
        metadata={"role": row.default_role, "via": "sso", "domain": domain},
        source_ip=source_ip,
    )
    return user, membership


async def organization(session: AsyncSession, org_id: str) -> Organization:
    return await orgs.get_organization(session, org_id)
