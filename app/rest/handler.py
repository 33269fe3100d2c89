"""The one shape of a REST endpoint: the authorised caller, its parsed query and body, one unit of work in its
organisation's tenant session, the answer as JSON (or a Response the handler made), failures as
`{"error", "status", "code"}`.

    @endpoint(body=AgentIn, responses={201: AgentOut}, graphql="Mutation.createAgent")
    async def create_agent(call: Call) -> Any:
        '''Register a new agent'''
        agent = await service.create_agent(call.session, call.principal, name=call.body.name, ...)
        return agent_json(agent)

The docstring's first line is the operation's summary (the README table, the OpenAPI document), the rest its
description.
The handler runs inside the unit of work (its answer is built before the commit, from rows still loaded); the
first status of `responses` is the success status; `None` answers it with an empty body. The permission
declaration (app/<domain>/auth.py) and the `@accepts` query parameters are applied by the route guard before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from app.db import AsyncSession
from app.principal import Principal
from app.rest.openapi import body_of, documented
from app.rest.params import query_of
from app.rest.responses import JSONResponse, answers, principal_of, source_ip
from app.runtime.resources import Runtime
from app.unit_of_work import unit_of_work

MAX_ID_LENGTH = 64  # path ids longer than any of ours find nothing (and are not sent to the database whole)


@dataclass(frozen=True)
class Call:
    request: Request
    session: AsyncSession  # the unit of work's, in the caller's organisation
    body: Any  # the parsed body model, or None

    @property
    def principal(self) -> Principal:
        return principal_of(self.request)

    @property
    def query(self) -> dict[str, Any]:
        return query_of(self.request)

    async def apply(self, operation: Callable[..., Awaitable[Any]], *args: Any, **extra: Any) -> Any:
        """A service write: `operation(session, principal, *args, **the body's fields, **extra, source_ip=…)`
        (the body model's fields are named as the service's parameters)."""
        fields = self.body.model_dump() if self.body is not None else {}
        return await operation(self.session, self.principal, *args, **fields, **extra, source_ip=self.source_ip)

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.request.app.state.runtime
        return runtime

    @property
    def source_ip(self) -> str | None:
        return source_ip(self.request)

    def path(self, name: str) -> str:
        """A path parameter (an id), cut to the longest id there is."""
        return str(self.request.path_params[name])[:MAX_ID_LENGTH]


Handler = Callable[[Call], Awaitable[Any]]


def endpoint(
    *,
    body: Any = None,
    responses: Mapping[int, Any] | None = None,
    graphql: str = "",
    tag: str = "",
) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """A documented REST endpoint (app/rest/openapi.py `documented`) running `handler` as described above."""
    answered = dict(responses or {200: None})
    status = next(iter(answered))

    def declare(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            principal = principal_of(request)
            parsed = await body_of(request, body) if body is not None else None
            async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
                result = await handler(Call(request, session, parsed))
            if isinstance(result, Response):
                return result
            if result is None:
                return Response(status_code=status)
            return JSONResponse(result, status_code=status)

        summary, _, description = (handler.__doc__ or handler.__name__).strip().partition("\n")
        run.__name__, run.__qualname__, run.__doc__ = handler.__name__, handler.__qualname__, description.strip()
        run.__module__ = handler.__module__
        return documented(summary.strip(), body=body, responses=answered, graphql=graphql, tag=tag)(answers(run))

    return declare
