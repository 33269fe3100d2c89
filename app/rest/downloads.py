"""Downloads of stored exports and reports: with the owner's credentials, or with a signed, expiring link."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from app.errors import AppError, Forbidden, NotFound
from app.principal import Principal
from app.rest.params import text
from app.rest.responses import error_response, principal_of, stored_file_response
from app.runtime.resources import Runtime
from app.runtime.signed_links import verify_path

# (runtime, org_id, principal, resource id) -> the stored file's id when the resource is ready for download
# and the caller may have it, else None. The principal is None for a signed link (whoever was given the link
# may download). The domain looks the resource up in a tenant session: another organisation's id finds nothing.
# the query parameters of a signed link (app/runtime/signed_links.py); a download route accepts these only
SIGNED_LINK = (text("org"), text("expires"), text("signature"))

FileOf = Callable[[Runtime, str, Principal | None, str], Awaitable[str | None]]


async def download(request: Request, resource_id: str, file_of: FileOf) -> Response:
    runtime: Runtime = request.app.state.runtime
    try:
        params = request.query_params
        if "signature" in params:
            org_id = params.get("org")
            if not verify_path(
                runtime.secret_key, request.url.path, org_id, params.get("expires"), params.get("signature")
            ):
                raise Forbidden("this download link is invalid or has expired; ask for a new one")
            assert org_id is not None
            principal = None
        else:
            principal = principal_of(request)
            org_id = principal.org_id
        file_id = await file_of(runtime, org_id, principal, resource_id)
        file = await runtime.files.get(org_id, file_id) if file_id else None
        if file is None:
            raise NotFound(f"no downloadable file for {resource_id!r}")
        return stored_file_response(runtime.files, file)
    except AppError as error:
        return error_response(error)
