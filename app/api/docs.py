"""The REST API described: its OpenAPI 3.1 document (generated from the routes, app/rest/openapi.py) and Swagger
UI, whose assets come from the swagger-ui-py package (served from here, never from a CDN)."""

from __future__ import annotations

import mimetypes
from pathlib import Path

import swagger_ui  # type: ignore[import-untyped]
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route

from app.errors import NotFound
from app.rest.openapi import document, documented
from app.rest.responses import JSONResponse, error_response

ASSETS = Path(swagger_ui.__file__).parent / "static"
_SERVED = {"swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "favicon-32x32.png"}

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Agentrail REST API</title>
<link rel="stylesheet" href="/api/docs/swagger-ui.css"><link rel="icon" href="/api/docs/favicon-32x32.png"></head>
<body><div id="swagger-ui"></div>
<script src="/api/docs/swagger-ui-bundle.js"></script>
<script src="/api/docs/swagger-ui-standalone-preset.js"></script>
<script>window.ui = SwaggerUIBundle({url: "/api/v1/openapi.json", dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: "StandaloneLayout"});</script>
</body></html>
"""


@documented("The OpenAPI 3.1 document of this REST API", tag="meta")
async def openapi_json(request: Request) -> Response:
    cached = getattr(request.app.state, "openapi", None)
    if cached is None:
        cached = request.app.state.openapi = document(request.app.routes)
    return JSONResponse(cached)


async def docs(_request: Request) -> Response:
    return HTMLResponse(_PAGE, headers={"Cache-Control": "no-cache"})


async def docs_asset(request: Request) -> Response:
    name = request.path_params["asset"]
    if name not in _SERVED:
        return error_response(NotFound(f"no such asset {name[:80]!r}"))
    media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return FileResponse(ASSETS / name, media_type=media_type, headers={"Cache-Control": "public, max-age=86400"})


routes = [
    Route("/api/v1/openapi.json", openapi_json, methods=["GET"]),
    Route("/api/docs", docs, methods=["GET"]),
    Route("/api/docs/{asset}", docs_asset, methods=["GET"]),
]
