"""Who may call the jobs domain's operations (see app/permissions.py)."""

from app.permissions import Permissions, anyone

PERMISSIONS = Permissions(
    "jobs",
    {"Subscription.jobUpdates": anyone("follow jobs", note="only the exports and reports the caller requested")},
)
