"""Who may call the agents domain's operations (see app/permissions.py)."""

from app.permissions import Permissions, anyone, users

LIST = anyone("list agents")
READ = anyone("read agents")
CREATE = users("create agents", note="API keys register agents by ingesting as them (agentId as a name)")
UPDATE = users("update agents")
DELETE = users("delete agents")

PERMISSIONS = Permissions(
    "agents",
    {
        "Query.agents": LIST,
        "Query.agent": READ,
        "Mutation.createAgent": CREATE,
        "Mutation.updateAgent": UPDATE,
        "Mutation.deleteAgent": DELETE,
        "GET /api/v1/agents": LIST,
        "POST /api/v1/agents": CREATE,
        "GET /api/v1/agents/{agent_id}": READ,
        "PATCH /api/v1/agents/{agent_id}": UPDATE,
        "DELETE /api/v1/agents/{agent_id}": DELETE,
    },
)
