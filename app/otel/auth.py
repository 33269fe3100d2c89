"""Who may call the OpenTelemetry receiver (see app/permissions.py)."""

from app.audit import auth as audit
from app.permissions import Permissions

PERMISSIONS = Permissions("otel", {"POST /v1/traces": audit.WRITE, "POST /v1/logs": audit.WRITE})
