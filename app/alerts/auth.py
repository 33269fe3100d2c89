"""Who may call the alerts domain's operations (see app/permissions.py)."""

from app.permissions import Permissions, anyone, users

READ = anyone("read alerts")

PERMISSIONS = Permissions(
    "alerts",
    {
        "Query.alerts": READ,
        "Query.alert": READ,
        "Subscription.alerts": READ,
        "Mutation.resolveAlert": users("resolve alerts"),
        "Mutation.reopenAlert": users("reopen alerts"),
    },
)
