"""Who may call the compliance domain's operations: rules and packs (see app/permissions.py)."""

from app.permissions import Permissions, anyone, managers

RULES = anyone("read compliance rules")
PACKS = anyone("read compliance packs")
CREATE = managers("create compliance rules")
CHANGE = managers("change compliance rules")
DELETE = managers("delete compliance rules")
INSTALL = managers("install compliance packs")
UNINSTALL = managers("uninstall compliance packs")

PERMISSIONS = Permissions(
    "compliance",
    {
        "Query.complianceRules": RULES,
        "Query.compliancePacks": PACKS,
        "Query.installedPacks": PACKS,
        "Query.complianceSettings": anyone("read compliance settings"),
        "Mutation.updateComplianceSettings": managers("change compliance settings"),
        "Mutation.createComplianceRule": CREATE,
        "Mutation.updateComplianceRule": CHANGE,
        "Mutation.deleteComplianceRule": DELETE,
        "Mutation.installCompliancePack": INSTALL,
        "Mutation.uninstallCompliancePack": UNINSTALL,
        "GET /api/v1/compliance-rules": RULES,
        "POST /api/v1/compliance-rules": CREATE,
        "GET /api/v1/compliance-rules/packs": PACKS,
        "POST /api/v1/compliance-rules/packs": INSTALL,
        "GET /api/v1/compliance-rules/packs/installed": PACKS,
        "DELETE /api/v1/compliance-rules/packs/{pack_id}": UNINSTALL,
        "GET /api/v1/compliance-rules/{rule_id}": RULES,
        "PATCH /api/v1/compliance-rules/{rule_id}": CHANGE,
        "DELETE /api/v1/compliance-rules/{rule_id}": DELETE,
    },
)
