"""Exports of the audit record and the activity trail."""
