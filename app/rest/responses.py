"""Shared pieces of the REST routes: JSON responses, `{"error", "status"}` errors, the authorised caller."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from app.db import iso
from app.errors import AppError, Unauthenticated
from app.files.models import StoredFile
from app.files.store import FileStore
from app.principal import Principal


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


def error_response(error: AppError) -> JSONResponse:
    body: dict[str, Any] = {"error": error.message, "status": error.http_status, "code": error.code}
    body.update({k: v for k, v in error.extensions.items() if k not in body})
    retry_after = getattr(error, "retry_after", None)  # RATE_LIMITED and UNAVAILABLE
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse(body, status_code=error.http_status, headers=headers)


def principal_of(request: Request) -> Principal:
    """The caller, already authorised by the route's declaration (app/api/permissions.py)."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        raise Unauthenticated("authentication required: send `X-API-Key` or `Authorization: Bearer …`")
    return principal


def stored_file_response(files: FileStore, file: StoredFile) -> StreamingResponse:
    """A stored export or report as a download: streamed chunk by chunk, with its length and name."""
    filename = file.filename.replace('"', "")
    return StreamingResponse(
        files.chunks(file),
        media_type=file.content_type,
        headers={
            "Content-Length": str(file.size_bytes),
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "private, no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


def answers(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint whose AppErrors are answered `{"error", "status", "code"}` (its other attributes kept)."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except AppError as exc:
            return error_response(exc)

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    endpoint.__dict__.update(handler.__dict__)
    return endpoint


def source_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def camel(name: str) -> str:
    head, *rest = name.rstrip("_").split("_")
    return head + "".join(part.title() for part in rest)


def row_json(row: Any, *, hide: tuple[str, ...] = ("org_id", "seq"), **renamed: str) -> dict[str, Any]:
    """A table row (SQLModel) or dataclass as JSON: camelCase names, ISO 8601 times, `hide` left out."""
    values = (
        dataclasses.asdict(row) if dataclasses.is_dataclass(row) and not isinstance(row, type) else dict(row.__dict__)
    )
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name.startswith("_") or name in hide:
            continue
        if isinstance(value, datetime):
            value = iso(value)
        out[renamed.get(name) or camel(name)] = value
    return out
