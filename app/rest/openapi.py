"""The REST routes' request and response models (pydantic) and the OpenAPI 3.1 document generated from them.

An endpoint says what it takes and answers with `@documented(...)`: its JSON body model (strict: a field the
model does not name is a 400 that lists the accepted ones) and its answers per status. The query parameters
come from its `@accepts(...)` declaration (app/rest/params.py), its security from its permission declaration
(app/<domain>/auth.py, applied by `app.api.permissions.guard_routes`), its path parameters from the route.
`document(routes)` walks the app's routes and builds the document from exactly those: nothing is written twice.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from pydantic.alias_generators import to_camel
from starlette.requests import Request
from starlette.routing import BaseRoute, Route

from app.db import InvalidJSON, request_json
from app.errors import BadUserInput
from app.permissions import Access
from app.rest.media import is_json
from app.rest.params import declared_parameters

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


class Body(BaseModel):
    """A request body: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=False)


class Answer(BaseModel):
    """A response body (documented; the routes build the JSON, schemathesis checks it matches)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class ErrorBody(BaseModel):
    """Every failure: `{"error", "status"}` as the reference documents it, plus the GraphQL error code."""

    error: str
    status: int
    code: str


def one_of(values: tuple[str, ...], value: Any, *, upper: bool = False) -> Any:
    """A body's enum value in any case (the documents and GraphQL spell them differently), in the stored
    spelling; a pydantic validator's ValueError (a 400 naming the values) otherwise."""
    if not isinstance(value, str):
        return value
    wanted = value.strip().upper() if upper else value.strip().lower()
    if wanted not in values:
        raise ValueError(f"must be one of {', '.join(values)} (any case)")
    return wanted


FILE = "file"  # a download: the stored file's own media type


@dataclass(frozen=True)
class Operation:
    summary: str
    body: Any = None  # a Body model, or a type such as list[Model]
    responses: Mapping[int, Any] = field(default_factory=dict)  # status -> model / type / FILE / None (empty)
    graphql: str = ""  # the GraphQL field the route adapts (the README's endpoint table)
    tag: str = ""
    description: str = ""


def documented(
    summary: str,
    *,
    body: Any = None,
    responses: Mapping[int, Any] | None = None,
    graphql: str = "",
    tag: str = "",
) -> Callable[[Endpoint], Endpoint]:
    def declare(endpoint: Endpoint) -> Endpoint:
        endpoint.operation = Operation(  # type: ignore[attr-defined]
            summary, body, dict(responses or {200: None}), graphql, tag, (endpoint.__doc__ or "").strip()
        )
        return endpoint

    return declare


def operation_of(endpoint: Any) -> Operation | None:
    return getattr(endpoint, "operation", None)


# --- bodies -------------------------------------------------------------------------------------------
_adapters: dict[Any, TypeAdapter[Any]] = {}


def _adapter(model: Any) -> TypeAdapter[Any]:
    adapter = _adapters.get(model)
    if adapter is None:
        adapter = _adapters[model] = TypeAdapter(model)
    return adapter


def _accepted(model: Any) -> list[str]:
    inner = getattr(model, "__args__", (model,))[0] if not isinstance(model, type) else model
    if isinstance(inner, type) and issubclass(inner, BaseModel):
        return [f.alias or name for name, f in inner.model_fields.items()]
    return []


def parse_body(raw: Any, model: Any) -> Any:
    """`raw` (decoded JSON) as `model`; BAD_USER_INPUT naming the problems and the accepted fields."""
    try:
        return _adapter(model).validate_python(raw)
    except ValidationError as exc:
        accepted = _accepted(model)
        problems = []
        unknown = []
        for error in exc.errors(include_url=False, include_input=False):
            where = ".".join(str(p) for p in error["loc"]) or "body"
            if error["type"] == "extra_forbidden":
                unknown.append(where)
            problems.append({"field": where, "message": error["msg"]})
        if unknown:
            message = f"unknown field(s) {', '.join(unknown)}: this endpoint accepts {', '.join(accepted)}"
        else:
            message = "; ".join(f"{p['field']}: {p['message']}" for p in problems[:5])
        raise BadUserInput(message, problems=problems, accepted=accepted) from None


async def read_json(request: Request) -> Any:
    """The request's body decoded as JSON (an empty body is `{}`); 400 for another media type or bad JSON."""
    if not is_json(request.headers.get("content-type")):
        raise BadUserInput("send the body as application/json")
    raw_bytes = await request.body()
    try:
        return request_json(raw_bytes) if raw_bytes.strip() else {}
    except InvalidJSON as exc:
        raise BadUserInput(exc.message) from None


async def body_of(request: Request, model: Any) -> Any:
    """The request's JSON body as `model` (400 for a body that is not JSON, or does not fit)."""
    return parse_body(await read_json(request), model)


# --- the document -------------------------------------------------------------------------------------
_PATH_PARAM = re.compile(r"{([^}:]+)(?::[^}]+)?}")
_ERRORS = {
    400: "Validation error: the message says what is accepted",
    401: "Missing or invalid API key / JWT",
    403: "Valid credentials but not authorised for this resource",
    404: "Resource not found",
    429: "Rate limit exceeded: back off for `Retry-After` seconds",
}


def _schemas(models: Sequence[tuple[Any, str]]) -> tuple[dict[tuple[Any, str], Any], dict[str, Any]]:
    """{(model, mode): schema or $ref}, and the components they refer to."""
    refs, defs = TypeAdapter.json_schemas(
        [(model, mode, _adapter(model)) for model, mode in models],  # type: ignore[misc]
        ref_template="#/components/schemas/{model}",
    )
    components: dict[str, Any] = defs.get("$defs", {})
    return dict(refs), components


def _security(access: Access | None) -> list[dict[str, list[str]]]:
    if access is None or access.public:
        return []
    options: list[dict[str, list[str]]] = []
    if access.api_keys is not None:
        options.append({"apiKey": []})
    if access.users:
        options.append({"bearer": []})
    return options


def _api_routes(routes: Sequence[BaseRoute]) -> list[Route]:
    return [
        r
        for r in routes
        if isinstance(r, Route) and r.path.startswith(("/api/", "/v1/")) and not r.path.startswith("/api/docs")
    ]


def document(routes: Sequence[BaseRoute], *, title: str = "Agentrail REST API", version: str = "1") -> dict[str, Any]:
    """OpenAPI 3.1 for the REST routes among `routes` (the app's, already guarded)."""
    api_routes = _api_routes(routes)
    wanted: list[tuple[Any, str]] = [(ErrorBody, "serialization")]
    for route in api_routes:
        op = operation_of(route.endpoint)
        if op is None:
            continue
        if op.body is not None:
            wanted.append((op.body, "validation"))
        wanted += [(m, "serialization") for m in op.responses.values() if m not in (None, FILE)]
    unique = list(dict.fromkeys(wanted))
    refs, components = _schemas(unique)
    error_ref = refs[(ErrorBody, "serialization")]

    paths: dict[str, dict[str, Any]] = {}
    for route in api_routes:
        op = operation_of(route.endpoint) or Operation(route.name.replace("_", " "))
        access: Access | None = getattr(route.endpoint, "access", None)
        path = _PATH_PARAM.sub(r"{\1}", route.path)
        parameters: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
            for name in _PATH_PARAM.findall(route.path)
        ]
        for param in declared_parameters(route.endpoint).params:
            parameters.append(
                {
                    "name": param.name,
                    "in": "query",
                    "required": False,
                    "schema": param.schema,
                    "description": param.accepted,
                }
            )
        responses: dict[str, Any] = {}
        for status, model in op.responses.items():
            entry: dict[str, Any] = {"description": "OK" if status < 300 else str(status)}
            if model == FILE:
                entry["content"] = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
            elif model is not None:
                entry["content"] = {"application/json": {"schema": refs[(model, "serialization")]}}
            responses[str(status)] = entry
        codes = [400, 404, 429] if access is None or access.public else [400, 401, 403, 404, 429]
        for status in codes:
            responses.setdefault(
                str(status), {"description": _ERRORS[status], "content": {"application/json": {"schema": error_ref}}}
            )
        responses["default"] = {"description": "Error", "content": {"application/json": {"schema": error_ref}}}
        for method in sorted(route.methods or ()):
            if method == "HEAD":
                continue
            entry = {
                "operationId": f"{method.lower()}_{route.name}",
                "summary": op.summary,
                "parameters": parameters,
                "responses": responses,
                "security": _security(access),
            }
            if op.tag:
                entry["tags"] = [op.tag]
            if op.description:
                entry["description"] = op.description + (f"\n\nGraphQL: `{op.graphql}`" if op.graphql else "")
            if op.body is not None:
                entry["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": refs[(op.body, "validation")]}},
                }
            paths.setdefault(path, {})[method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "REST adapters over the same services as the GraphQL API (`/graphql`, the primary API).",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
        },
    }


def endpoints_table(routes: Sequence[BaseRoute]) -> str:
    """The README's REST endpoint table: method, path, what it does, its GraphQL equivalent."""
    lines = ["| method | path | what | GraphQL |", "| --- | --- | --- | --- |"]
    for route in _api_routes(routes):
        op = operation_of(route.endpoint) or Operation(route.name.replace("_", " "))
        for method in sorted(route.methods or ()):
            if method != "HEAD":
                graphql = f"`{op.graphql}`" if op.graphql else "(REST only)"
                lines.append(f"| {method} | `{route.path}` | {op.summary} | {graphql} |")
    return "\n".join(lines) + "\n"
