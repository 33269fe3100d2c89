"""What PostgreSQL says about the data never reaches a log line (app/runtime/logging.py): real database errors
(a unique violation's DETAIL, a data error quoting its input, asyncpg quoting a statement parameter), logged every
way the service logs them, in JSON and in the console format, captured from the process's stderr."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
import structlog
from graphql import GraphQLError, located_error

from app.db import Database
from app.runtime.logging import configure_logging
from app.settings import Settings

UNIQUE_SECRET = "sekrit-unique-4711@example.com"
INT_SECRET = "sekrit-int-4711"
JSON_SECRET = '{"sekrit-json-4711'
LOCAL_SECRET = "sekrit-local-4711"
SECRETS = (UNIQUE_SECRET, INT_SECRET, "sekrit-json-4711", LOCAL_SECRET)


async def _database_errors(database_url: str) -> list[BaseException]:
    """A unique violation, a parameter asyncpg refuses, and a value PostgreSQL refuses, from the real server."""
    db = Database(database_url, pool_size=1, max_overflow=0)
    found: list[BaseException] = []
    try:
        async with db.system_session() as session:
            await session.execute(sa.text("CREATE TEMP TABLE leaky (email text CONSTRAINT leaky_email_key UNIQUE)"))
            insert = sa.text("INSERT INTO leaky (email) VALUES (:email)")
            await session.execute(insert, {"email": UNIQUE_SECRET})
            with pytest.raises(sa.exc.IntegrityError) as unique:
                await session.execute(insert, {"email": UNIQUE_SECRET})
            found.append(unique.value)
        for statement, value in (
            ("SELECT CAST(:v AS integer)", INT_SECRET),
            ("SELECT CAST(:v AS text)::jsonb", JSON_SECRET),
        ):
            async with db.system_session() as session:
                with pytest.raises(sa.exc.DBAPIError) as caught:
                    await session.execute(sa.text(statement), {"v": value})
                found.append(caught.value)
    finally:
        await db.dispose()
    return found


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    config = structlog.get_config()
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.configure(**config)


def _raise_with_a_secret_local(exc: BaseException) -> None:
    token = LOCAL_SECRET  # a frame's local: never rendered (a rich traceback would show it)
    raise RuntimeError(f"the operation failed ({len(token)})") from exc


@pytest.mark.parametrize("log_json", [True, False])
async def test_database_error_details_never_reach_a_log_line(
    database_url: str, capsys: pytest.CaptureFixture[str], restored_logging: None, log_json: bool
) -> None:
    errors = await _database_errors(database_url)
    # the values are in the errors' text (SQLAlchemy's, or that of the asyncpg error it was raised from): what
    # a plain traceback would log
    plain = ["".join(traceback.format_exception(exc)) for exc in errors]
    assert UNIQUE_SECRET in plain[0] and INT_SECRET in plain[1] and "sekrit-json-4711" in plain[2]
    assert INT_SECRET in str(errors[1])
    configure_logging(Settings(log_json=log_json, log_level="INFO"))
    log = structlog.get_logger("test.leaks")
    stdlib = logging.getLogger("uvicorn.error")
    for exc in errors:
        log.error("unexpected error", exc_info=exc)  # the GraphQL formatter's way
        try:
            raise exc
        except Exception:
            log.exception("export failed")  # a job's way
        stdlib.error("Exception in ASGI application", exc_info=(type(exc), exc, exc.__traceback__))  # uvicorn's
        wrapped: Any = located_error(exc, None, ["auditLogs"])  # graphql-core copies the text into its message
        log.error("unexpected error", exc_info=GraphQLError(wrapped.message, original_error=exc))
        try:
            _raise_with_a_secret_local(exc)
        except RuntimeError as chained:
            log.error("unexpected error", exc_info=chained)
        log.warning("statement failed", error=str(exc))  # a message built from the text itself
        driver = exc.orig.__cause__  # type: ignore[attr-defined]
        log.warning("statement failed", error=str(driver), exc=driver)  # asyncpg's own text: with its DETAIL
    out = capsys.readouterr()
    logged = out.err + out.out
    for secret in SECRETS:
        assert secret not in logged, (secret, logged[logged.find(secret) - 800 : logged.find(secret) + 200])
    # what helps an operator stays: the kind of error, its SQLSTATE, the constraint, the statement
    assert "UniqueViolationError SQLSTATE 23505" in logged
    assert "constraint leaky_email_key" in logged
    assert "INSERT INTO leaky (email) VALUES" in logged
    assert "invalid input for query argument $1" in logged
    assert "invalid input syntax for type json" in logged
    assert "DETAIL: [withheld]" in logged  # the message built from the text: cut
    assert logged.count("Traceback (most recent call last)") >= 5 * len(errors)
