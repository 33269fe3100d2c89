"""Offline verifier of Agentrail proof bundles (see bundle.py for the format and the checks)."""

from agentrail_verify.bundle import FORMAT, Report, load_public_key, verify_file, verify_lines

__all__ = ["FORMAT", "Report", "load_public_key", "verify_file", "verify_lines"]
