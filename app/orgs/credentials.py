"""Secrets we hand out or check: password hashes, access tokens (JWT), API keys.

Pure functions: nothing here touches the database.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
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
    session_id: str | None = None
    expires_at: datetime | None = None


class TokenSigner:
    def __init__(self, secret: str, *, issuer: str, lifetime: timedelta) -> None:
        self._key = OctKey.import_key(secret.encode())
        self._refresh_key = hashlib.sha256(b"agentrail refresh tokens\0" + secret.encode()).digest()
        self._issuer = issuer
        self._lifetime = lifetime
        self._registry = jwt.JWTClaimsRegistry(
            leeway=5,
            iss={"essential": True, "value": issuer},
            sub={"essential": True},
            exp={"essential": True},
            org={"essential": True},
        )

    def issue(self, *, user_id: str, org_id: str, session_id: str) -> AccessToken:
        now = utcnow()
        expires_at = now + self._lifetime
        claims = {
            "iss": self._issuer,
            "sub": user_id,
            "org": org_id,
            "sid": session_id,
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
        if not all(isinstance(claims.get(name), str) for name in ("sub", "org", "sid")):
            raise Unauthenticated("access token is invalid")
        expires_at = datetime.fromtimestamp(claims["exp"], UTC) if isinstance(claims.get("exp"), int) else None
        return TokenClaims(user_id=claims["sub"], org_id=claims["org"], session_id=claims["sid"], expires_at=expires_at)

    # --- refresh tokens: `rt_<session id>.<generation>.<MAC>`; only the session's random salt is stored, so
    # the server recognises any generation it ever issued (an old one presented again is a reuse)
    def refresh_token(self, session_id: str, generation: int, salt: str) -> str:
        return f"{REFRESH_PREFIX}{session_id}.{generation}.{self._refresh_mac(session_id, generation, salt)}"

    def _refresh_mac(self, session_id: str, generation: int, salt: str) -> str:
        message = f"{session_id}.{generation}.{salt}".encode()
        digest = hmac.new(self._refresh_key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def check_refresh(self, token: str, salt: str) -> int:
        """The generation of a refresh token that this server issued for the session of that salt."""
        session_id, generation, mac = parse_refresh_token(token)
        if not hmac.compare_digest(mac, self._refresh_mac(session_id, generation, salt)):
            raise Unauthenticated("refresh token is invalid")
        return generation


REFRESH_PREFIX = "rt_"


def parse_refresh_token(token: str) -> tuple[str, int, str]:
    """(session id, generation, MAC); UNAUTHENTICATED when it is not shaped like one of ours."""
    if not token.startswith(REFRESH_PREFIX) or len(token) > 200:
        raise Unauthenticated("refresh token is invalid")
    parts = token[len(REFRESH_PREFIX) :].split(".")
    if len(parts) != 3 or not parts[1].isdigit() or len(parts[1]) > 9 or not parts[0] or not parts[2]:
        raise Unauthenticated("refresh token is invalid")
    return parts[0], int(parts[1]), parts[2]


def new_secret_token() -> tuple[str, str]:
    """A single-use token for a link (invitation, password reset, verification) and the hash we store."""
    token = secrets.token_urlsafe(32)
    return token, hash_secret(token)


def hash_secret(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


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
