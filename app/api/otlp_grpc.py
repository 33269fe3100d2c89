"""OTLP over gRPC (the collectors' default, port 4317): TraceService/Export and LogsService/Export.

An option of `agentrail serve` (`--otlp-grpc-port`, `AGENTRAIL_OTLP_GRPC_PORT`; off unless set), served by
grpcio's asyncio server in the API process, beside uvicorn. The same as OTLP/HTTP in everything but the wire:
the API key (or a user token) in the call's metadata (`x-api-key`, or `authorization: Bearer …`), the
permission declarations of `POST /v1/traces` and `POST /v1/logs`, the key's rate limit, the request size limit
(`AGENTRAIL_MAX_REQUEST_BYTES`, gRPC's maximum received message), the same in-flight cap, and the same mapping
and ingest (`app.otel.service`). Answers: the Export*ServiceResponse (`partial_success` when some were
rejected), or the gRPC status OTLP specifies: UNAUTHENTICATED, PERMISSION_DENIED, INVALID_ARGUMENT (nothing
acceptable), RESOURCE_EXHAUSTED (rate limited or over quota; with a RetryInfo detail when retrying helps),
UNAVAILABLE (a dependency is down, or the node is saturated; with RetryInfo), INTERNAL. Plaintext (h2c), like
the HTTP port: terminate TLS in front of it (a load balancer or the collector) outside a trusted network.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

import grpc
import structlog
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from app.api.auth import authenticate
from app.api.permissions import declarations
from app.errors import AppError, RateLimited, Unauthenticated, unavailable
from app.orgs.credentials import TokenSigner
from app.otel import service as otel
from app.otel.routes import OVERLOAD_RETRY_AFTER, _InFlight, count_outcome
from app.principal import Principal
from app.runtime.resources import Runtime
from app.runtime.telemetry import ERRORS
from app.settings import Settings

log = structlog.get_logger(__name__)

# HTTP status of an AppError -> the gRPC code OTLP/gRPC answers with
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    402: grpc.StatusCode.RESOURCE_EXHAUSTED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.retry_after = code, message, retry_after


def _metadata(context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, str]:
    return {key.lower(): value for key, value in (context.invocation_metadata() or ()) if isinstance(value, str)}


def _peer_host(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    peer = context.peer() or ""  # "ipv4:127.0.0.1:53422", "ipv6:[::1]:53422"
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return None
    host = rest.rsplit(":", 1)[0]
    return host.strip("[]") or None


_Response = TypeVar(
    "_Response", trace_service_pb2.ExportTraceServiceResponse, logs_service_pb2.ExportLogsServiceResponse
)


class _Receiver:
    def __init__(self, runtime: Runtime, signer: TokenSigner) -> None:
        self.runtime = runtime
        self.signer = signer

    async def _principal(self, context: grpc.aio.ServicerContext[Any, Any], operation: str) -> Principal:
        principal = await authenticate(_metadata(context), runtime=self.runtime, signer=self.signer)
        if principal is None:
            raise Unauthenticated("authentication required: send `x-api-key` or `authorization: Bearer …` metadata")
        declarations()[operation][1].authorize(principal)
        return principal

    async def run(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        operation: str,
        work: Callable[[Principal, str | None], Awaitable[otel.ExportOutcome]],
    ) -> otel.ExportOutcome:
        settings = self.runtime.settings
        if _InFlight.count >= settings.db_pool_size + settings.db_max_overflow:
            await self._abort(
                context,
                _Abort(grpc.StatusCode.UNAVAILABLE, "too many exports in progress; retry later", OVERLOAD_RETRY_AFTER),
            )
        _InFlight.count += 1
        try:
            principal = await self._principal(context, operation)
            outcome = await work(principal, _peer_host(context))
        except Exception as exc:  # every failure becomes its gRPC status
            await self._abort(context, self._status_of(exc, context))
            raise AssertionError("unreachable") from None  # context.abort raises
        finally:
            _InFlight.count -= 1
        if outcome.rejected and outcome.rejected == outcome.received:
            await self._abort(context, _Abort(grpc.StatusCode.INVALID_ARGUMENT, outcome.error_message()))
        return outcome

    def _status_of(self, exc: Exception, context: grpc.aio.ServicerContext[Any, Any]) -> _Abort:
        if isinstance(exc, RateLimited):
            return _Abort(grpc.StatusCode.RESOURCE_EXHAUSTED, exc.message, exc.retry_after)
        if isinstance(exc, AppError):
            return _Abort(_CODES.get(exc.http_status, grpc.StatusCode.INTERNAL), exc.message)
        if (outage := unavailable(exc)) is not None:
            log.warning("otlp/grpc export refused: a dependency is unavailable", error=type(exc).__name__)
            return _Abort(grpc.StatusCode.UNAVAILABLE, outage.message, outage.retry_after)
        log.error("otlp/grpc export failed", exc_info=exc)
        return _Abort(grpc.StatusCode.INTERNAL, "internal error")

    @staticmethod
    async def _abort(context: grpc.aio.ServicerContext[Any, Any], abort: _Abort) -> None:
        ERRORS.labels(code=f"OTLP_GRPC_{abort.code.name}").inc()
        trailing: tuple[tuple[str, str | bytes], ...] = ()
        if abort.retry_after is not None:
            # a google.rpc.Status with RetryInfo: OTLP exporters wait that long before retrying
            status = status_pb2.Status(code=abort.code.value[0], message=abort.message)
            status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=Duration(seconds=abort.retry_after)))
            trailing = (("grpc-status-details-bin", status.SerializeToString()),)
        await context.abort(abort.code, abort.message, trailing_metadata=trailing)

    async def export(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        request: Any,
        *,
        logs: bool,
        response: _Response,
        rejected_field: str,
    ) -> _Response:
        """One OTLP export (traces or logs): `response` gets a partial success when some items were rejected."""
        runtime = self.runtime
        export = otel.export_logs if logs else otel.export

        async def work(principal: Principal, peer: str | None) -> otel.ExportOutcome:
            return await export(runtime, principal, request, source_ip=peer)

        outcome = await self.run(context, "POST /v1/logs" if logs else "POST /v1/traces", work)
        count_outcome(outcome, logs=logs)
        if outcome.rejected:
            setattr(response.partial_success, rejected_field, outcome.rejected)
            response.partial_success.error_message = outcome.error_message()
        return response


class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: _Receiver) -> None:
        self.receiver = receiver

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        response = trace_service_pb2.ExportTraceServiceResponse()
        return await self.receiver.export(
            context, request, logs=False, response=response, rejected_field="rejected_spans"
        )


class LogsService(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, receiver: _Receiver) -> None:
        self.receiver = receiver

    async def Export(
        self, request: logs_service_pb2.ExportLogsServiceRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> logs_service_pb2.ExportLogsServiceResponse:
        response = logs_service_pb2.ExportLogsServiceResponse()
        return await self.receiver.export(
            context, request, logs=True, response=response, rejected_field="rejected_log_records"
        )


async def start_server(
    runtime: Runtime, settings: Settings, *, host: str, port: int, signer: TokenSigner | None = None
) -> tuple[grpc.aio.Server, int]:
    """Starts the OTLP/gRPC receiver on host:port (0: a free port); returns the server and its port."""
    signer = signer or TokenSigner(
        runtime.secret_key, issuer=settings.jwt_issuer, lifetime=timedelta(minutes=settings.access_token_minutes)
    )
    limit = settings.max_request_bytes
    server = grpc.aio.server(
        options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", 4 * 1024 * 1024)],
        maximum_concurrent_rpcs=4 * (settings.db_pool_size + settings.db_max_overflow),
    )
    receiver = _Receiver(runtime, signer)
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(receiver), server)
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(LogsService(receiver), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if not bound:
        raise RuntimeError(f"cannot listen for OTLP/gRPC on {host}:{port}")
    await server.start()
    return server, bound
