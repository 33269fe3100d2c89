"""Who may call the audit domain's operations (see app/permissions.py)."""

from app.permissions import ANY_ROLE, Permissions, Scope, anyone, managers, public, users
from app.principal import Role

READ = anyone("read audit records")
WRITE = anyone(
    "write audit records",
    scope=Scope.INGEST,
    role=Role.MEMBER,
    note="a viewer cannot ingest; a key limited to agents writes only for them",
)

# the activity trail is for people (as app/activity/auth.py), and so are its proofs
ACTIVITY_PROOF = users("prove the activity trail", ANY_ROLE)

PERMISSIONS = Permissions(
    "audit",
    {
        "Query.auditLogs": READ,
        "Query.auditLog": READ,
        "Query.trace": READ,
        "Query.traces": READ,
        "Query.verifyAuditTrail": anyone("verify the audit trail"),
        "Query.auditSigningKeys": anyone("list the digest signing keys"),
        "Query.verifyActivityTrail": users("verify the activity trail", ANY_ROLE),
        "Query.activityProof": ACTIVITY_PROOF,
        "Query.auditProof": READ,
        "Query.auditConsistencyProof": READ,
        "Query.activityConsistencyProof": ACTIVITY_PROOF,
        "GET /api/v1/audit-logs/{record_id}/proof": READ,
        "GET /api/v1/audit-logs/digests/{digest_id}/consistency": READ,
        "GET /api/v1/activity/{event_id}/proof": ACTIVITY_PROOF,
        "GET /api/v1/activity/digests/{digest_id}/consistency": ACTIVITY_PROOF,
        "GET /.well-known/agentrail-audit-keys.json": public("publish the digest signing keys", note="public keys"),
        "Query.auditRetention": READ,
        "Mutation.setAuditRetention": users("change how long audit records are kept", Role.OWNER),
        "Query.auditErasures": managers("list erasures", note="their filters may name a data subject"),
        "Query.auditErasure": managers("read an erasure"),
        "Mutation.eraseRecords": users(
            "erase records' content", Role.OWNER, note="GDPR Art. 17; on the activity trail"
        ),
        "Mutation.logEvent": WRITE,
        "Mutation.logEvents": WRITE,
        "Subscription.traceSpans": READ,
        "POST /api/v1/audit-logs": WRITE,
        "POST /api/v1/audit-logs/batch": WRITE,
        "GET /api/v1/audit-logs": READ,
        "GET /api/v1/audit-logs/{log_id}": READ,
        "GET /api/v1/audit-logs/trace/{trace_id}": READ,
        "GET /api/v1/audit-logs/{log_id}/chain": READ,
        "GET /v1/traces": READ,
    },
)
