"""Every GraphQL root field and every REST route, as the schema and the router list them, against its permission
declaration: no credentials, an API key, and each role. Nothing here names an operation: a new one is walked too,
and one without a declaration fails the schema (or app) build before any test runs."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import strawberry
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
    Undefined,
    get_named_type,
)
from starlette.requests import HTTPConnection
from starlette.routing import Route, WebSocketRoute

from app.api.context import Context
from app.api.permissions import declarations, guard_root_types, guard_routes, matrix, route_names
from app.permissions import Access, at_least
from app.principal import Principal, Role, Scope
from support import add_user, gql, register

README = Path(__file__).resolve().parents[2] / "README.md"
ROOTS = ("Query", "Mutation", "Subscription")
DENIED = ("UNAUTHENTICATED", "FORBIDDEN")
SCALARS = {"ID": "x", "String": "x", "Int": 1, "Float": 1.0, "Boolean": False, "DateTime": "2026-01-01T00:00:00Z"}


# --- building a call for any field ----------------------------------------------------------------------
def _value(type_: Any) -> Any:
    """A value of the input type: the least that coerces (required input fields only, empty lists)."""
    if isinstance(type_, GraphQLNonNull):
        return _value(type_.of_type)
    if isinstance(type_, GraphQLList):
        return []
    if isinstance(type_, GraphQLEnumType):
        return next(iter(type_.values))
    if isinstance(type_, GraphQLInputObjectType):
        return {
            name: _value(field.type)
            for name, field in type_.fields.items()
            if isinstance(field.type, GraphQLNonNull) and field.default_value is Undefined
        }
    if isinstance(type_, GraphQLScalarType):
        return SCALARS.get(type_.name, {})
    raise AssertionError(type_)


def _document(root: str, name: str, field: Any) -> tuple[str, dict[str, Any]]:
    variables, declared, passed = {}, [], []
    for arg_name, arg in field.args.items():
        if not isinstance(arg.type, GraphQLNonNull):
            continue
        variables[arg_name] = _value(arg.type)
        declared.append(f"${arg_name}: {arg.type}")
        passed.append(f"{arg_name}: ${arg_name}")
    selection = " { __typename }" if isinstance(get_named_type(field.type), GraphQLObjectType) else ""
    head = f"({', '.join(declared)})" if declared else ""
    call = f"({', '.join(passed)})" if passed else ""
    return f"{root.lower()} Walk{head} {{ {name}{call}{selection} }}", variables


def root_fields(schema: GraphQLSchema) -> list[tuple[str, str, Any]]:
    found = []
    for root in ROOTS:
        type_ = schema.get_type(root)
        assert isinstance(type_, GraphQLObjectType)
        found += [(root, name, field) for name, field in type_.fields.items()]
    return found


# --- callers --------------------------------------------------------------------------------------------
class Callers:
    """An organisation with an API key of every scope and one user of every role (the owner registered, the
    others added)."""

    def __init__(self, api_keys: dict[Scope, str], tokens: dict[Role, str], org_id: str = "") -> None:
        self.api_keys = api_keys
        self.tokens = tokens
        self.org_id = org_id

    async def intact(self, runtime: Any) -> bool:
        """Whether every user still has its session and membership (a walked operation may end them: logout,
        leaving the organisation); when not, the walk goes on with new callers."""
        async with runtime.db.engine.connect() as conn:
            count = await conn.execute(
                sa.text(
                    "SELECT count(*) FROM sign_in_sessions s JOIN memberships m ON m.user_id = s.user_id"
                    " AND m.org_id = s.org_id WHERE s.org_id = :org AND s.revoked_at IS NULL"
                ),
                {"org": self.org_id},
            )
            return int(count.scalar_one()) == len(self.tokens)

    @classmethod
    async def create(cls, client: Any, runtime: Any, settings: Any) -> Callers:
        owner = await register(client)
        keys = {}
        for scope in Scope:
            created = await gql(
                client, "CreateApiKey", {"name": scope.value, "scopes": [scope.name]}, token=owner.token
            )
            keys[scope] = created["data"]["createApiKey"]["secret"]
        tokens = {Role.OWNER: owner.token}
        for role in Role:
            if role is not Role.OWNER:
                tokens[role] = (await add_user(runtime, settings, owner, role.value))[1]
        return cls(keys, tokens, owner.org_id)

    def cases(self, access: Access) -> list[tuple[str, dict[str, str], str | None]]:
        """(who, headers, the code the declaration demands: None when the call must get past the check)."""
        unauthenticated = None if access.public else "UNAUTHENTICATED"
        cases: list[tuple[str, dict[str, str], str | None]] = [("no credentials", {}, unauthenticated)]
        if access.public:
            return cases
        for scope, secret in self.api_keys.items():
            key = Principal(kind="api_key", org_id="org", api_key_id="k", scopes=frozenset({scope}))
            key_code = None if access.api_keys is not None and key.holds(access.api_keys) else "FORBIDDEN"
            cases.append((f"{scope.value} API key", {"x-api-key": secret}, key_code))
        for role, token in self.tokens.items():
            user = Principal(kind="user", org_id="org", user_id="u", role=role.value)
            allowed = access.users and (access.role is None or at_least(user, access.role))
            cases.append((role.value, {"authorization": f"Bearer {token}"}, None if allowed else "FORBIDDEN"))
        return cases


def _code(errors: list[Any] | None) -> str | None:
    """The first error's code; a refusal for another reason than who is calling (billing not configured on
    this server) carries its reason, so that it is not taken for a permission refusal."""
    for error in errors or []:
        if isinstance(error, dict):
            extensions = error.get("extensions", {})
        else:
            original = error.original_error
            extensions = error.extensions or {
                "code": getattr(original, "code", None),
                **getattr(original, "extensions", {}),
            }
        code, reason = extensions.get("code"), extensions.get("reason")
        return f"{code}:{reason}" if reason else code
    return None


async def _subscribe(app: Any, document: str, variables: dict[str, Any], headers: dict[str, str]) -> str | None:
    """The first answer of a subscription, executed as the WebSocket handler does (with this caller's
    credentials); None when it is streaming (nothing refused it)."""
    scope = {"type": "http", "headers": [(k.encode(), v.encode()) for k, v in headers.items()], "client": ("t", 1)}
    context = Context(runtime=app.state.runtime, signer=app.state.signer, connection=HTTPConnection(scope))
    stream = await app.state.graphql.schema.subscribe(document, variable_values=variables, context_value=context)
    try:
        first = await asyncio.wait_for(anext(stream), 0.5)
    except TimeoutError:
        return None
    finally:
        await stream.aclose()
        await context.close()
    return _code(first.errors)


# --- the walks ------------------------------------------------------------------------------------------
async def test_every_root_field_answers_as_declared(client, app, runtime, settings):
    schema = app.state.graphql.schema._schema
    declared = declarations()
    callers = await Callers.create(client, runtime, settings)
    walked, wrong = 0, []
    for root, name, field in root_fields(schema):
        _, access = declared[f"{root}.{name}"]
        document, variables = _document(root, name, field)
        for who, headers, expected in callers.cases(access):
            if root == "Subscription":
                code = await _subscribe(app, document, variables, headers)
            else:
                response = await client.post(
                    "/graphql", json={"query": document, "variables": variables}, headers=headers
                )
                body = response.json()
                assert "errors" in body or "data" in body, body
                code = _code(body.get("errors"))
            if expected is not None and code != expected:
                wrong.append(f"{root}.{name} as {who}: {code}, declared {expected}")
            if expected is None and code in DENIED and not access.public:  # login answers wrong passwords so
                wrong.append(f"{root}.{name} as {who}: {code}, but the declaration allows it")
            walked += 1
        if root == "Mutation" and not await callers.intact(runtime):
            callers = await Callers.create(client, runtime, settings)
    assert not wrong, "\n".join(wrong)
    assert walked > 3 * len(root_fields(schema))


async def test_every_route_answers_as_declared(client, app, runtime, settings):
    declared = declarations()
    callers = await Callers.create(client, runtime, settings)
    wrong = []
    routes = [r for r in app.routes if isinstance(r, Route | WebSocketRoute)]
    assert routes
    for route in routes:
        for name in route_names(route):
            method, path = name.split(" ", 1)
            _, access = declared[name]
            if method == "WS" or access.public:
                continue  # the GraphQL endpoint's fields are walked above; public routes take anyone
            url = re.sub(r"\{[^}]+\}", "x", path)
            for who, headers, expected in callers.cases(access):
                response = await client.request(method, url, headers=headers)
                status = {"UNAUTHENTICATED": 401, "FORBIDDEN": 403}
                if expected is not None and response.status_code != status[expected]:
                    wrong.append(f"{name} as {who}: {response.status_code}, declared {expected}")
                # a refusal for another reason than access (billing not configured on this server) is not one
                not_access = response.status_code == 403 and response.json().get("reason") == "BILLING_NOT_CONFIGURED"
                if expected is None and response.status_code in (401, 403) and not not_access:
                    wrong.append(f"{name} as {who}: {response.status_code}, but the declaration allows it")
            if method != "GET" and not await callers.intact(runtime):
                callers = await Callers.create(client, runtime, settings)
    assert not wrong, "\n".join(wrong)


async def test_the_websocket_refuses_a_connection_without_credentials(client, live_server):
    import websockets

    from support import GraphQLWebSocket

    ws = await GraphQLWebSocket.connect(live_server, {})
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await ws.receive()
    assert closed.value.rcvd.code == 4403


def test_a_root_field_without_a_declaration_fails_the_build():
    @strawberry.type
    class Query:
        @strawberry.field(description="Undeclared.")
        def undeclared_field(self) -> int:
            return 1

    with pytest.raises(RuntimeError, match=r"no permission declaration for Query\.undeclaredField"):
        guard_root_types(Query=Query)


def test_a_route_without_a_declaration_fails_the_build():
    async def endpoint(_request: Any) -> Any:
        raise AssertionError

    with pytest.raises(RuntimeError, match="no permission declaration for GET /api/v1/undeclared"):
        guard_routes([Route("/api/v1/undeclared", endpoint, methods=["GET"])])


def test_every_declaration_names_an_operation(app):
    """Declarations of fields or routes that do not exist would put phantoms in the matrix."""
    schema = app.state.graphql.schema._schema
    fields = {f"{root}.{name}" for root, name, _ in root_fields(schema)}
    routes = {name for route in app.routes for name in route_names(route)}
    assert set(declarations()) == fields | routes


def test_readme_matrix_matches_the_declarations():
    text = README.read_text()
    start, end = "<!-- permissions:start -->\n", "<!-- permissions:end -->"
    assert start in text and end in text, "README.md has no permission matrix"
    current = text.split(start, 1)[1].split(end, 1)[0]
    assert current == matrix(), "README.md's permission matrix is out of date: run `agentrail permissions`"
