"""The GraphQL schema, assembled from each domain's Query/Mutation/Subscription pieces."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    ValidationCache,
)
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.schema.schema import DEFAULT_ALLOWED_OPERATION_TYPES
from strawberry.types.execution import ExecutionContext, ExecutionResult
from strawberry.types.graphql import OperationType

from app.activity.schema import ActivityQuery
from app.agents.schema import AgentsMutation, AgentsQuery
from app.alerts.schema import AlertsMutation, AlertsQuery, AlertsSubscription
from app.api.context import commit_mutations
from app.api.errors import DocumentCache, ErrorCodes
from app.api.execution import FastLeafExecutionContext
from app.api.limits import QueryCost
from app.api.permissions import guard_root_types
from app.audit.schema import (
    AuditMutation,
    AuditQuery,
    AuditSubscription,
    ErasureMutation,
    ErasureQuery,
    RetentionMutation,
    RetentionQuery,
)
from app.billing.schema import BillingMutation, BillingQuery
from app.compliance.schema import ComplianceMutation, ComplianceQuery
from app.exports.schema import ExportsMutation, ExportsQuery
from app.jobs.schema import JobsSubscription
from app.metrics.schema import MetricsQuery
from app.orgs.schema import OrgsMutation, OrgsQuery
from app.policies.schema import PoliciesMutation, PoliciesQuery
from app.reports.schema import ReportsMutation, ReportsQuery
from app.scalars import DateTime
from app.settings import Settings
from app.sso.schema import SsoMutation, SsoQuery
from app.webhooks.schema import WebhooksMutation, WebhooksQuery


@strawberry.type(description="Read operations.")
class Query(
    OrgsQuery,
    AgentsQuery,
    AuditQuery,
    RetentionQuery,
    ErasureQuery,
    ComplianceQuery,
    AlertsQuery,
    BillingQuery,
    ActivityQuery,
    MetricsQuery,
    PoliciesQuery,
    WebhooksQuery,
    ReportsQuery,
    ExportsQuery,
    SsoQuery,
):
    pass


@strawberry.type(description="Write operations.")
class Mutation(
    OrgsMutation,
    AgentsMutation,
    AuditMutation,
    RetentionMutation,
    ErasureMutation,
    ComplianceMutation,
    AlertsMutation,
    BillingMutation,
    PoliciesMutation,
    WebhooksMutation,
    ReportsMutation,
    ExportsMutation,
    SsoMutation,
):
    pass


@strawberry.type(description="Live updates over WebSocket (graphql-transport-ws) or an HTTP stream (multipart or SSE).")
class Subscription(AuditSubscription, AlertsSubscription, JobsSubscription):
    pass


class SubscriptionOverHTTP(InvalidOperationTypeError):
    """A subscription sent as a plain HTTP request (no streaming Accept): the view answers 400 with this reason."""

    def __init__(self) -> None:
        super().__init__(OperationType.SUBSCRIPTION)

    def as_http_error_reason(self, method: str) -> str:
        return (
            "subscriptions are served over WebSocket (graphql-transport-ws at /graphql) or as an HTTP stream: "
            "send Accept: multipart/mixed;subscriptionSpec=1.0 (multipart) or Accept: text/event-stream (SSE)"
        )


# every root field checks its domain's declaration (app/<domain>/auth.py) before its resolver; a root field
# without one fails here, at import, before any schema is built
guard_root_types(Query=Query, Mutation=Mutation, Subscription=Subscription)


class AgentrailSchema(strawberry.Schema):
    async def execute(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
        operation_extensions: dict[str, Any] | None = None,
    ) -> ExecutionResult:
        # `execute` serves HTTP only (WebSocket operations go through `subscribe`): strawberry would run a
        # subscription here and fail inside it; it is refused before execution instead
        allowed = set(allowed_operation_types or DEFAULT_ALLOWED_OPERATION_TYPES) - {OperationType.SUBSCRIPTION}
        try:
            return await super().execute(
                query,
                variable_values,
                context_value,
                root_value,
                operation_name,
                allowed_operation_types=allowed,
                operation_extensions=operation_extensions,
            )
        except InvalidOperationTypeError as exc:
            if exc.operation_type is OperationType.SUBSCRIPTION:
                raise SubscriptionOverHTTP from None
            raise

    def process_errors(self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None) -> None:
        # ErrorCodes logs the unexpected ones (with the request id); expected errors are not log noise.
        return None


def build_schema(settings: Settings | None = None) -> strawberry.Schema:
    settings = settings or Settings()
    # The limiters' validation rules are classes built per extension instance; built once here, they stay
    # the same objects from request to request, so the validation cache (keyed by the rules) can hit.
    limit_rules = [
        *QueryDepthLimiter(max_depth=settings.max_query_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=settings.max_query_aliases).validation_rules,
    ]
    extensions: list[Any] = [
        lambda: AddValidationRules(limit_rules),
        lambda: MaxTokensLimiter(max_token_count=settings.max_query_tokens),
        ErrorCodes,
        lambda: QueryCost(settings=settings),
        # agents send the same few documents over and over: parse and validate each once
        DocumentCache,
        lambda: ValidationCache(maxsize=512),
    ]
    schema = AgentrailSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=extensions,
        config=StrawberryConfig(auto_camel_case=True, scalar_map={datetime: DateTime}),
        execution_context_class=FastLeafExecutionContext,
    )
    commit_mutations(schema._schema)
    return schema


def print_sdl() -> str:
    return build_schema().as_str() + "\n"
