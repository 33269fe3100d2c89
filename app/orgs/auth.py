"""Who may call the orgs domain's operations (see app/permissions.py)."""

from app.permissions import ANY_ROLE, Permissions, anyone, public, users
from app.principal import Role

REVOKE_API_KEY = users(
    "revoke API keys",
    others=Role.ADMIN,
    note="a member revokes the keys they created; another person's key takes an owner or admin",
)

PERMISSIONS = Permissions(
    "orgs",
    {
        "Query.me": anyone("read who is calling"),
        "Query.apiKeys": users("list API keys", ANY_ROLE),
        "Mutation.register": public("register", note="creates an organisation and its owner"),
        "Mutation.login": public("sign in", note="throttled per address"),
        "Mutation.updateProfile": users("update a profile", ANY_ROLE, note="the caller's own profile"),
        "Mutation.createApiKey": users("create API keys", note="a key cannot create keys"),
        "Mutation.revokeApiKey": REVOKE_API_KEY,
    },
)
