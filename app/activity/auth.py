"""Who may call the activity domain's operations (see app/permissions.py)."""

from app.permissions import ANY_ROLE, Permissions, users

# the dashboard's own trail (who changed what): for people, not for agents' keys
READ = users("read the activity trail", ANY_ROLE)

PERMISSIONS = Permissions("activity", {"Query.activity": READ})
