"""Who may call the compliance domain's operations: rules and packs (see app/permissions.py)."""

from app.permissions import Permissions, anyone, managers

PERMISSIONS = Permissions(
    "compliance",
    {
        "Query.complianceRules": anyone("read compliance rules"),
        "Query.compliancePacks": anyone("read compliance packs"),
        "Query.installedPacks": anyone("read compliance packs"),
        "Query.complianceSettings": anyone("read compliance settings"),
        "Mutation.updateComplianceSettings": managers("change compliance settings"),
        "Mutation.createComplianceRule": managers("create compliance rules"),
        "Mutation.updateComplianceRule": managers("change compliance rules"),
        "Mutation.deleteComplianceRule": managers("delete compliance rules"),
        "Mutation.installCompliancePack": managers("install compliance packs"),
        "Mutation.uninstallCompliancePack": managers("uninstall compliance packs"),
    },
)
