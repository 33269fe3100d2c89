"""The token-signing secret: from settings, or generated once and kept in the data folder."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from app.settings import ConfigurationError, Settings

SECRET_FILE = "secret_key"


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
