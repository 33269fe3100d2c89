"""Agentrail: the audit trail, tracing and guardrail backend for AI agents."""

__version__ = "0.1.0"
