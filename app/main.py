"""Starlette application factory: /graphql (HTTP + graphql-transport-ws), REST routes, lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from contextvars import ContextVar
from datetime import timedelta
from typing import Any

import orjson
import structlog
from cross_web import HTTPException
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse, process_result
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.subscriptions import (
    GRAPHQL_SSE_PROTOCOL,
    GRAPHQL_TRANSPORT_WS_PROTOCOL,
    MULTIPART_SUBSCRIPTION_PROTOCOL,
)
from strawberry.types import ExecutionResult, SubscriptionExecutionResult
from strawberry.types.graphql import OperationType
from strawberry.types.unset import UNSET
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

import app.models  # noqa: F401  every table known before the first session, so foreign keys resolve
from app.activity.service import REQUEST_ORIGIN
from app.api.context import Context
from app.api.http_media import GRAPHQL_RESPONSE_JSON, JSON, is_request_error, negotiate, request_error_status
from app.api.http_subscriptions import MultipartSubscriptions, bound_to_credential
from app.api.open_connections import ClosesWhenCredentialEnds, OpenConnections, watch_credentials
from app.api.permissions import guard_routes
from app.api.response_encoding import PIECEWISE_ABOVE, PiecewiseJSONResponse, estimate
from app.api.schema import build_schema
from app.api.shared_subscriptions import SharedSubscriptions, SharingTransportWSHandler
from app.api.websocket_protocol import CLOSE_FORBIDDEN, SendsPings, rejection_reason
from app.audit import published as audit_published
from app.db import InvalidJSON, request_json
from app.errors import AppError, MethodNotAllowed, NotFound, PayloadTooLarge, Unavailable, unavailable
from app.guardrails.cache import listen_for_rule_changes
from app.orgs.credentials import TokenSigner
from app.rest.media import lowered, media_type
from app.rest.responses import JSONResponse, error_response
from app.runtime import heartbeat
from app.runtime.connections import CancelOnDisconnect, HoldRefusals
from app.runtime.resources import Runtime
from app.runtime.telemetry import ERRORS, HTTP_LATENCY, HTTP_REQUESTS, POOL_COLLECTOR, REGISTRY
from app.settings import Settings
from app.usage.middleware import BillingMiddleware

log = structlog.get_logger(__name__)


class TextWebSocketAdapter(ASGIWebSocketAdapter):
    """Sends every graphql-transport-ws message as a text frame, as the protocol and browser clients expect
    (strawberry would send binary frames when the JSON encoder returns bytes)."""

    async def send_json(self, message: Any) -> None:
        try:
            await self.ws.send_text(orjson.dumps(message).decode())
        except (WebSocketDisconnect, RuntimeError) as exc:  # RuntimeError: we closed it (a credential ended)
            raise WebSocketDisconnected from exc

    async def close(self, code: int, reason: str) -> None:
        rejection = getattr(self.ws.state, "ws_rejection", None)
        if code == CLOSE_FORBIDDEN and reason == "Forbidden" and rejection is not None:
            reason = rejection_reason(rejection)  # strawberry's refusal of connection_init, with its reason
        await super().close(code, reason)


# the media type the current HTTP request is answered with (negotiated in AgentrailGraphQL.run)
_RESPONSE_MEDIA: ContextVar[str] = ContextVar("graphql_response_media", default=JSON)


class _HTTPError(HTTPException):
    """An HTTP-level refusal with headers (405's Allow)."""

    def __init__(self, status_code: int, reason: str, headers: dict[str, str]) -> None:
        super().__init__(status_code, reason)
        self.headers = headers


class _MediaTypeLowered:
    """A request adapter whose Content-Type media type reads lower-cased (its parameters as sent): strawberry
    compares it case-sensitively."""

    def __init__(self, request: Any) -> None:
        self._request = request

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)

    @property
    def content_type(self) -> str | None:
        return lowered(self._request.content_type)


class AgentrailGraphQL(GraphQL[Context, None]):
    websocket_adapter_class = TextWebSocketAdapter
    stream_transport_classes_by_protocol = {
        **GraphQL.stream_transport_classes_by_protocol,
        MULTIPART_SUBSCRIPTION_PROTOCOL: MultipartSubscriptions,
    }

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(
            build_schema(settings),
            graphql_ide="graphiql" if settings.graphql_ide else None,
            allow_queries_via_get=True,
            # WebSocket, and subscriptions over HTTP: multipart (Apollo) and SSE (app/api/http_subscriptions.py)
            subscription_protocols=(
                GRAPHQL_TRANSPORT_WS_PROTOCOL,
                MULTIPART_SUBSCRIPTION_PROTOCOL,
                GRAPHQL_SSE_PROTOCOL,
            ),
            max_subscriptions_per_connection=settings.max_subscriptions_per_connection,
            connection_init_wait_timeout=timedelta(seconds=10),
            **kwargs,
        )
        self.max_response_bytes = settings.max_response_bytes
        # identical live subscriptions share one execution per process (see app/api/shared_subscriptions.py)
        self.graphql_transport_ws_handler_class = type(
            "AgentrailTransportWSHandler",
            (SendsPings, ClosesWhenCredentialEnds, SharingTransportWSHandler),
            {
                "ping_interval": settings.ws_ping_interval_seconds,
                "shared": SharedSubscriptions(flush_interval=settings.live_flush_interval_ms / 1000),
                "max_buffered_bytes": settings.subscriber_max_buffered_bytes,
                "max_queued_results": settings.subscriber_queue_size,
            },
        )

    def encode_json(self, data: object) -> bytes:
        encoded = orjson.dumps(data)
        if len(encoded) > self.max_response_bytes:
            return self._too_large(len(encoded))
        return encoded

    def _too_large(self, size: int) -> bytes:
        # the cost limit keeps most answers far below this; what still outgrows it is refused, not sent
        message = (
            f"the response would be {size} bytes, more than the limit of {self.max_response_bytes}: "
            "ask for fewer or smaller fields (prompts, responses, metadata) or smaller pages"
        )
        error = {"message": message, "extensions": {"code": "BAD_USER_INPUT", "limit": self.max_response_bytes}}
        return orjson.dumps({"data": None, "errors": [error]})

    def decode_json(self, data: str | bytes) -> object:
        # the request decoding of every path (app/db.py): orjson, integers exactly, bounded nesting, no NUL;
        # InvalidJSON is a JSONDecodeError, so a WebSocket message that fails closes 4400
        return request_json(data)

    def parse_json(self, data: str | bytes) -> Any:
        try:
            value = request_json(data)
        except InvalidJSON as exc:
            raise HTTPException(400, exc.message) from None
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(item, dict) for item in items):
            raise HTTPException(400, 'the body must be a JSON object: {"query": "…", "variables": {…}}')
        return value

    async def parse_http_body(self, request: Any) -> Any:
        if request.method == "POST":
            if media_type(request.content_type) != "application/json":
                raise HTTPException(415, "the request body must be application/json (GraphQL over HTTP)")
            request = _MediaTypeLowered(request)  # media types are case-insensitive (RFC 9110 8.3.1)
        data = await super().parse_http_body(request)
        for item in data if isinstance(data, list) else [data]:
            if item.query is not None and ("\\u0000" in item.query or "\x00" in item.query):
                # a NUL spelled as a GraphQL escape: PostgreSQL stores no NUL, so no argument may hold one
                raise HTTPException(400, "the document must not contain NUL characters (\\u0000)")
        return data

    async def execute_operation(
        self, request: Any, request_adapter: Any, request_data: Any, context: Any, root_value: Any, sub_response: Any
    ) -> Any:
        streaming = not isinstance(request_data, list) and request_data.protocol != "http"
        if streaming:
            await context.principal()  # as a WebSocket's connection_init: no credential, no stream (401)
        result = await super().execute_operation(
            request, request_adapter, request_data, context, root_value, sub_response
        )
        if streaming and isinstance(result, SubscriptionExecutionResult):
            return bound_to_credential(result, context, request.app.state.open_connections)
        return result

    async def execute_single(self, *args: Any, **kwargs: Any) -> ExecutionResult:
        try:
            return await super().execute_single(*args, **kwargs)
        except HTTPException as exc:
            refused = exc.__cause__
            if isinstance(refused, InvalidOperationTypeError) and refused.operation_type is OperationType.MUTATION:
                # a mutation over GET: the method is what is wrong (GraphQL over HTTP: 405)
                raise _HTTPError(405, "mutations are sent with POST, not GET", {"Allow": "POST"}) from None
            raise

    async def process_result(self, request: Any, result: ExecutionResult) -> GraphQLHTTPResponse:
        response = process_result(result)
        if is_request_error(response):
            del response["data"]  # refused before execution: no data entry (GraphQL spec, response format)
        return response

    def create_response(
        self, response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse], sub_response: Response
    ) -> Response:
        media = _RESPONSE_MEDIA.get()
        status = 200
        if media == GRAPHQL_RESPONSE_JSON and not isinstance(response_data, list) and is_request_error(response_data):
            status = request_error_status(response_data)
        response: Response
        if estimate(response_data) > PIECEWISE_ABOVE:
            # a big answer: encoded in pieces and written in chunks, pausing for the other requests
            response = PiecewiseJSONResponse(
                response_data, max_bytes=self.max_response_bytes, too_large=self._too_large, status_code=status,
                media_type=media,
            )  # fmt: skip
        else:
            response = Response(self.encode_json(response_data), status_code=status, media_type=media)
        response.headers.raw.extend(sub_response.headers.raw)
        if sub_response.background:
            response.background = sub_response.background
        if sub_response.status_code:
            response.status_code = sub_response.status_code
        return response

    async def run(self, request: Any, context: Any = UNSET, root_value: Any = UNSET) -> Any:
        if self.is_websocket_request(request):
            return await super().run(request, context, root_value)
        media = negotiate(request.headers.get("accept"))
        streams = self._get_stream_transport_from_headers(request.headers) is not None
        if media is None and not streams and not self.should_render_graphql_ide(self.request_adapter_class(request)):
            accepted = f"{GRAPHQL_RESPONSE_JSON} or {JSON}"
            return self._error_response(
                HTTPException(406, f"cannot answer with what Accept asks for: {accepted}"), JSON
            )
        token = _RESPONSE_MEDIA.set(media or JSON)
        try:
            return await super().run(request, context, root_value)
        except HTTPException as exc:
            return self._error_response(exc, media or JSON)
        except AppError as exc:  # refused before a stream opened (its credential)
            ERRORS.labels(code=exc.code).inc()
            body = {"errors": [{"message": exc.message, "extensions": {"code": exc.code, **exc.extensions}}]}
            return Response(orjson.dumps(body), status_code=exc.http_status, media_type=media or JSON)
        finally:
            _RESPONSE_MEDIA.reset(token)

    def _error_response(self, exc: HTTPException, media: str) -> Response:
        # strawberry answers these in plain text: the same JSON errors as every other GraphQL failure
        code = "BAD_USER_INPUT" if 400 <= exc.status_code < 500 else "INTERNAL"
        ERRORS.labels(code=code).inc()
        body = {"errors": [{"message": exc.reason, "extensions": {"code": code}}]}
        headers = getattr(exc, "headers", None)
        return Response(orjson.dumps(body), status_code=exc.status_code, media_type=media, headers=headers)

    async def get_context(self, request: HTTPConnection, response: Any) -> Context:
        state = request.app.state
        return Context(
            runtime=state.runtime,
            signer=state.signer,
            connection=request,
            response=response if isinstance(response, Response) else None,
        )

    async def on_ws_connect(self, context: Context) -> Any:
        # Authenticate once per connection from the connection_init payload
        # ({"authorization": "Bearer …"} or {"x-api-key": "aa_…"}); bad credentials close with 4403.
        try:
            await context.principal()
        except Exception as exc:
            error = exc if isinstance(exc, AppError) else unavailable(exc)
            if error is None:
                raise
            payload = {"message": error.message, "code": error.code, **error.extensions}
            context.connection.state.ws_rejection = payload  # the close reason (TextWebSocketAdapter.close)
            raise ConnectionRejectionError(payload) from None
        return None


class RequestMiddleware:
    """Request id, access metrics and the request body limit, for HTTP and WebSocket alike."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if 0 < len(incoming) <= 64 and incoming.isascii() else secrets.token_hex(8)
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)
        client = scope.get("client")
        user_agent = headers.get(b"user-agent", b"").decode("latin-1") or None
        REQUEST_ORIGIN.set((client[0] if client else None, user_agent))
        if scope["type"] == "websocket":
            try:
                await self.app(scope, receive, send)
            finally:
                structlog.contextvars.unbind_contextvars("request_id")
            return

        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._too_large(send, request_id)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _BodyTooLarge
            return message

        status = 500
        started_response = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                started_response = True
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        started = time.perf_counter()
        route = _route_label(scope["path"])
        try:
            await self.app(scope, limited_receive, send_with_id)
        except _BodyTooLarge:
            status = 413
            await self._too_large(send, request_id)
        except Exception as exc:
            # a database or Redis that cannot be reached: 503 JSON with Retry-After on every route, from this one
            # place (GraphQL maps the same exceptions in its error formatter)
            outage = None if started_response else unavailable(exc)
            if outage is None:
                raise
            log.warning("dependency unavailable", route=route, error=type(exc).__name__)
            status = outage.http_status
            response = error_response(outage)
            response.headers["x-request-id"] = request_id
            await response({"type": "http"}, _no_receive, send)
        finally:
            HTTP_REQUESTS.labels(method=scope["method"], route=route, status=str(status)).inc()
            HTTP_LATENCY.labels(method=scope["method"], route=route).observe(time.perf_counter() - started)
            structlog.contextvars.unbind_contextvars("request_id")

    async def _too_large(self, send: Send, request_id: str) -> None:
        response = error_response(PayloadTooLarge(f"request body exceeds {self.max_body_bytes} bytes"))
        response.headers["x-request-id"] = request_id
        await response({"type": "http"}, _no_receive, send)


class _BodyTooLarge(Exception):
    pass


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def _route_label(path: str) -> str:
    # bounded label values: ids in paths are collapsed
    parts = [
        p if not any(c.isdigit() for c in p) or (p.startswith("v") and len(p) <= 3) else ":id" for p in path.split("/")
    ]
    return "/".join(parts)[:80]


async def healthz(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """PostgreSQL and Redis answer, and a worker has polled the queue lately (its heartbeat is fresh)."""
    runtime: Runtime = request.app.state.runtime
    checks: dict[str, str] = {}
    try:
        await runtime.db.ping()
        checks["postgres"] = "ok"
    except Exception as exc:
        checks["postgres"] = f"down: {type(exc).__name__}"
    try:
        await runtime.redis.ping()
        checks["redis"] = "ok"
        age = await heartbeat.last_beat_age(runtime.redis)
        stale = runtime.settings.worker_stale_seconds
        checks["worker"] = "ok" if age is not None else f"down: no heartbeat in the last {stale:g} s"
    except Exception as exc:
        checks["redis"] = f"down: {type(exc).__name__}"
        checks["worker"] = "unknown: Redis is down"
    if checks.get("postgres") == "ok" and checks.get("redis") == "ok":
        # the database holds every digest ever published (a trail cut short, or truncated, is not served)
        try:
            gaps = await audit_published.shortfalls(runtime.db, runtime.redis)
            checks["audit_trail"] = "ok" if not gaps else "broken: " + "; ".join(gaps[:5])
        except Exception as exc:
            checks["audit_trail"] = f"unknown: {type(exc).__name__}"
    down = [
        n for n, state in checks.items() if state != "ok" and not (n == "audit_trail" and state.startswith("unknown"))
    ]
    if down:
        error = Unavailable(f"not ready: {', '.join(down)} down")
        return JSONResponse(
            {"error": error.message, "status": 503, "code": error.code, "checks": checks},
            status_code=503,
            headers={"Retry-After": str(error.retry_after)},
        )
    return JSONResponse({"status": "ready", "checks": checks})


async def metrics(_request: Request) -> Response:
    return PlainTextResponse(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def domain_routes() -> list[BaseRoute]:
    """REST routes of the domains, where HTTP itself matters."""
    from app.agents.routes import routes as agents_routes
    from app.alerts.routes import routes as alerts_routes
    from app.api.docs import routes as docs_routes
    from app.audit.routes import routes as audit_routes
    from app.billing.routes import routes as billing_routes
    from app.compliance.routes import routes as compliance_routes
    from app.exports.routes import routes as export_routes
    from app.metrics.routes import routes as metrics_routes
    from app.orgs.routes import routes as orgs_routes
    from app.otel.routes import routes as otel_routes
    from app.policies.routes import routes as policies_routes
    from app.reports.routes import routes as report_routes
    from app.webhooks.routes import routes as webhook_routes

    return [
        *docs_routes,
        *orgs_routes,
        *agents_routes,
        *alerts_routes,
        *compliance_routes,
        *policies_routes,
        *export_routes,  # before audit: /api/v1/audit-logs/export is not a record id
        *audit_routes,
        *billing_routes,
        *otel_routes,
        *report_routes,
        *metrics_routes,
        *webhook_routes,
    ]


def create_app(settings: Settings, *, runtime: Runtime | None = None, urls: tuple[str, str] | None = None) -> Starlette:
    """`runtime`: already connected (tests); otherwise `urls` (database, redis) are connected on startup."""
    from app.runtime.secrets import resolve_secret_key

    graphql_app = AgentrailGraphQL(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        own = runtime is None
        if runtime is None:
            if urls is None:
                raise RuntimeError("create_app needs a runtime or the database and redis URLs")
            current = await Runtime.connect(
                settings, database_url=urls[0], redis_url=urls[1], secret_key=resolve_secret_key(settings)
            )
        else:
            current = runtime
        app.state.runtime = current
        app.state.signer = TokenSigner(
            current.secret_key,
            issuer=settings.jwt_issuer,
            lifetime=timedelta(minutes=settings.access_token_minutes),
        )
        pool = current.db.engine.pool
        POOL_COLLECTOR.pools.append(pool)
        listeners = [
            asyncio.create_task(listen_for_rule_changes(current.broadcaster), name="rule-changes"),
            asyncio.create_task(watch_credentials(current, app.state.open_connections), name="credentials"),
        ]
        try:
            yield
        finally:
            for listener in listeners:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener
            POOL_COLLECTOR.pools.remove(pool)
            if own:
                await current.close()

    routes: list[BaseRoute] = [
        Route("/graphql", graphql_app, methods=["GET", "POST"]),
        WebSocketRoute("/graphql", graphql_app),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        *domain_routes(),
    ]
    # every route checks its declaration before its body; a route without one fails the app build
    app = Starlette(
        routes=guard_routes(routes),
        lifespan=lifespan,
        exception_handlers={AppError: _app_error_handler, 404: _not_found, 405: _method_not_allowed},
    )
    app.state.graphql = graphql_app
    app.state.open_connections = OpenConnections()  # closed when their credential ends (app/api/open_connections.py)
    app.add_middleware(CancelOnDisconnect)  # a GraphQL request's work stops when its client has gone
    # a RATE_LIMITED answer to a caller over its rate or budget is sent once its retryAfter has passed
    app.add_middleware(HoldRefusals, max_seconds=settings.rate_limit_hold_max_seconds)
    app.add_middleware(BillingMiddleware, settings=settings)  # per-request plan settings, X-RateLimit-* headers
    app.add_middleware(RequestMiddleware, max_body_bytes=settings.max_request_bytes)
    trusted = [entry.strip() for entry in settings.trusted_proxies.split(",") if entry.strip()]
    if trusted:  # outermost: every layer below sees the client's address (throttles, activity sourceIp)
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=trusted)
    return app


async def _not_found(request: Request, exc: Exception) -> Response:
    """Unknown routes answer the REST error shape `{"error", "status", "code"}`, never plain text."""
    return error_response(NotFound(f"no route {request.method} {request.url.path[:200]}"))


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    response = error_response(MethodNotAllowed(f"{request.method} is not allowed on {request.url.path[:200]}"))
    allow = getattr(exc, "headers", None) or {}
    if "Allow" in allow:
        response.headers["Allow"] = allow["Allow"]
    return response


async def _app_error_handler(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppError)
    return error_response(exc)
