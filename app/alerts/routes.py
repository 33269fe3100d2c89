"""REST: the one-click unsubscribe link of alert notification emails."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from app.alerts import notify
from app.errors import BadUserInput, NotFound
from app.rest.params import accepts, query_of, text
from app.rest.responses import error_response
from app.unit_of_work import system_unit_of_work

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


routes = [Route("/api/v1/alerts/unsubscribe", unsubscribe, methods=["GET", "POST"])]
