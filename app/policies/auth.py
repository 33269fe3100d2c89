"""Who may call the policies domain's operations (see app/permissions.py)."""

from app.permissions import Permissions, anyone, managers

READ = anyone("read policies")
CHANGE = managers("change policies")

PERMISSIONS = Permissions(
    "policies",
    {
        "Query.policies": READ,
        "Query.policy": READ,
        "Query.policyAnalytics": anyone("read policy analytics"),
        "Mutation.createPolicy": managers("create policies"),
        "Mutation.updatePolicy": CHANGE,
        "Mutation.deletePolicy": managers("delete policies"),
        "Mutation.createPolicyVersion": CHANGE,
        "Mutation.restorePolicyVersion": CHANGE,
        "Mutation.attachPolicy": managers("attach and detach policies"),
        "Mutation.detachPolicy": managers("attach and detach policies"),
        "Mutation.clonePack": managers("create policies"),
    },
)
