"""Assembling a trace tree in memory from its spans (read in one query). Pure functions.

Rules: a span whose parent is not in the trace (not arrived yet, or another trace) is a root; a span
that is its own ancestor (a malicious or broken parent loop) is cut loose at the earliest span of the
loop, which becomes a root, so every span appears exactly once and assembly always ends.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from app.audit.models import AuditRecord


@dataclass(slots=True)
class SpanNode:
    record: AuditRecord
    depth: int = 0
    children: list[SpanNode] = field(default_factory=list)
    effective_parent: str | None = None  # parent span id as shown (None for roots)


@dataclass(slots=True)
class TraceTree:
    trace_id: str
    roots: list[SpanNode]
    spans: list[SpanNode]  # every span, in time order, with depth
    truncated: bool

    @property
    def started_at(self) -> datetime:
        return min(n.record.occurred_at for n in self.spans)

    @property
    def ended_at(self) -> datetime:
        return max(_end(n.record) for n in self.spans)

    @property
    def duration_ms(self) -> float:
        return (self.ended_at - self.started_at).total_seconds() * 1000.0

    @property
    def status(self) -> str:
        statuses = {n.record.status for n in self.spans}
        if "error" in statuses:
            return "error"
        if "blocked" in statuses:
            return "blocked"
        return "ok"

    @property
    def agent_ids(self) -> list[str]:
        return list(dict.fromkeys(n.record.agent_id for n in self.spans if n.record.agent_id))


def _end(record: AuditRecord) -> datetime:
    from datetime import timedelta

    return record.occurred_at + timedelta(milliseconds=record.duration_ms or 0)


def build_tree(trace_id: str, records: list[AuditRecord], *, truncated: bool = False) -> TraceTree:
    """`records` in time order. Children are kept in time order too."""
    nodes = [SpanNode(record=r) for r in records]
    by_span: dict[str, SpanNode] = {}
    for node in nodes:
        by_span.setdefault(node.record.span_id, node)  # a repeated span id: the first one wins

    children: dict[str, list[SpanNode]] = defaultdict(list)
    roots: list[SpanNode] = []
    for node in nodes:
        parent_id = node.record.parent_span_id
        parent = by_span.get(parent_id) if parent_id else None
        if parent is None or parent is node:
            roots.append(node)
        else:
            children[parent.record.span_id].append(node)
            node.effective_parent = parent.record.span_id

    placed = _walk(roots, children)
    if placed < len(nodes):
        # the rest hang off loops: break each loop at its earliest span
        seen = {id(n) for n in _iter(roots)}
        for node in nodes:
            if id(node) in seen:
                continue
            parent_id = node.effective_parent
            if parent_id is not None:
                siblings = children[parent_id]
                siblings[:] = [s for s in siblings if s is not node]
            node.effective_parent = None
            roots.append(node)
            _walk([node], children)
            seen.update(id(n) for n in _iter([node]))
        roots.sort(key=lambda n: (n.record.occurred_at, n.record.seq))
    return TraceTree(trace_id=trace_id, roots=roots, spans=nodes, truncated=truncated)


def _walk(roots: list[SpanNode], children: dict[str, list[SpanNode]]) -> int:
    """Sets depth and children breadth-first; returns how many nodes were reached."""
    count = 0
    queue = list(roots)
    for root in roots:
        root.depth = 0
    visited: set[int] = set()
    while queue:
        node = queue.pop()
        if id(node) in visited:
            continue
        visited.add(id(node))
        count += 1
        node.children = children.get(node.record.span_id, [])
        for child in node.children:
            child.depth = node.depth + 1
            queue.append(child)
    return count


def _iter(roots: list[SpanNode]) -> list[SpanNode]:
    out, stack, visited = [], list(roots), set()
    while stack:
        node = stack.pop()
        if id(node) in visited:
            continue
        visited.add(id(node))
        out.append(node)
        stack.extend(node.children)
    return out
