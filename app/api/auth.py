"""Reading credentials from headers (or WebSocket connection params) into a Principal."""

from __future__ import annotations

from collections.abc import Mapping

from app.errors import Unauthenticated
from app.orgs import service as orgs
from app.orgs.credentials import TokenSigner, looks_like_api_key
from app.principal import Principal
from app.runtime.resources import Runtime
from app.usage.ratelimit import enforce_rate_limit


def read_credential(headers: Mapping[str, str]) -> tuple[str, str] | None:
    """Returns ("api_key" | "token", value), None when absent; UNAUTHENTICATED when malformed."""
    api_key = headers.get("x-api-key")
    authorization = headers.get("authorization")
    if api_key is not None:
        api_key = api_key.strip()
        if not looks_like_api_key(api_key):
            raise Unauthenticated("X-API-Key is malformed: expected a key starting with `aa_`")
        return "api_key", api_key
    if authorization is None:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value or " " in value:
        raise Unauthenticated("Authorization header is malformed: expected `Bearer <token>`")
    if looks_like_api_key(value):
        return "api_key", value
    return "token", value


async def authenticate(headers: Mapping[str, str], *, runtime: Runtime, signer: TokenSigner) -> Principal | None:
    credential = read_credential(headers)
    if credential is None:
        return None
    kind, value = credential
    async with runtime.db.system_session(autocommit=True) as session:
        if kind == "api_key":
            principal = await orgs.principal_from_api_key(session, value)
        else:
            principal = await orgs.principal_from_token(session, signer, value)
    await enforce_rate_limit(runtime, principal)  # per API key (its plan's rate) and per user; 429 + Retry-After
    return principal
