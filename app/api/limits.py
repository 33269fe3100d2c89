"""The query cost limit and budget: checked before an operation executes, reported in `extensions.cost`.

Each operation's static cost (app/api/cost.py) must stay within AGENTRAIL_MAX_QUERY_COST (else
BAD_USER_INPUT with the cost and the limit), and is then charged to its caller's budget: a leaky bucket of
AGENTRAIL_QUERY_COST_BUDGET points refilled at AGENTRAIL_QUERY_COST_REFILL_PER_SECOND, per API key and per
user, kept in Redis (one GCRA script, the rate limiter's, with the cost as the quantity), so every API node
draws on the same bucket. Exhausted: RATE_LIMITED with `retryAfter`. As with the rate limit, a Redis outage
lets operations through rather than taking the API down with it.

Once an operation has run, what it really returned is counted the same way (app/api/cost.py,
`actual_cost`: the nodes in its result, the weights of the fields resolved) and the difference is given back to
the bucket, as Shopify does: a dashboard reading a big trace pays for the trace it got, not for the largest one
it could have got. The per-operation maximum stays the static cost. An operation whose result has errors keeps
its whole charge (its work may have been done and its data lost to a null). `extensions.cost` reports both:
`requestedQueryCost`, `actualQueryCost` and `throttleStatus` (`maximumAvailable`, `currentlyAvailable` after
the refund, `restoreRate`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator
from typing import Any

import structlog
from graphql import ExecutionResult, GraphQLError
from redis.exceptions import RedisError
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from app.api.cost import CostAnalysis
from app.errors import AppError, BadUserInput, RateLimited, Unauthenticated
from app.principal import Principal
from app.runtime.connections import hold_refusal
from app.settings import Settings
from app.usage.ratelimit import RateLimiter

log = structlog.get_logger(__name__)

_ANALYSES: dict[int, CostAnalysis] = {}


def _analysis(schema: Any) -> CostAnalysis:
    found = _ANALYSES.get(id(schema))
    if found is None or found.schema is not schema:
        found = _ANALYSES[id(schema)] = CostAnalysis(schema)
    return found


def budget_key(principal: Principal) -> str:
    if principal.is_user:
        return f"agentrail:cost:user:{principal.user_id}"
    return f"agentrail:cost:key:{principal.api_key_id}"


class QueryCost(SchemaExtension):
    def __init__(self, *, settings: Settings) -> None:
        self.settings = settings
        self.report: dict[str, Any] | None = None
        self.charged: tuple[str, int] | None = None  # (budget key, points) taken before execution

    async def on_execute(self) -> AsyncIterator[None]:
        ctx = self.execution_context
        if ctx.graphql_document is not None:
            try:
                await self._check(ctx)
            except Exception as exc:  # a refusal, or the caller's look-up failing (a database outage)
                if ctx.operation_type is OperationType.SUBSCRIPTION:
                    raise  # strawberry sends what on_execute raises as the subscription's error
                # a result set here is returned instead of executing; ErrorCodes formats its error (UNAVAILABLE
                # for an outage, INTERNAL masked for anything unexpected)
                message = exc.message if isinstance(exc, AppError) else str(exc)
                ctx.result = ExecutionResult(data=None, errors=[GraphQLError(message, original_error=exc)])
        yield
        if self.report is not None and ctx.operation_type is not OperationType.SUBSCRIPTION:
            await self._settle(ctx)

    async def _settle(self, ctx: Any) -> None:
        """Counts what the operation returned and gives the rest of its charge back to the budget."""
        report = self.report
        assert report is not None
        result = ctx.result
        data = getattr(result, "data", None)
        actual = 0
        if data is not None:
            analysis = _analysis(ctx.schema._schema)
            actual = analysis.actual_cost(ctx.graphql_document, ctx.operation_name, ctx.variables, data) or 0
        report["actualQueryCost"] = actual
        if self.charged is None:
            return
        key, charged = self.charged
        refund = charged - actual
        if refund <= 0 or getattr(result, "errors", None):
            return
        settings = self.settings
        try:
            available = await RateLimiter(ctx.context.runtime.redis).refund(
                key, rate=settings.query_cost_refill_per_second, burst=report["budget"], quantity=refund
            )
        except RedisError as exc:
            log.warning("query cost refund unavailable; the operation keeps its charge", error=str(exc))
            return
        report["throttleStatus"]["currentlyAvailable"] = max(0, available)

    async def _check(self, ctx: Any) -> None:
        settings = self.settings
        cost = _analysis(ctx.schema._schema).operation_cost(ctx.graphql_document, ctx.operation_name, ctx.variables)
        if cost is None:
            return
        self.report = {"requested": cost, "limit": settings.max_query_cost, "requestedQueryCost": cost}
        # the caller first: its request rate limit then also counts the operations refused below
        principal = await _principal(ctx.context)
        if cost > settings.max_query_cost:
            raise BadUserInput(
                f"query cost {cost} exceeds the limit of {settings.max_query_cost} per operation: ask for "
                "smaller pages (`first`), fewer nested lists or fewer aliases",
                cost=cost,
                limit=settings.max_query_cost,
            )
        if principal is None or cost == 0 or settings.query_cost_refill_per_second <= 0:
            return
        budget = max(settings.query_cost_budget, settings.max_query_cost)
        try:
            decision = await RateLimiter(ctx.context.runtime.redis).hit(
                budget_key(principal), rate=settings.query_cost_refill_per_second, burst=budget, quantity=cost
            )
        except RedisError as exc:
            log.warning("query cost budget unavailable; letting the operation through", error=str(exc))
            return
        # `remaining`: what was left once the requested cost was taken; throttleStatus: after the refund
        self.report.update(
            remaining=max(0, decision.remaining),
            budget=budget,
            refillPerSecond=settings.query_cost_refill_per_second,
            throttleStatus={
                "maximumAvailable": budget,
                "currentlyAvailable": max(0, decision.remaining),
                "restoreRate": settings.query_cost_refill_per_second,
            },
        )
        if decision.allowed:
            self.charged = (budget_key(principal), cost)
        else:
            retry_after = math.ceil(decision.retry_after_seconds)
            # a caller that did not wait as it was told is made to (app/runtime/connections.py)
            hold_refusal(budget_key(principal), retry_after)
            raise RateLimited(
                f"query cost budget exhausted: this operation costs {cost} points, {max(0, decision.remaining)} "
                f"of {budget} are left, refilled at {settings.query_cost_refill_per_second:g} per second",
                retry_after=retry_after,
                cost=cost,
                remaining=max(0, decision.remaining),
            )

    def get_results(self) -> dict[str, Any]:
        # nothing to report for a free operation (introspection, __typename); over a WebSocket, where every
        # live message would carry it again, the figures stay out of the messages
        report = self.report
        ctx = self.execution_context
        if report is None or not report["requested"] or _over_websocket(ctx.context):
            return {}
        with contextlib.suppress(RuntimeError):  # RuntimeError: no operation (the document did not parse)
            if ctx.operation_type is OperationType.SUBSCRIPTION:
                return {}  # shared live executions have no connection of their own in their context
        return {"cost": report}


def _over_websocket(context: Any) -> bool:
    connection = getattr(context, "connection", None)
    return connection is not None and connection.scope.get("type") == "websocket"


async def _principal(context: Any) -> Principal | None:
    """The caller, or None for operations that come before one (register, login): those are only limited
    per operation, and by the login throttle."""
    principal = getattr(context, "principal", None)
    if principal is None:
        return None
    try:
        return await principal()
    except Unauthenticated:
        return None
