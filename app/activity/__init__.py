"""The organisation's own audit trail: who changed what in the dashboard."""
