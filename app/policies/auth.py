"""Who may call the policies domain's operations (see app/permissions.py)."""

from app.permissions import Permissions, anyone, managers

READ = anyone("read policies")
CHANGE = managers("change policies")
ANALYTICS = anyone("read policy analytics")
CREATE = managers("create policies")
DELETE = managers("delete policies")
ATTACH = managers("attach and detach policies")

PERMISSIONS = Permissions(
    "policies",
    {
        "Query.policies": READ,
        "Query.policy": READ,
        "Query.policyAnalytics": ANALYTICS,
        "Mutation.createPolicy": CREATE,
        "Mutation.updatePolicy": CHANGE,
        "Mutation.deletePolicy": DELETE,
        "Mutation.createPolicyVersion": CHANGE,
        "Mutation.restorePolicyVersion": CHANGE,
        "Mutation.attachPolicy": ATTACH,
        "Mutation.detachPolicy": ATTACH,
        "Mutation.clonePack": CREATE,
        "GET /api/v1/policies": READ,
        "POST /api/v1/policies": CREATE,
        "POST /api/v1/policies/clone-pack": CREATE,
        "GET /api/v1/policies/analytics": ANALYTICS,
        "GET /api/v1/policies/{policy_id}": READ,
        "GET /api/v1/policies/{policy_id}/analytics": READ,
        "POST /api/v1/policies/{policy_id}/versions": CHANGE,
        "GET /api/v1/policies/{policy_id}/versions": READ,
        "GET /api/v1/policies/{policy_id}/versions/{version_id}": READ,
        "POST /api/v1/policies/{policy_id}/versions/{version_id}/restore": CHANGE,
        "PATCH /api/v1/policies/{policy_id}": CHANGE,
        "DELETE /api/v1/policies/{policy_id}": DELETE,
        "POST /api/v1/policies/{policy_id}/agents": ATTACH,
        "DELETE /api/v1/policies/{policy_id}/agents": ATTACH,
    },
)
