"""The AgentAudit quick start's import, unchanged: `from agentaudit import AgentAuditClient`."""

from agentrail import Agentrail as AgentAuditClient
from agentrail import AsyncAgentrail as AsyncAgentAuditClient

__all__ = ["AgentAuditClient", "AsyncAgentAuditClient"]
