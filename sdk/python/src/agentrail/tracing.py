"""Spans: `with client.trace(...)`, `with client.span(...)`, `@client.observe()`.

The current span lives in a context variable, so it follows asyncio tasks (each task starts with a copy of
its creator's context) and, through `agentrail.wrap(fn)` (or `contextvars.copy_context().run`), threads and
executors. A span is one audit record, written when it ends: its `durationMs`, its `status` (`error` when an
exception left the block, with the exception's type and message in `metadata.error`), its parent's span id.
Children end before their parents; the server links a parent that arrives after its children.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import functools
import inspect
import os
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

if TYPE_CHECKING:
    from agentrail.client import _Base

P = ParamSpec("P")
R = TypeVar("R")

_current: contextvars.ContextVar[Span | None] = contextvars.ContextVar("agentrail_span", default=None)


def current_span() -> Span | None:
    """The innermost open span in this context (thread, task), or None."""
    return _current.get()


def new_trace_id() -> str:
    return os.urandom(16).hex()


def wrap(fn: Callable[P, R]) -> Callable[P, R]:
    """`fn` bound to the current context (the open span): for threads and executors, which start with an
    empty context. `threading.Thread(target=agentrail.wrap(work))`, `pool.submit(agentrail.wrap(work))`."""
    context = contextvars.copy_context()

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return context.run(fn, *args, **kwargs)

    return run


class Span:
    """An open span; set its fields while it runs (`span.result = …`, `span.metadata["k"] = …`)."""

    def __init__(
        self,
        client: _Base,
        action: str,
        *,
        trace_id: str | None,
        parent_span_id: str | None,
        agent: str | None,
        fields: dict[str, Any],
    ) -> None:
        self._client = client
        self.action = action
        self.trace_id = trace_id or new_trace_id()
        self.span_id = client._new_span_id()
        self.parent_span_id = parent_span_id
        self.agent = agent
        self.prompt: str | None = fields.pop("prompt", None)
        self.response: str | None = fields.pop("response", None)
        self.metadata: dict[str, Any] = dict(fields.pop("metadata", None) or {})
        self.args: Any = fields.pop("args", None)
        self.result: Any = fields.pop("result", None)
        self.status: str | None = fields.pop("status", None)
        self.fields = fields  # verb, provider, risk_level, execution_id, … as `log()` takes them
        self.started_at: float | None = None
        self.duration_ms: float | None = None
        self._t0 = 0.0
        self._token: contextvars.Token[Span | None] | None = None

    def set(self, **fields: Any) -> Span:
        """Sets any field `log()` takes (`span.set(verb="x", risk_level="HIGH")`)."""
        for name, value in fields.items():
            if name in ("prompt", "response", "metadata", "args", "result", "status"):
                setattr(self, name, value)
            else:
                self.fields[name] = value
        return self

    def log(self, action: str, **fields: Any) -> str:
        """A child event of this span (whatever the current context)."""
        fields.setdefault("trace_id", self.trace_id)
        fields.setdefault("parent_span_id", self.span_id)
        if self.agent is not None and "agent_id" not in fields:
            fields.setdefault("agent", self.agent)
        return self._client.log(action, **fields)

    # --- as a context manager, sync and async ---------------------------------------------------------
    def __enter__(self) -> Span:
        self.started_at = time.time()
        self._t0 = time.perf_counter()
        self._token = _current.set(self)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.duration_ms = (time.perf_counter() - self._t0) * 1000
        if self._token is not None:
            with contextlib.suppress(ValueError):  # ended in another context than it started in
                _current.reset(self._token)
            self._token = None
        if exc is not None:
            self.status = "error"
            self.metadata.setdefault("error", {"type": type(exc).__name__, "message": str(exc)[:2000]})
        self._end()

    async def __aenter__(self) -> Span:
        return self.__enter__()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(kind, exc, tb)

    def _end(self) -> None:
        started = dt.datetime.fromtimestamp(self.started_at or time.time(), dt.UTC)
        fields = dict(self.fields)
        if self.agent is not None and "agent_id" not in fields:
            fields["agent"] = self.agent
        self._client.log(
            self.action,
            trace_id=self.trace_id,
            span_id=self.span_id,
            parent_span_id=self.parent_span_id,
            prompt=self.prompt,
            response=self.response,
            metadata=self.metadata or None,
            args=self.args,
            result=self.result,
            status=self.status,
            occurred_at=started,
            duration_ms=round(self.duration_ms or 0.0, 3),
            **fields,
        )


def open_span(client: _Base, action: str, *, root: bool, **fields: Any) -> Span:
    parent = None if root else _current.get()
    trace_id = fields.pop("trace_id", None) or (parent.trace_id if parent is not None else None)
    parent_span_id = fields.pop("parent_span_id", None) or (parent.span_id if parent is not None else None)
    agent = fields.pop("agent", None) or (parent.agent if parent is not None else None) or client._agent
    return Span(client, action, trace_id=trace_id, parent_span_id=parent_span_id, agent=agent, fields=fields)


def _jsonable_args(signature: inspect.Signature | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if signature is None:
        return {"args": list(args), "kwargs": kwargs}
    try:
        bound = signature.bind_partial(*args, **kwargs)
    except TypeError:
        return {"args": list(args), "kwargs": kwargs}
    return {k: v for k, v in bound.arguments.items() if k not in ("self", "cls")}


def observe(
    client: _Base,
    action: str | None = None,
    *,
    capture_args: bool = True,
    capture_result: bool = True,
    **fields: Any,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        name: str = action or str(getattr(fn, "__qualname__", getattr(fn, "__name__", "call")))
        try:
            signature: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):
            signature = None

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                span = open_span(client, name, root=False, **fields)
                if capture_args:
                    span.args = _jsonable_args(signature, args, kwargs)
                async with span:
                    result = await fn(*args, **kwargs)
                    if capture_result:
                        span.result = result
                    return result

            return run_async  # type: ignore[return-value]

        @functools.wraps(fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            span = open_span(client, name, root=False, **fields)
            if capture_args:
                span.args = _jsonable_args(signature, args, kwargs)
            with span:
                result = fn(*args, **kwargs)
                if capture_result:
                    span.result = result
                return result

        return run

    return decorate
