"""Errors that domain services raise on purpose. Each carries the code clients see.

GraphQL puts `code` (and any extra fields) into `extensions`; REST answers `{"error", "status"}`
with the HTTP status below. Anything else that escapes is INTERNAL and its message is masked.
"""

from __future__ import annotations

from typing import Any, ClassVar


class AppError(Exception):
    code: ClassVar[str] = "INTERNAL"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, **extensions: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extensions = {k: v for k, v in extensions.items() if v is not None}


class BadUserInput(AppError):
    code = "BAD_USER_INPUT"
    http_status = 400

    def __init__(self, message: str, *, problems: list[dict[str, Any]] | None = None, **extensions: Any) -> None:
        super().__init__(message, problems=problems, **extensions)


class Unauthenticated(AppError):
    code = "UNAUTHENTICATED"
    http_status = 401


class Forbidden(AppError):
    code = "FORBIDDEN"
    http_status = 403


class NotFound(AppError):
    code = "NOT_FOUND"
    http_status = 404


class MethodNotAllowed(AppError):
    code = "METHOD_NOT_ALLOWED"
    http_status = 405


class Conflict(AppError):
    code = "CONFLICT"
    http_status = 409


class PayloadTooLarge(AppError):
    code = "BAD_USER_INPUT"
    http_status = 413


class RateLimited(AppError):
    code = "RATE_LIMITED"
    http_status = 429

    def __init__(self, message: str, *, retry_after: int, **extensions: Any) -> None:
        super().__init__(message, retryAfter=max(1, int(retry_after)), **extensions)
        self.retry_after = max(1, int(retry_after))


class QuotaExceeded(AppError):
    code = "QUOTA_EXCEEDED"
    http_status = 402


class SubscriberTooSlowError(AppError):
    """A live subscriber could not keep up and was disconnected; it resumes with its last cursor."""

    code = "SUBSCRIBER_TOO_SLOW"
    http_status = 409

    def __init__(
        self,
        message: str = "this subscriber fell too far behind and was disconnected; resume with a cursor",
        **extensions: Any,
    ) -> None:
        super().__init__(message, **extensions)


class Unavailable(AppError):
    """A dependency (PostgreSQL, Redis) cannot be reached right now; the client retries after `retry_after`."""

    code = "UNAVAILABLE"
    http_status = 503

    def __init__(self, message: str, *, retry_after: int = 5, **extensions: Any) -> None:
        super().__init__(message, retryAfter=max(1, int(retry_after)), **extensions)
        self.retry_after = max(1, int(retry_after))


# SQLSTATE classes and codes that mean "the server is not reachable or not accepting work right now":
# connection exceptions, shutting down / starting up, too many connections
_UNAVAILABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300")


def _sqlstate(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return str(getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or "")


def unavailable(exc: BaseException) -> Unavailable | None:
    """The one mapping of connection-level failures (asyncpg, SQLAlchemy, redis, sockets) to UNAVAILABLE, or
    None for anything else. Looks through the causes a few levels deep: drivers and frameworks wrap them."""
    import sqlalchemy.exc as sa_exc
    from redis import exceptions as redis_exc

    current: BaseException | None = exc
    for _ in range(6):
        if current is None or isinstance(current, AppError):
            return current if isinstance(current, Unavailable) else None
        if isinstance(current, redis_exc.ConnectionError | redis_exc.TimeoutError | redis_exc.BusyLoadingError):
            return Unavailable("Redis is unavailable; retry later")
        if isinstance(current, sa_exc.DBAPIError):
            state = _sqlstate(current)
            if state == "57014":  # a statement timeout: the request's own cost, not an outage
                return None
            if (
                current.connection_invalidated
                or state.startswith(_UNAVAILABLE_SQLSTATES)
                or isinstance(current, sa_exc.InterfaceError)
                or (isinstance(current, sa_exc.OperationalError) and not state)
            ):
                return Unavailable("the database is unavailable; retry later")
        if isinstance(current, sa_exc.TimeoutError | sa_exc.DisconnectionError | OSError):
            # pool exhausted, or the socket itself: asyncpg's connect errors reach us unwrapped
            return Unavailable("the database is unavailable; retry later")
        if type(current).__module__.startswith("asyncpg") and type(current).__name__ in _ASYNCPG_CONNECTION_ERRORS:
            return Unavailable("the database is unavailable; retry later")
        current = current.__cause__ or current.__context__
    return None


_ASYNCPG_CONNECTION_ERRORS = frozenset(
    {"ConnectionDoesNotExistError", "CannotConnectNowError", "PostgresConnectionError", "ConnectionFailureError"}
)
