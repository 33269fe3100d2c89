"""The request's DataLoaders, one typed attribute each: `await info.context.loaders.agent.load(agent_id)`."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from app.agents.loaders import AgentLoader
from app.alerts.loaders import AlertCountLoader, AlertsByRecordLoader
from app.audit.loaders import ChildrenLoader, RecordLoader, SpanLoader, TraceLoader, TraceRootsLoader
from app.compliance.loaders import RuleLoader
from app.dataloader import SessionLoader, SessionSource
from app.policies.loaders import AgentIdsByPolicyLoader, PoliciesByAgentLoader, VersionLoader

L = TypeVar("L", bound=SessionLoader[Any, Any])


class _OnFirstUse(Generic[L]):
    """A loader attribute of `Loaders`: made on first read, then kept in the instance (which shadows this)."""

    def __init__(self, loader_class: type[L]) -> None:
        self._loader_class = loader_class
        self._name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, loaders: Loaders, owner: type | None = None) -> L:
        loader = self._loader_class(loaders.db)
        loaders.__dict__[self._name] = loader
        return loader


class Loaders:
    """Made per request (a loader batches and caches only within its request); each loader is made on first
    use, so a request pays only for the ones its fields use."""

    agent = _OnFirstUse(AgentLoader)
    alerts_by_record = _OnFirstUse(AlertsByRecordLoader)
    alert_count = _OnFirstUse(AlertCountLoader)
    span = _OnFirstUse(SpanLoader)
    children = _OnFirstUse(ChildrenLoader)
    trace = _OnFirstUse(TraceLoader)
    trace_roots = _OnFirstUse(TraceRootsLoader)
    record = _OnFirstUse(RecordLoader)
    rule = _OnFirstUse(RuleLoader)
    policies_by_agent = _OnFirstUse(PoliciesByAgentLoader)
    agent_ids_by_policy = _OnFirstUse(AgentIdsByPolicyLoader)
    policy_version = _OnFirstUse(VersionLoader)

    def __init__(self, db: SessionSource) -> None:
        self.db = db
