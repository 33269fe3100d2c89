"""GET /api/v1/reports/{id}/download: the report's file, with the owner's credentials or a signed link."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.principal import Principal
from app.reports import service
from app.rest.downloads import SIGNED_LINK, download
from app.rest.params import accepts
from app.runtime.resources import Runtime


async def _file_of(runtime: Runtime, org_id: str, principal: Principal | None, report_id: str) -> str | None:
    return await service.file_of(runtime.db, org_id, principal, report_id)


@accepts(*SIGNED_LINK)
async def download_report(request: Request) -> Response:
    return await download(request, request.path_params["report_id"], _file_of)


routes = [Route("/api/v1/reports/{report_id}/download", download_report, methods=["GET"])]
