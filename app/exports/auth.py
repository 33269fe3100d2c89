"""Who may call the exports domain's operations (see app/permissions.py). Which data set a principal may
export is the data set's own declaration (`Dataset.users_only`: the activity trail is for users)."""

from app.activity import auth as activity
from app.permissions import ANY_ROLE, Access, Permissions, Scope, anyone, users
from app.principal import Role

READ = anyone("read export jobs", note="API keys see audit-log exports only")
START = anyone("start exports", note="API keys export the audit record only")
CANCEL = Access(
    "cancel exports",
    api_keys=Scope.READ,
    others=Role.ADMIN,
    note="the requester; another's export takes an owner or admin",
)
# An export's file (its `downloadUrl`, or the download with credentials): the requester, owners and admins; a
# signed link works for whoever was given it.
FILE = Access(
    "download exports",
    api_keys=Scope.READ,
    signed_link=True,
    others=Role.ADMIN,
    note="the requester, owners and admins (`downloadUrl` is null for others)",
)

PERMISSIONS = Permissions(
    "exports",
    {
        "Query.exportJobs": READ,
        "Query.exportJob": READ,
        "Mutation.startExport": START,
        "Mutation.cancelExport": CANCEL,
        "GET /api/v1/audit-logs/export": anyone("export audit records"),
        "GET /api/v1/activity/export": activity.READ,
        "GET /api/v1/exports/{job_id}": READ,
        "GET /api/v1/exports/{job_id}/download": FILE,
        # the activity trail in the seeds' export layouts: its declaration (users only)
        "POST /v1/audit/export": activity.READ,
        "GET /v1/organizations/{organization_id}/audit-log/export": activity.READ,
        "GET /api/v1/audit/export": activity.READ,
        "GET /api/v1/audit/export/download/{job_id}": users(
            "download audit exports", ANY_ROLE, others=Role.ADMIN, note="the requester, owners and admins"
        ),
    },
)
