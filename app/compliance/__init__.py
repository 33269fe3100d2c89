"""Compliance rules and packs: every audit record is checked as it arrives."""
