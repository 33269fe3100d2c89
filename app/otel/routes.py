"""POST /v1/traces and /v1/logs: the OTLP/HTTP receivers (protobuf or JSON, gzip/deflate or not).

Answers as the OTLP/HTTP specification asks: 200 with an ExportTraceServiceResponse (ExportLogsServiceResponse)
in the request's encoding (`partial_success` when some were rejected), and for errors a google.rpc.Status in the
request's encoding: 400 undecodable, 401/403, 413 too large (also after decompression), 415 unsupported
content type or encoding, 429/503 with Retry-After (exporters retry those, and only those).
"""

from __future__ import annotations

import structlog
from prometheus_client import Counter
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.errors import AppError, RateLimited, unavailable
from app.otel import decode
from app.otel import service as otel
from app.rest.media import media_type
from app.rest.openapi import documented
from app.rest.responses import principal_of
from app.runtime.telemetry import ERRORS, REGISTRY

log = structlog.get_logger(__name__)

SPANS = Counter(
    "agentrail_otlp_spans_total",
    "OTLP spans received, by outcome: written, duplicate (already stored), rejected",
    ["outcome"],
    registry=REGISTRY,
)

LOG_RECORDS = Counter(
    "agentrail_otlp_log_records_total",
    "OTLP log records received, by outcome: received, rejected; and the records written from them",
    ["outcome"],
    registry=REGISTRY,
)

OVERLOAD_RETRY_AFTER = 1


class _InFlight:
    """Exports being processed by this process. Past the database pool's size more would only queue
    for a connection while holding their bodies in memory: they are told to come back instead."""

    count = 0


def _respond(encoded: decode.Encoded, status: int = 200, retry_after: int | None = None) -> Response:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return Response(encoded.body, status_code=status, media_type=encoded.media_type, headers=headers)


def _error(status: int, message: str, encoding: str, *, retry_after: int | None = None, code: str = "") -> Response:
    ERRORS.labels(code=code or f"OTLP_{status}").inc()
    return _respond(decode.status_body(status, message, encoding, retry_after=retry_after), status, retry_after)


def count_outcome(outcome: otel.ExportOutcome, *, logs: bool) -> None:
    """The export's figures in /metrics, the same for OTLP over HTTP and over gRPC."""
    if logs:
        counter, figures = LOG_RECORDS, (("received", outcome.received), ("written", outcome.written))
    else:
        counter, figures = SPANS, (("written", outcome.written), ("duplicate", outcome.duplicates))
    for label, value in (*figures, ("rejected", outcome.rejected)):
        if value:
            counter.labels(outcome=label).inc(value)


def _failure(exc: Exception, encoding: str, request: Request) -> Response:
    if isinstance(exc, decode.WireError):
        return _error(exc.status, exc.message, encoding)
    if isinstance(exc, RateLimited):
        return _error(429, exc.message, encoding, retry_after=exc.retry_after, code=exc.code)
    if isinstance(exc, AppError):
        return _error(exc.http_status, exc.message, encoding, code=exc.code)
    if (outage := unavailable(exc)) is not None:
        log.warning("otlp export refused: a dependency is unavailable", error=type(exc).__name__)
        return _error(503, outage.message, encoding, retry_after=outage.retry_after, code=outage.code)
    log.error("otlp export failed", exc_info=exc)
    request_id = request.scope.get("state", {}).get("request_id")
    return _error(500, f"internal error (request id {request_id})", encoding, code="INTERNAL")


def _client_encoding(request: Request) -> str:
    # error bodies before the content type is checked: protobuf if that is what the client speaks
    return decode.PROTOBUF if "protobuf" in media_type(request.headers.get("content-type")) else decode.JSON


@documented("OTLP/HTTP traces (protobuf or JSON)")
async def export_traces(request: Request) -> Response:
    return await _export(request, logs=False)


@documented("OTLP/HTTP logs (protobuf or JSON)")
async def export_logs(request: Request) -> Response:
    return await _export(request, logs=True)


async def _export(request: Request, *, logs: bool) -> Response:
    runtime = request.app.state.runtime
    settings = runtime.settings
    header = request.headers.get("content-type")
    encoding = _client_encoding(request)
    if _InFlight.count >= settings.db_pool_size + settings.db_max_overflow:
        return _error(503, "too many exports in progress; retry later", encoding, retry_after=OVERLOAD_RETRY_AFTER)
    _InFlight.count += 1
    try:
        try:
            principal = principal_of(request)
            encoding = decode.content_type(header)
        except Exception as exc:
            return _failure(exc, encoding, request)
        # outside the handlers above: the request middleware answers 413 itself when the body is too large
        body = await request.body()
        try:
            payload = decode.decompress(
                body, request.headers.get("content-encoding"), max_bytes=settings.max_request_bytes
            )
            client = request.client.host if request.client else None
            if logs:
                logs_export = decode.decode_logs_request(payload, encoding)
                del body, payload
                outcome = await otel.export_logs(runtime, principal, logs_export, source_ip=client)
            else:
                export = decode.decode_request(payload, encoding)
                del body, payload
                outcome = await otel.export(runtime, principal, export, source_ip=client)
        except Exception as exc:
            return _failure(exc, encoding, request)
    finally:
        _InFlight.count -= 1
    count_outcome(outcome, logs=logs)
    if outcome.rejected and outcome.rejected == outcome.received:
        # nothing accepted: a permanent failure, which the specification answers with 400 (partial success
        # is for requests of which some spans were stored)
        return _error(400, outcome.error_message(), encoding, code="BAD_USER_INPUT")
    respond = decode.logs_response if logs else decode.export_response
    return _respond(respond(outcome.rejected, outcome.error_message(), encoding))


# refusals of the route's permission declaration (app/otel/auth.py) are OTLP answers too
for _route in (export_traces, export_logs):
    _route.render_error = lambda request, error: _failure(  # type: ignore[attr-defined]
        error, _client_encoding(request), request
    )

routes = [Route("/v1/traces", export_traces, methods=["POST"]), Route("/v1/logs", export_logs, methods=["POST"])]
