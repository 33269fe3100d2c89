"""Who may call the agents domain's operations (see app/permissions.py)."""

from app.permissions import Permissions, anyone, users

PERMISSIONS = Permissions(
    "agents",
    {
        "Query.agents": anyone("list agents"),
        "Query.agent": anyone("read agents"),
        "Mutation.createAgent": users("create agents", note="API keys register agents by ingesting as them"),
        "Mutation.updateAgent": users("update agents"),
        "Mutation.deleteAgent": users("delete agents"),
    },
)
