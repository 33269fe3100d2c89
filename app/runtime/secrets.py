"""The token-signing secret: from settings, or generated once and kept in the data folder."""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import time
from pathlib import Path

from app.settings import ConfigurationError, Settings

SECRET_FILE = "secret_key"
SIGNING_KEY_FILE = "audit_signing_key"


def resolve_secret_key(settings: Settings) -> str:
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value()
    if settings.is_production:
        raise ConfigurationError("AGENTRAIL_SECRET_KEY is required in production")
    path = Path(settings.data_dir) / SECRET_FILE
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    # written with 0600 from the start: the file never exists with wider permissions
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    return value


def _write_new(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)


def resolve_signing_key(settings: Settings) -> bytes:
    """The 32-byte Ed25519 seed that signs audit digests: AGENTRAIL_AUDIT_SIGNING_KEY (base64 seed or PEM),
    else the data folder's `audit_signing_key` file, created on first use."""
    if settings.audit_signing_key is not None:
        return signing_seed(settings.audit_signing_key.get_secret_value())
    path = Path(settings.data_dir) / SIGNING_KEY_FILE
    if not path.exists():
        with contextlib.suppress(FileExistsError):  # another process of this data folder created it meanwhile
            _write_new(path, base64.b64encode(secrets.token_bytes(32)).decode())
    return signing_seed(path.read_text())


def rotate_signing_key_file(settings: Settings) -> Path:
    """A new key in the data folder; the previous file is kept beside it (`audit_signing_key.<time>`)."""
    path = Path(settings.data_dir) / SIGNING_KEY_FILE
    if path.exists():
        path.rename(path.with_name(f"{SIGNING_KEY_FILE}.{int(time.time())}"))
    _write_new(path, base64.b64encode(secrets.token_bytes(32)).decode())
    return path


def signing_seed(text: str) -> bytes:
    text = text.strip()
    if text.startswith("-----BEGIN"):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = serialization.load_pem_private_key(text.encode(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigurationError("the audit signing key must be an Ed25519 key")
        return key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
    try:
        seed = base64.b64decode(text, validate=True)
    except ValueError:
        seed = b""
    if len(seed) != 32:
        raise ConfigurationError("the audit signing key must be base64 of 32 bytes or an Ed25519 PEM")
    return seed
