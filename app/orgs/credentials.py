"""Secrets we hand out or check: password hashes, access tokens (JWT), API keys.

Pure functions: nothing here touches the database.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from app.db import utcnow
from app.errors import Unauthenticated

API_KEY_PREFIX = "aa_live_"
API_KEY_DISPLAY_CHARS = 12  # `aa_live_` plus four characters of the secret
TOKEN_ALGORITHM = "HS256"  # pinned: tokens naming any other algorithm (or none) are refused

_passwords = PasswordHash((Argon2Hasher(),))
# Verified against when the email is unknown, so both failures take the same time.
_DUMMY_HASH = _passwords.hash("agentrail-dummy-password")


def hash_password(password: str) -> str:
    return _passwords.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    if password_hash is None:
        _passwords.verify(password, _DUMMY_HASH)
        return False
    try:
        return _passwords.verify(password, password_hash)
    except Exception:  # a malformed stored hash is a failed login, not a crash
        return False


@dataclass(frozen=True)
class AccessToken:
    token: str
    expires_at: datetime


@dataclass(frozen=True)
class TokenClaims:
    user_id: str
    org_id: str
    expires_at: datetime | None = None


class TokenSigner:
    def __init__(self, secret: str, *, issuer: str, lifetime: timedelta) -> None:
        self._key = OctKey.import_key(secret.encode())
        self._issuer = issuer
        self._lifetime = lifetime
        self._registry = jwt.JWTClaimsRegistry(
            leeway=5,
            iss={"essential": True, "value": issuer},
            sub={"essential": True},
            exp={"essential": True},
            org={"essential": True},
        )

    def issue(self, *, user_id: str, org_id: str) -> AccessToken:
        now = utcnow()
        expires_at = now + self._lifetime
        claims = {
            "iss": self._issuer,
            "sub": user_id,
            "org": org_id,
            "iat": int(now.timestamp()),
            "exp": int(expires_at.timestamp()),
            "jti": secrets.token_urlsafe(12),
        }
        token = jwt.encode({"alg": TOKEN_ALGORITHM, "typ": "JWT"}, claims, self._key, algorithms=[TOKEN_ALGORITHM])
        return AccessToken(token=token, expires_at=expires_at.replace(microsecond=0))

    def verify(self, token: str) -> TokenClaims:
        try:
            decoded = jwt.decode(token, self._key, algorithms=[TOKEN_ALGORITHM])
            self._registry.validate(decoded.claims)
        except JoseError as exc:
            reason = "expired" if "expired" in str(exc) else "invalid"
            raise Unauthenticated(f"access token is {reason}") from None
        except (ValueError, TypeError):
            raise Unauthenticated("access token is invalid") from None
        claims = decoded.claims
        if not isinstance(claims.get("sub"), str) or not isinstance(claims.get("org"), str):
            raise Unauthenticated("access token is invalid")
        expires_at = datetime.fromtimestamp(claims["exp"], UTC) if isinstance(claims.get("exp"), int) else None
        return TokenClaims(user_id=claims["sub"], org_id=claims["org"], expires_at=expires_at)


@dataclass(frozen=True)
class NewApiKey:
    secret: str
    prefix: str
    secret_hash: str


def generate_api_key() -> NewApiKey:
    secret = API_KEY_PREFIX + secrets.token_urlsafe(32)  # 32 random bytes
    return NewApiKey(secret=secret, prefix=secret[:API_KEY_DISPLAY_CHARS], secret_hash=hash_api_key(secret))


def hash_api_key(secret: str) -> str:
    # A key carries 256 random bits, so a fast hash is as safe as a slow one and keeps lookups cheap.
    return hashlib.sha256(secret.encode()).hexdigest()


def looks_like_api_key(value: str) -> bool:
    return value.startswith("aa_")
