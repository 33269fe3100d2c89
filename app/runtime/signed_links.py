"""Signed, expiring download links: anyone holding the link may fetch that one file until it expires.

The signature is an HMAC-SHA256 over the path and the expiry, keyed by a key derived from the service's
secret for this purpose only, so a link cannot be reused for another file or stretched in time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime
from urllib.parse import urlencode

from app.db import utcnow


def _key(secret_key: str) -> bytes:
    return hmac.new(secret_key.encode(), b"agentrail download links v1", hashlib.sha256).digest()


def _signature(secret_key: str, path: str, org: str, expires: int) -> str:
    mac = hmac.new(_key(secret_key), f"{path}\n{org}\n{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def sign_path(secret_key: str, path: str, org_id: str, expires_at: datetime) -> str:
    """`path?org=<org id>&expires=<unix seconds>&signature=<…>` (the organisation is signed too)."""
    expires = int(expires_at.timestamp())
    signature = _signature(secret_key, path, org_id, expires)
    return f"{path}?{urlencode({'org': org_id, 'expires': expires, 'signature': signature})}"


def verify_path(
    secret_key: str,
    path: str,
    org_id: str | None,
    expires: str | None,
    signature: str | None,
    now: datetime | None = None,
) -> bool:
    """True if the signature is right for this path and organisation and the link has not expired."""
    if not org_id or not expires or not signature:
        return False
    try:
        expires_at = int(expires)
    except ValueError:
        return False
    if expires_at <= (now or utcnow()).timestamp():
        return False
    return hmac.compare_digest(_signature(secret_key, path, org_id, expires_at), signature)
