"""Who may call the sso domain's operations (see app/permissions.py)."""

from app.permissions import Permissions, managers, public

MANAGE = managers("manage single sign-on", note="the client secret is write-only")

PERMISSIONS = Permissions(
    "sso",
    {
        "Query.ssoSettings": managers("read single sign-on settings", note="never the client secret"),
        "Mutation.configureSso": MANAGE,
        "Mutation.addSsoDomain": MANAGE,
        "Mutation.verifySsoDomain": MANAGE,
        "Mutation.removeSsoDomain": MANAGE,
        "Mutation.startSso": public("start single sign-on", note="by organisation id or email domain"),
        "Mutation.completeSso": public("complete single sign-on", note="the provider's code and the state, once"),
    },
)
