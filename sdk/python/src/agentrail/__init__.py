"""Agentrail's Python SDK: log what your agent does without ever blocking it, and never lose or duplicate a
record.

    from agentrail import Agentrail

    client = Agentrail(api_key="aa_live_…")          # or AGENTRAIL_API_KEY / AGENTRAIL_URL
    client.log("llm_call", prompt="…", response="…", metadata={"model": "gpt-4o"})
    with client.trace("refund-run", agent="support-bot"):
        with client.span("tool_use", verb="stripe:create_refund") as span:
            span.result = {"refund": "re_123"}
    client.flush()

The package depends on httpx only; `agentrail.otel` needs the `otel` extra.
"""

from agentrail._core import DropEvent, Stats
from agentrail._records import RecordTooLarge
from agentrail.client import Agentrail, AsyncAgentrail
from agentrail.errors import AgentrailError, GraphQLError
from agentrail.tracing import Span, current_span, wrap

__version__ = "0.1.0"

AgentAuditClient = Agentrail  # the name the AgentAudit quick start uses

__all__ = [
    "AgentAuditClient",
    "Agentrail",
    "AgentrailError",
    "AsyncAgentrail",
    "DropEvent",
    "GraphQLError",
    "RecordTooLarge",
    "Span",
    "Stats",
    "__version__",
    "current_span",
    "wrap",
]
