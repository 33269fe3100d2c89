"""Talking to an OpenID provider: discovery, the token endpoint (Authlib's OAuth 2 client, PKCE S256) and the
ID token checked against the provider's JWKS (issuer, audience, expiry, nonce).

Every request goes through the webhooks' SSRF guard (resolved, checked and connected in one step): an issuer
on a loopback, private, link-local or metadata address is refused. `AGENTRAIL_SSO_ALLOW_LOOPBACK` lets loopback
(only) through outside production, for a local provider in development and tests.
"""

from __future__ import annotations

import ipaddress
import time
import warnings
from dataclasses import dataclass
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from app.errors import BadUserInput, Unauthenticated
from app.settings import Settings
from app.webhooks.ssrf import UnsafeTarget, address_problem, parse_target, system_resolve
from app.webhooks.transport import PinnedNetworkBackend, PinnedTransport

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]
CACHE_SECONDS = 300
MAX_BODY = 512 * 1024

with warnings.catch_warnings():  # Authlib 1.7+ names httpx2 its preferred client; httpx is what we ship
    warnings.simplefilter("ignore")
    from authlib.integrations.httpx_client import AsyncOAuth2Client


class ProviderError(Exception):
    """The provider could not be reached or answered something unusable."""


def _loopback_allowed(settings: Settings) -> bool:
    return settings.sso_allow_loopback and not settings.is_production


def _resolver(settings: Settings) -> Any:
    async def resolve(host: str, port: int) -> list[str]:
        addresses = await system_resolve(host, port)
        if _loopback_allowed(settings):
            for address in addresses:  # loopback passes; every other internal address is still refused
                ip = ipaddress.ip_address(address)
                if not ip.is_loopback and address_problem(ip) is not None:
                    raise UnsafeTarget(f"{host} resolves to an internal address")
        return addresses

    return resolve


def _client_kwargs(settings: Settings) -> dict[str, Any]:
    backend = PinnedNetworkBackend(lambda: _loopback_allowed(settings), resolver=_resolver(settings))
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=0)
    return {
        "transport": PinnedTransport(backend, limits=limits),
        "timeout": httpx.Timeout(settings.sso_http_timeout_seconds),
        "follow_redirects": False,
        "trust_env": False,
    }


def check_issuer(issuer: str, settings: Settings) -> str:
    issuer = issuer.strip().rstrip("/")
    try:
        parse_target(issuer, require_https=settings.is_production)
    except UnsafeTarget as exc:
        raise BadUserInput(f"issuer: {exc}", field="issuer") from None
    return issuer


async def _get_json(url: str, settings: Settings) -> dict[str, Any]:
    try:
        parse_target(url, require_https=settings.is_production)
        async with httpx.AsyncClient(**_client_kwargs(settings)) as client:
            response = await client.get(url, headers={"Accept": "application/json"})
    except (UnsafeTarget, httpx.HTTPError) as exc:
        raise ProviderError(f"{url}: {type(exc).__name__}: {exc}"[:300]) from None
    if response.status_code != 200 or len(response.content) > MAX_BODY:
        raise ProviderError(f"{url} answered {response.status_code}")
    try:
        data = response.json()
    except ValueError:
        raise ProviderError(f"{url} did not answer JSON") from None
    if not isinstance(data, dict):
        raise ProviderError(f"{url} did not answer a JSON object")
    return data


@dataclass(frozen=True)
class Discovery:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str


_discovered: dict[str, tuple[float, Discovery]] = {}
_jwks: dict[str, tuple[float, KeySet]] = {}


async def discover(issuer: str, settings: Settings, *, fresh: bool = False) -> Discovery:
    cached = _discovered.get(issuer)
    if cached and not fresh and time.monotonic() - cached[0] < CACHE_SECONDS:
        return cached[1]
    data = await _get_json(f"{issuer}/.well-known/openid-configuration", settings)
    try:
        found = Discovery(
            issuer=str(data["issuer"]).rstrip("/"),
            authorization_endpoint=str(data["authorization_endpoint"]),
            token_endpoint=str(data["token_endpoint"]),
            jwks_uri=str(data["jwks_uri"]),
        )
    except KeyError as exc:
        raise ProviderError(f"the discovery document lacks {exc}") from None
    if found.issuer != issuer:
        raise ProviderError(f"the discovery document names another issuer ({found.issuer[:200]})")
    for url in (found.authorization_endpoint, found.token_endpoint, found.jwks_uri):
        try:
            parse_target(url, require_https=settings.is_production)
        except UnsafeTarget as exc:
            raise ProviderError(f"{url[:200]}: {exc}") from None
    _discovered[issuer] = (time.monotonic(), found)
    return found


async def _keys(jwks_uri: str, settings: Settings, *, fresh: bool) -> KeySet:
    cached = _jwks.get(jwks_uri)
    if cached and not fresh and time.monotonic() - cached[0] < CACHE_SECONDS:
        return cached[1]
    try:
        keys = KeySet.import_key_set(await _get_json(jwks_uri, settings))  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError) as exc:
        raise ProviderError(f"the provider's JWKS is unusable: {type(exc).__name__}") from None
    _jwks[jwks_uri] = (time.monotonic(), keys)
    return keys


def authorization_url(
    discovery: Discovery, *, client_id: str, redirect_uri: str, state: str, nonce: str, code_verifier: str
) -> str:
    client = AsyncOAuth2Client(
        client_id=client_id, scope="openid email profile", redirect_uri=redirect_uri, code_challenge_method="S256"
    )
    url, _ = client.create_authorization_url(
        discovery.authorization_endpoint, state=state, nonce=nonce, code_verifier=code_verifier
    )
    return str(url)


async def exchange_code(
    discovery: Discovery,
    settings: Settings,
    *,
    client_id: str,
    client_secret: str,
    redirect_uri: str,
    code: str,
    code_verifier: str,
) -> str:
    """The ID token for an authorization code (client_secret_basic, PKCE verifier)."""
    try:
        async with AsyncOAuth2Client(
            client_id=client_id, client_secret=client_secret, redirect_uri=redirect_uri, **_client_kwargs(settings)
        ) as client:
            token = await client.fetch_token(
                discovery.token_endpoint, grant_type="authorization_code", code=code, code_verifier=code_verifier
            )
    except (UnsafeTarget, httpx.HTTPError) as exc:
        raise ProviderError(f"the token endpoint could not be reached: {type(exc).__name__}") from None
    except Exception as exc:  # an OAuth error answer (invalid_grant, …): the code is not good
        raise Unauthenticated(f"the provider refused the sign-in: {str(exc)[:200]}") from None
    id_token = token.get("id_token") if isinstance(token, dict) else None
    if not isinstance(id_token, str):
        raise Unauthenticated("the provider sent no ID token")
    return id_token


async def verify_id_token(
    id_token: str, discovery: Discovery, settings: Settings, *, client_id: str, nonce: str
) -> dict[str, Any]:
    """The ID token's claims once its signature (the provider's JWKS), issuer, audience, expiry and nonce check
    out; UNAUTHENTICATED otherwise. An unknown key id fetches the JWKS again once (the provider rotated)."""
    decoded = None
    for fresh in (False, True):
        keys = await _keys(discovery.jwks_uri, settings, fresh=fresh)
        try:
            decoded = jwt.decode(id_token, keys, algorithms=ALGORITHMS)
            break
        except JoseError as exc:
            if fresh or ("key" not in type(exc).__name__.lower() and "kid" not in str(exc).lower()):
                raise Unauthenticated("the ID token's signature does not verify") from None
        except (ValueError, TypeError):
            raise Unauthenticated("the ID token is malformed") from None
    assert decoded is not None
    registry = jwt.JWTClaimsRegistry(
        leeway=60,
        iss={"essential": True, "value": discovery.issuer},
        aud={"essential": True, "value": client_id},
        exp={"essential": True},
        sub={"essential": True},
        nonce={"essential": True, "value": nonce},
    )
    try:
        registry.validate(decoded.claims)
    except JoseError as exc:
        raise Unauthenticated(
            f"the ID token is not valid here: {exc.description or type(exc).__name__}"[:300]
        ) from None
    claims = dict(decoded.claims)
    aud = claims.get("aud")
    if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != client_id:
        raise Unauthenticated("the ID token was issued for another client (azp)")
    return claims


async def fetch_text(url: str, settings: Settings) -> str:
    """A small text document (the domain verification file), through the same guard."""
    try:
        parse_target(url, require_https=settings.is_production)
        async with httpx.AsyncClient(**_client_kwargs(settings)) as client:
            response = await client.get(url)
    except (UnsafeTarget, httpx.HTTPError) as exc:
        raise ProviderError(f"{type(exc).__name__}: {exc}"[:300]) from None
    if response.status_code != 200:
        raise ProviderError(f"answered {response.status_code}")
    return response.text[:1000]
