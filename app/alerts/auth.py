"""Who may call the alerts domain's operations (see app/permissions.py)."""

from app.permissions import Permissions, anyone, public, users

READ = anyone("read alerts")
RESOLVE = users("resolve alerts")

PERMISSIONS = Permissions(
    "alerts",
    {
        "Query.alerts": READ,
        "Query.alert": READ,
        "Subscription.alerts": READ,
        "Mutation.resolveAlert": RESOLVE,
        "GET /api/v1/alerts": READ,
        "GET /api/v1/alerts/{alert_id}": READ,
        "PATCH /api/v1/alerts/{alert_id}/resolve": RESOLVE,
        "Mutation.reopenAlert": users("reopen alerts"),
        "GET /api/v1/alerts/unsubscribe": public("stop alert emails", note="the signed link in each alert email"),
        "POST /api/v1/alerts/unsubscribe": public("stop alert emails", note="the signed link in each alert email"),
    },
)
