"""Who may call the metrics domain's operations (see app/permissions.py)."""

from app.permissions import Permissions, anyone

PERMISSIONS = Permissions("metrics", {"Query.metrics": anyone("read metrics")})
