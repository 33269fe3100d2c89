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
