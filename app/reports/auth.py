"""Who may call the reports domain's operations (see app/permissions.py)."""

from app.permissions import ANY_ROLE, Access, Permissions, Scope, users
from app.principal import Role

READ = users("read reports", ANY_ROLE, note="every member sees the organisation's reports")
REQUEST = users("request reports")
DELETE = users("delete reports", others=Role.ADMIN, note="the requester; another person's takes an owner or admin")
# A report's file (its `downloadUrl`, or the download with credentials) goes to whoever requested it and to owners
# and admins; a signed link works for whoever was given it. API keys pass the gate but find no report (404).
FILE = Access(
    "download reports",
    api_keys=Scope.READ,
    signed_link=True,
    others=Role.ADMIN,
    note="the requester, owners and admins (`downloadUrl` is null for others); API keys find none (404)",
)

PERMISSIONS = Permissions(
    "reports",
    {
        "Query.reports": READ,
        "Query.report": READ,
        "Mutation.requestReport": REQUEST,
        "Mutation.deleteReport": DELETE,
        "GET /api/v1/reports": READ,
        "POST /api/v1/reports": REQUEST,
        "GET /api/v1/reports/{report_id}": READ,
        "DELETE /api/v1/reports/{report_id}": DELETE,
        "GET /api/v1/reports/{report_id}/download": FILE,
    },
)
