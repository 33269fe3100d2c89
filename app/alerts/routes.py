"""REST /api/v1/alerts as the API reference documents it (seed 002): list (`?resolved=false`), get, resolve; and
the one-click unsubscribe link of alert notification emails. Thin adapters over the GraphQL fields' services."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from app.alerts import notify, service
from app.alerts.models import Alert
from app.errors import BadUserInput, NotFound
from app.pagination import PageRequest
from app.rest import params
from app.rest.openapi import Answer, Body, body_of, documented
from app.rest.params import accepts, query_of, text
from app.rest.responses import JSONResponse, answers, error_response, principal_of, row_json, source_ip
from app.unit_of_work import system_unit_of_work, unit_of_work

SEVERITIES = ("LOW", "MEDIUM", "HIGH", "CRITICAL")
MAX_LIMIT = 500


class AlertOut(Answer):
    id: str
    rule_id: str
    rule_name: str
    severity: str
    message: str
    resolved: bool
    created_at: str
    resolved_at: str | None = None


class AlertList(Answer):
    alerts: list[AlertOut]


class ResolveIn(Body):
    note: str | None = None


def alert_json(alert: Alert) -> dict[str, Any]:
    out = row_json(alert)
    out["resolved"] = alert.resolved_at is not None
    return out


@documented("List alerts, newest first", responses={200: AlertList}, graphql="Query.alerts", tag="alerts")
@params.accepts(
    params.boolean("resolved"),
    params.choice("severity", {s: s for s in SEVERITIES}, many=True),
    params.text("agentId", many=True, max_length=64),
    params.text("ruleId", many=True, max_length=64),
    params.text("traceId", max_length=64),
    params.timestamp("from"),
    params.timestamp("to"),
    params.integer("limit", minimum=1, maximum=MAX_LIMIT, default=100),
)
@answers
async def list_alerts(request: Request) -> Response:
    principal = principal_of(request)
    q = query_of(request)
    query = service.AlertQuery(
        resolved=q["resolved"],
        severities=q["severity"],
        agent_ids=q["agentId"],
        rule_ids=q["ruleId"],
        trace_id=q["traceId"],
        created_from=q["from"],
        created_to=q["to"],
    )
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        page = PageRequest(q["limit"])
        rows = (await service.list_alerts(session, query, page=page))[: page.size]
    return JSONResponse({"alerts": [alert_json(a) for a in rows]})


@documented("One alert", responses={200: AlertOut}, graphql="Query.alert", tag="alerts")
@answers
async def get_alert(request: Request) -> Response:
    principal = principal_of(request)
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        alert = await service.get_alert(session, request.path_params["alert_id"][:64])
        return JSONResponse(alert_json(alert))


@documented(
    "Mark an alert as resolved",
    body=ResolveIn,
    responses={200: AlertOut},
    graphql="Mutation.resolveAlert",
    tag="alerts",
)
@answers
async def resolve_alert(request: Request) -> Response:
    principal = principal_of(request)
    body = await body_of(request, ResolveIn)
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        alert = await service.resolve_alert(
            session, principal, request.path_params["alert_id"][:64], note=body.note, source_ip=source_ip(request)
        )
        answer = alert_json(alert)
    return JSONResponse(answer)


PAGE = '<!doctype html><html><body style="font-family:sans-serif"><p>{}</p></body></html>'


@accepts(text("user", max_length=40), text("org", max_length=40), text("signature", max_length=100))
async def unsubscribe(request: Request) -> Response:
    """Turns the member's alert emails off; the link in each email is signed for that member."""
    query = query_of(request)
    user, org, signature = query.get("user"), query.get("org"), query.get("signature")
    if not user or not org or not signature:
        return error_response(BadUserInput("this link is incomplete: user, org and signature are needed"))
    if not notify.valid_unsubscribe(request.app.state.runtime.secret_key, user, org, signature):
        return error_response(BadUserInput("this unsubscribe link is not valid", field="signature"))
    async with system_unit_of_work(request.app.state.runtime) as session:
        if not await notify.unsubscribe(session, user):
            return error_response(NotFound("no such account"))
    return HTMLResponse(PAGE.format("You will no longer receive alert emails. Turn them on again in your profile."))


routes = [
    Route("/api/v1/alerts/unsubscribe", unsubscribe, methods=["GET", "POST"]),
    Route("/api/v1/alerts", list_alerts, methods=["GET"]),
    Route("/api/v1/alerts/{alert_id}", get_alert, methods=["GET"]),
    Route("/api/v1/alerts/{alert_id}/resolve", resolve_alert, methods=["PATCH"]),
]
