"""Webhook secrets at rest: AES-256-GCM under a key derived (HKDF-SHA256) from AGENTRAIL_SECRET_KEY.

Signing needs the secret itself, so it cannot be hashed like an API key; encrypted, a database dump alone
does not reveal it. Changing AGENTRAIL_SECRET_KEY makes stored webhook secrets unreadable: rotate them then.
"""

from __future__ import annotations

import base64
import os
from functools import lru_cache

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = "v1"


@lru_cache(maxsize=8)
def _aead(master_key: str) -> AESGCM:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"agentrail webhook secrets v1").derive(
        master_key.encode()
    )
    return AESGCM(key)


def seal(plaintext: str, master_key: str, *, context: str) -> str:
    """`context` (the endpoint id) is bound as associated data: a ciphertext moved to another row fails."""
    nonce = os.urandom(12)
    sealed = _aead(master_key).encrypt(nonce, plaintext.encode(), context.encode())
    return f"{VERSION}:" + base64.b64encode(nonce + sealed).decode()


def open_sealed(token: str, master_key: str, *, context: str) -> str:
    version, _, data = token.partition(":")
    if version != VERSION:
        raise ValueError("unknown secret encoding")
    raw = base64.b64decode(data)
    return _aead(master_key).decrypt(raw[:12], raw[12:], context.encode()).decode()
