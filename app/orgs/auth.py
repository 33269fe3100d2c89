"""Who may call the orgs domain's operations: accounts, sessions, members, API keys (see app/permissions.py)."""

from app.permissions import ANY_ROLE, Permissions, anyone, managers, public, users
from app.principal import Role

REVOKE_API_KEY = users(
    "revoke API keys",
    others=Role.ADMIN,
    note="a member revokes the keys they created; another person's key takes an owner or admin",
)
OWN = "the caller's own"
MEMBERS = managers("manage members", note="the owner role: owners only; one owner always remains")

PERMISSIONS = Permissions(
    "orgs",
    {
        "Query.me": anyone("read who is calling"),
        "Query.apiKeys": users("list API keys", ANY_ROLE),
        "Query.members": users("list members", ANY_ROLE),
        "Query.invitations": managers("list invitations"),
        "Query.organizations": users("list your organizations", ANY_ROLE, note=OWN),
        "Query.sessions": users("list your sessions", ANY_ROLE, note=OWN),
        "Mutation.register": public("register", note="creates an organisation and its owner"),
        "Mutation.login": public("sign in", note="throttled per address and per account"),
        "Mutation.refreshSession": public("refresh a session", note="the refresh token (or cookie + CSRF header)"),
        "Mutation.logout": users("sign out", ANY_ROLE, note=OWN),
        "Mutation.revokeSession": users("end a session", ANY_ROLE, note=OWN),
        "Mutation.changePassword": users("change your password", ANY_ROLE, note="ends the other sessions"),
        "Mutation.requestPasswordReset": public("ask for a password reset", note="the same answer for any email"),
        "Mutation.resetPassword": public("reset a password", note="the emailed single-use token"),
        "Mutation.verifyEmail": public("verify an email address", note="the emailed single-use token"),
        "Mutation.requestEmailVerification": users("ask for a verification email", ANY_ROLE, note=OWN),
        "Mutation.updateProfile": users("update a profile", ANY_ROLE, note="the caller's own profile"),
        "Mutation.createApiKey": users("create API keys", note="a key cannot create keys"),
        "Mutation.revokeApiKey": REVOKE_API_KEY,
        "Mutation.inviteMember": MEMBERS,
        "Mutation.revokeInvitation": MEMBERS,
        "Mutation.resendInvitation": MEMBERS,
        "Mutation.acceptInvitation": public("accept an invitation", note="the emailed single-use token"),
        "Mutation.updateMemberRole": MEMBERS,
        "Mutation.removeMember": MEMBERS,
        "Mutation.transferOwnership": users("transfer ownership", Role.OWNER),
        "Mutation.leaveOrganization": users("leave an organization", ANY_ROLE, note="not its last owner"),
        "Mutation.switchOrganization": users("switch organizations", ANY_ROLE, note="one the caller belongs to"),
        "POST /api/v1/auth/register": public("register", note="creates an organisation and its owner"),
        "POST /api/v1/auth/login": public("sign in", note="throttled per address and per account"),
        "POST /api/v1/auth/refresh": public("refresh a session", note="the refresh token"),
        "POST /api/v1/auth/logout": users("sign out", ANY_ROLE, note=OWN),
        "GET /api/v1/auth/me": anyone("read who is calling"),
        "PATCH /api/v1/auth/me": users("update a profile", ANY_ROLE, note="the caller's own profile"),
        "GET /api/v1/auth/api-keys": users("list API keys", ANY_ROLE),
        "POST /api/v1/auth/api-keys": users("create API keys", note="a key cannot create keys"),
        "DELETE /api/v1/auth/api-keys/{key_id}": REVOKE_API_KEY,
    },
)
