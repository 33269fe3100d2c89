"""Who may call the metrics domain's operations (see app/permissions.py)."""

from app.permissions import Permissions, anyone

READ = anyone("read metrics")

PERMISSIONS = Permissions("metrics", {"Query.metrics": READ, "GET /v1/metrics": READ})
