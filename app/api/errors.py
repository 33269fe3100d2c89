"""Turns every GraphQL error into one with `extensions.code`; unexpected ones are masked and logged."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar

import structlog
from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from app.db import is_statement_timeout
from app.errors import AppError, unavailable
from app.runtime.telemetry import ERRORS, GRAPHQL_LATENCY, GRAPHQL_OPERATIONS

log = structlog.get_logger("app.api")

INTERNAL_MESSAGE = "Internal server error"


def format_error(error: GraphQLError, request_id: str) -> GraphQLError:
    original = error.original_error
    while isinstance(original, GraphQLError) and original.original_error is not None:
        original = original.original_error
    if original is not None and not isinstance(original, AppError) and (outage := unavailable(original)):
        log.warning("dependency unavailable", request_id=request_id, path=error.path, error=type(original).__name__)
        original = outage
    if isinstance(original, AppError):
        code = original.code
        extensions = {"code": code, **original.extensions}
        message = original.message
    elif original is None or (error.path is None and isinstance(error.original_error, GraphQLError)):
        # parse and validation errors (including the limits), and variables that do not coerce (an unknown
        # enum value wraps a KeyError): the client's document is at fault
        code = (error.extensions or {}).get("code") or "BAD_USER_INPUT"
        extensions = {**(error.extensions or {}), "code": code}
        message = error.message
    elif is_statement_timeout(original):
        code = "TIMEOUT"
        extensions = {"code": code, "retryAfter": 1}
        message = "the operation's database work took longer than the statement timeout: ask for less at once"
    else:
        code = "INTERNAL"
        log.error("unexpected error", request_id=request_id, path=error.path, exc_info=original)
        extensions = {"code": code, "requestId": request_id}
        message = INTERNAL_MESSAGE
    ERRORS.labels(code=code).inc()
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=None,
        extensions=extensions,
    )


class ErrorCodes(SchemaExtension):
    """Formats errors and records per-operation metrics; closes the request's DB session."""

    async def on_operation(self) -> AsyncIterator[None]:
        started = time.perf_counter()
        yield
        ctx = self.execution_context
        try:
            operation_type = ctx.operation_type.value
        except RuntimeError:  # the document did not parse
            operation_type = "unknown"
        if operation_type != "subscription":
            close = getattr(ctx.context, "close", None)
            if close is not None:
                await close()
        name = ctx.operation_name or "anonymous"
        GRAPHQL_OPERATIONS.labels(operation=name, type=operation_type).inc()
        GRAPHQL_LATENCY.labels(operation=name, type=operation_type).observe(time.perf_counter() - started)
        result = ctx.result
        request_id = getattr(ctx.context, "request_id", "")
        errors = getattr(result, "errors", None)
        if result is not None and errors:
            result.errors = [format_error(e, request_id) for e in errors]
        if ctx.pre_execution_errors:
            ctx.pre_execution_errors = [format_error(e, request_id) for e in ctx.pre_execution_errors]

    def on_stream_result(self, result: Any) -> Iterator[None]:
        # a subscription's results (and what it refused before it started) do not pass on_operation's end
        errors = getattr(result, "errors", None)
        if errors:
            request_id = getattr(self.execution_context.context, "request_id", "")
            result.errors = [format_error(e, request_id) for e in errors]
        yield


class DocumentCache(SchemaExtension):
    """Reuses the parsed document of a query text seen before (agents send the same few documents over and
    over). Only successful parses are cached, so parse errors and the token limit keep their usual path;
    reusing the same document object also lets the validation cache hit."""

    _documents: ClassVar[OrderedDict[str, Any]] = OrderedDict()
    MAX_DOCUMENTS = 512

    def on_parse(self) -> Iterator[None]:
        ctx = self.execution_context
        query = ctx.query
        cached = self._documents.get(query) if query is not None else None
        if cached is not None and query is not None:
            ctx.graphql_document = cached
            self._documents.move_to_end(query)
        yield
        if cached is None and query is not None and ctx.graphql_document is not None:
            self._documents[query] = ctx.graphql_document
            if len(self._documents) > self.MAX_DOCUMENTS:
                self._documents.popitem(last=False)
