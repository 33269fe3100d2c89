"""Standard Webhooks signatures (https://www.standardwebhooks.com).

A secret is `whsec_` + base64 of 32 random bytes. The signature of a message is
`v1,` + base64(HMAC-SHA256(key, f"{webhook-id}.{webhook-timestamp}.{body}")), keyed by the base64-decoded part
after `whsec_`. During a rotation a message carries one signature per valid secret, separated by spaces.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    return base64.b64decode(secret[len(SECRET_PREFIX) :])


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(secrets_: Iterable[str], message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one `v1,…` per secret, space-separated."""
    return " ".join(sign(s, message_id, timestamp, body) for s in secrets_)


def headers(secrets_: Iterable[str], message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    out = {
        "content-type": "application/json",
        "user-agent": "Agentrail-Webhooks/1",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
    }
    signature = signature_header(secrets_, message_id, timestamp, body)
    if signature:
        out["webhook-signature"] = signature
    return out
