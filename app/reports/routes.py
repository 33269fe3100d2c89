"""REST /api/v1/reports as the API reference documents it (seed 002): list, request, status, download, delete.
Statuses as the document writes them (`pending` … `ready`). Thin adapters over the GraphQL fields' services."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field, field_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.pagination import PageRequest
from app.principal import Principal
from app.reports import auth, data, service
from app.reports.models import Report
from app.rest import params
from app.rest.downloads import SIGNED_LINK, download
from app.rest.openapi import FILE, Answer, Body, body_of, documented
from app.rest.params import accepts, query_of
from app.rest.responses import JSONResponse, answers, principal_of, row_json, source_ip
from app.runtime.resources import Runtime
from app.unit_of_work import unit_of_work

STATUSES = ("pending", "running", "ready", "failed")
MAX_LIMIT = 500


class ReportIn(Body):
    type: str = Field(description=", ".join(data.TYPES))
    from_: datetime = Field(alias="from")
    to: datetime
    format: str = Field(default="PDF", description=", ".join(service.FORMATS))
    agent_ids: list[str] | None = None

    @field_validator("type")
    @classmethod
    def _type(cls, value: Any) -> Any:
        wanted = value.strip().lower() if isinstance(value, str) else value
        if wanted not in data.TYPES:
            raise ValueError(f"must be one of {', '.join(data.TYPES)} (any case)")
        return wanted

    @field_validator("format")
    @classmethod
    def _format(cls, value: Any) -> Any:
        wanted = value.strip().upper() if isinstance(value, str) else value
        if wanted not in service.FORMATS:
            raise ValueError(f"must be one of {', '.join(service.FORMATS)} (any case)")
        return wanted


class ReportOut(Answer):
    id: str
    status: str
    type: str
    format: str
    created_at: str
    download_url: str | None = None


class ReportList(Answer):
    reports: list[ReportOut]


class Deleted(Answer):
    id: str
    deleted: bool


def report_json(request: Request, report: Report) -> dict[str, Any]:
    runtime = request.app.state.runtime
    out = row_json(report, hide=("org_id", "claimed_at", "attempts", "file_id"))
    out["status"] = report.status.lower()
    out["from"], out["to"] = out.pop("windowFrom"), out.pop("windowTo")
    principal = principal_of(request)
    may = auth.FILE.may_act_on(principal, report.requested_by)
    out["downloadUrl"] = service.download_url(runtime.settings, runtime.secret_key, report) if may else None
    return out


@documented("List all reports for your org", responses={200: ReportList}, graphql="Query.reports", tag="reports")
@params.accepts(
    params.choice("status", {s: s.upper() for s in STATUSES}, many=True),
    params.choice("type", {t: t for t in data.TYPES}, many=True),
    params.integer("limit", minimum=1, maximum=MAX_LIMIT, default=100),
)
@answers
async def list_reports(request: Request) -> Response:
    principal = principal_of(request)
    q = query_of(request)
    page = PageRequest(q["limit"])
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        rows = (await service.list_reports(session, page=page, types=q["type"], statuses=q["status"]))[: page.size]
    return JSONResponse({"reports": [report_json(request, r) for r in rows]})


@documented(
    "Request a new report (built in the background)",
    body=ReportIn,
    responses={201: ReportOut},
    graphql="Mutation.requestReport",
    tag="reports",
)
@answers
async def request_report(request: Request) -> Response:
    principal = principal_of(request)
    body = await body_of(request, ReportIn)
    runtime = request.app.state.runtime
    async with unit_of_work(runtime, principal.org_id) as session:
        report = await service.request_report(
            session,
            principal,
            runtime.settings,
            type=body.type,
            format=body.format,
            window_from=body.from_,
            window_to=body.to,
            agent_ids=body.agent_ids,
            source_ip=source_ip(request),
        )
        answer = report_json(request, report)
    return JSONResponse(answer, status_code=201)


@documented("Check report status", responses={200: ReportOut}, graphql="Query.report", tag="reports")
@answers
async def get_report(request: Request) -> Response:
    principal = principal_of(request)
    async with unit_of_work(request.app.state.runtime, principal.org_id) as session:
        report = await service.get_report(session, str(request.path_params["report_id"])[:64])
    return JSONResponse(report_json(request, report))


@documented("Delete a report", responses={200: Deleted}, graphql="Mutation.deleteReport", tag="reports")
@answers
async def delete_report(request: Request) -> Response:
    principal = principal_of(request)
    runtime = request.app.state.runtime
    async with unit_of_work(runtime, principal.org_id) as session:
        deleted = await service.delete_report(
            session, principal, runtime.files, str(request.path_params["report_id"])[:64], source_ip=source_ip(request)
        )
    return JSONResponse({"id": deleted, "deleted": True})


async def _file_of(runtime: Runtime, org_id: str, principal: Principal | None, report_id: str) -> str | None:
    return await service.file_of(runtime.db, org_id, principal, report_id)


@documented("Download the generated file", responses={200: FILE}, tag="reports")
@accepts(*SIGNED_LINK)
async def download_report(request: Request) -> Response:
    return await download(request, request.path_params["report_id"], _file_of)


routes = [
    Route("/api/v1/reports", list_reports, methods=["GET"]),
    Route("/api/v1/reports", request_report, methods=["POST"]),
    Route("/api/v1/reports/{report_id}", get_report, methods=["GET"]),
    Route("/api/v1/reports/{report_id}", delete_report, methods=["DELETE"]),
    Route("/api/v1/reports/{report_id}/download", download_report, methods=["GET"]),
]
