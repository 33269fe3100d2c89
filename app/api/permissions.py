"""The domains' permission declarations (app/<domain>/auth.py), applied to every GraphQL root field and REST
route before its resolver or route body runs, and printed as the README's permission matrix.

An operation without a declaration fails the schema build (or the app build, for a route); so does a
declaration that names no operation, so the matrix never lists what does not exist.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from strawberry.extensions.field_extension import FieldExtension
from strawberry.types import Info

from app.activity import auth as activity
from app.agents import auth as agents
from app.alerts import auth as alerts
from app.api.auth import authenticate
from app.audit import auth as audit
from app.billing import auth as billing
from app.compliance import auth as compliance
from app.errors import AppError, BadUserInput
from app.exports import auth as exports
from app.jobs import auth as jobs
from app.metrics import auth as metrics
from app.orgs import auth as orgs
from app.otel import auth as otel
from app.permissions import Access, Permissions, public, roles_from
from app.policies import auth as policies
from app.principal import Principal
from app.reports import auth as reports
from app.rest.params import declared_parameters
from app.rest.responses import error_response
from app.sso import auth as sso
from app.webhooks import auth as webhooks

GRAPHQL = public("GraphQL", note="each root field has its own declaration")

# the API's own routes, where HTTP itself is the point
API = Permissions(
    "api",
    {
        "GET /graphql": GRAPHQL,
        "POST /graphql": GRAPHQL,
        "WS /graphql": GRAPHQL,
        "GET /healthz": public("check liveness"),
        "GET /readyz": public("check readiness"),
        "GET /metrics": public("scrape metrics", note="Prometheus; keep it off the public network"),
        "GET /api/v1/openapi.json": public("read the REST API's OpenAPI document"),
        "GET /api/docs": public("browse the REST API (Swagger UI)"),
        "GET /api/docs/{asset}": public("browse the REST API (Swagger UI)", note="its assets, from swagger-ui-py"),
    },
)

_MODULES = (
    orgs,
    agents,
    audit,
    compliance,
    alerts,
    policies,
    metrics,
    activity,
    webhooks,
    reports,
    exports,
    jobs,
    billing,
    otel,
    sso,
)
DOMAINS: tuple[Permissions, ...] = (*(m.PERMISSIONS for m in _MODULES), API)


def declarations() -> dict[str, tuple[str, Access]]:
    """Every declared operation: name -> (domain, access). A name declared twice is an error."""
    found: dict[str, tuple[str, Access]] = {}
    for permissions in DOMAINS:
        for name, access in permissions.operations.items():
            if name in found:
                raise RuntimeError(f"{name} is declared by both {found[name][0]} and {permissions.domain}")
            found[name] = (permissions.domain, access)
    return found


def _check_all_declared(operations: Iterable[str], kind: str) -> dict[str, Access]:
    graphql = kind == "graphql"
    declared = {name: access for name, (_, access) in declarations().items() if _is_graphql(name) == graphql}
    operations = list(operations)
    missing = [name for name in operations if name not in declared]
    if missing:
        raise RuntimeError(f"no permission declaration for {', '.join(missing)}: declare it in the domain's auth.py")
    unknown = sorted(set(declared) - set(operations))
    if unknown:
        raise RuntimeError(f"permission declarations for operations that do not exist: {', '.join(unknown)}")
    return declared


def _is_graphql(name: str) -> bool:
    return name.split(".", 1)[0] in ("Query", "Mutation", "Subscription")


# --- GraphQL ------------------------------------------------------------------------------------------
class Guard(FieldExtension):
    """Checks the field's declaration before its resolver runs (a subscription: before its stream starts)."""

    def __init__(self, operation: str, access: Access) -> None:
        self.operation = operation
        self.access = access

    async def resolve_async(self, next_: Callable[..., Any], source: Any, info: Info, **kwargs: Any) -> Any:
        if not self.access.public:
            self.access.authorize(await info.context.caller())
        result = next_(source, info, **kwargs)
        return result if inspect.isasyncgen(result) else await result


def guard_root_types(**root_types: type) -> None:
    """Adds each root field's Guard (once: the types are module-level). `root_types`: Query=..., Mutation=..."""
    fields: dict[str, Any] = {}
    for type_name, cls in root_types.items():
        for field in cls.__strawberry_definition__.fields:  # type: ignore[attr-defined]
            fields[f"{type_name}.{_graphql_name(field)}"] = field
    declared = _check_all_declared(fields, "graphql")
    for name, field in fields.items():
        field.extensions = [e for e in field.extensions if not isinstance(e, Guard)]
        field.extensions.insert(0, Guard(name, declared[name]))


def _graphql_name(field: Any) -> str:
    if field.graphql_name:
        return str(field.graphql_name)
    head, *rest = field.python_name.split("_")
    return head + "".join(part.title() for part in rest)


def permits(operation: str, principal: Principal | None) -> bool:
    """Whether `principal` may call `operation` (e.g. "Subscription.alerts") by its declaration."""
    try:
        declarations()[operation][1].authorize(principal)
    except AppError:
        return False
    return True


def guard_of(field: Any) -> Guard | None:
    return next((e for e in getattr(field, "extensions", ()) if isinstance(e, Guard)), None)


# --- REST ---------------------------------------------------------------------------------------------
ErrorRenderer = Callable[[Request, Exception], Response]


def route_names(route: BaseRoute) -> list[str]:
    if isinstance(route, WebSocketRoute):
        return [f"WS {route.path}"]
    assert isinstance(route, Route), route
    return [f"{method} {route.path}" for method in sorted(route.methods or ()) if method != "HEAD"]


def guard_routes(routes: list[BaseRoute]) -> list[BaseRoute]:
    """Each route with its declaration applied (an endpoint function is wrapped; the public GraphQL endpoint,
    an ASGI app, is left as it is: its fields carry their own guards)."""
    names = [name for route in routes for name in route_names(route)]
    declared = _check_all_declared(names, "rest")
    guarded: list[BaseRoute] = []
    for route in routes:
        accesses = {declared[name] for name in route_names(route)}
        if len(accesses) != 1:
            raise RuntimeError(f"route {getattr(route, 'path', route)} needs one declaration for all its methods")
        access = accesses.pop()
        if isinstance(route, Route) and inspect.isfunction(route.endpoint):
            # every REST route checks its query parameters (app/rest/params.py), after its access
            endpoint = _with_parameters(route.endpoint)
            if not access.public:
                endpoint = _guarded(endpoint, access)
            route = Route(route.path, endpoint, methods=route.methods, name=route.name)
        guarded.append(route)
    return guarded


def _json_error(_request: Request, error: Exception) -> Response:
    assert isinstance(error, AppError)
    return error_response(error)


def _with_parameters(endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[..., Any]:
    declared = declared_parameters(endpoint)
    own: ErrorRenderer | None = getattr(endpoint, "render_error", None)
    render: ErrorRenderer = own or _json_error

    async def endpoint_with_parameters(request: Request) -> Response:
        try:
            request.state.query = declared.parse(request.query_params)
        except BadUserInput as error:
            return render(request, error)
        return await endpoint(request)

    endpoint_with_parameters.__dict__.update(endpoint.__dict__)  # its OpenAPI operation (app/rest/openapi.py)
    endpoint_with_parameters.query_parameters = declared  # type: ignore[attr-defined]
    if own is not None:
        endpoint_with_parameters.render_error = own  # type: ignore[attr-defined]
    endpoint_with_parameters.__name__ = endpoint.__name__
    endpoint_with_parameters.__doc__ = endpoint.__doc__
    return endpoint_with_parameters


def _guarded(endpoint: Callable[[Request], Awaitable[Response]], access: Access) -> Callable[..., Any]:
    # A route whose errors have a wire format of their own (OTLP) says how to render them, whatever they are
    # (a database that cannot be reached while authenticating too); elsewhere AppErrors are answered here and
    # the rest is the app's.
    own: ErrorRenderer | None = getattr(endpoint, "render_error", None)
    render: ErrorRenderer = own or _json_error
    caught = Exception if own else AppError

    async def endpoint_with_access(request: Request) -> Response:
        principal: Principal | None = None
        if not (access.signed_link and "signature" in request.query_params):  # the route verifies the link
            try:
                state = request.app.state
                headers = {k.lower(): v for k, v in request.headers.items()}
                principal = access.authorize(await authenticate(headers, runtime=state.runtime, signer=state.signer))
            except caught as error:
                return render(request, error)
        request.state.principal = principal
        return await endpoint(request)

    endpoint_with_access.__dict__.update(endpoint.__dict__)
    endpoint_with_access.access = access  # type: ignore[attr-defined]
    endpoint_with_access.__name__ = endpoint.__name__
    endpoint_with_access.__doc__ = endpoint.__doc__
    return endpoint_with_access


# --- the matrix ---------------------------------------------------------------------------------------
def matrix() -> str:
    """The README's permission matrix, in Markdown (`agentrail permissions`)."""
    lines = [
        "| operation | domain | users | API keys | on what another person owns | notes |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, (domain, access) in sorted(declarations().items(), key=lambda item: _sort_key(item[0])):
        lines.append(f"| `{name}` | {domain} | {' | '.join(_cells(access))} | {access.note} |")
    return "\n".join(lines) + "\n"


def _cells(access: Access) -> tuple[str, str, str]:
    """Users (the roles that may call), API keys (the scope they need), acting on another's (the roles)."""
    if access.public:
        return "public", "public", ""
    users = (roles_from(access.role) if access.role else "any role") if access.users else "no"
    keys = access.api_keys.value if access.api_keys is not None else "no"
    if access.signed_link:
        users, keys = f"{users}; signed link", f"{keys}; signed link"
    return users, keys, roles_from(access.others) if access.others else ""


def _sort_key(name: str) -> tuple[int, str]:
    order = {"Query": 0, "Mutation": 1, "Subscription": 2}
    if _is_graphql(name):
        return order[name.split(".", 1)[0]], name
    method, path = name.split(" ", 1)
    return 3, f"{path} {method}"
