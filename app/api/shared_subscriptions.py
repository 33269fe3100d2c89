"""Live fan-out: subscribers that asked the same question share one execution of it.

A dashboard fleet holds many identical subscriptions (`alerts` of one organisation, same selection, same
filter). Executing the selection, serialising the result and framing the message once per subscriber costs
hundreds of microseconds each, so a thousand subscribers cap an API process at a few alerts per second.
Here identical live-only subscriptions of one organisation (same document, operation and variables) run
ONE execution per process: each result is serialised once, framed once per operation id, and written to
every member's connection (see `app.runtime.websocket.FrameWriter`; plain ASGI sends where the server does
not offer it). A member whose connection stops reading is dropped with SUBSCRIBER_TOO_SLOW; the others go on.

Only subscriptions whose result depends on nothing but (organisation, document, variables) may be shared,
and only without a replay cursor (`after`): a replay is per subscriber. The shared execution runs under a
context of the organisation alone (`OrganizationContext`), never a subscriber's, so that it cannot depend on
anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import orjson
import structlog
from graphql import FieldNode, GraphQLError, NullValueNode, OperationDefinitionNode, OperationType, VariableNode, parse
from graphql.error import GraphQLSyntaxError
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
    _OperationStreamClosed,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import Message, NextMessage
from strawberry.types.execution import ExecutionResult, PreExecutionError
from strawberry.utils.aio import aclosing

from app.api.context import Context, OrganizationContext
from app.api.errors import format_error
from app.api.permissions import permits
from app.errors import SubscriberTooSlowError
from app.runtime.websocket import FrameWriter, frame_writer, text_frame

log = structlog.get_logger(__name__)

# root subscription fields that may be shared, and the argument that makes one per-subscriber (a replay)
SHAREABLE_FIELDS: dict[str, str | None] = {"alerts": "after"}

Key = tuple[str, str, str | None, bytes]


@functools.lru_cache(maxsize=256)
def _root_field(query: str, operation_name: str | None) -> FieldNode | None:
    """The single root field of the subscription the document asks for, or None if it is anything else."""
    try:
        document = parse(query)
    except GraphQLSyntaxError:
        return None
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is not None:
        operations = [op for op in operations if op.name is not None and op.name.value == operation_name]
    if len(operations) != 1 or operations[0].operation is not OperationType.SUBSCRIPTION:
        return None
    selections = operations[0].selection_set.selections
    if len(selections) != 1 or not isinstance(selections[0], FieldNode) or selections[0].directives:
        return None
    return selections[0]


def share_key(org_id: str, query: str, operation_name: str | None, variables: dict[str, Any] | None) -> Key | None:
    field = _root_field(query, operation_name)
    if field is None or field.name.value not in SHAREABLE_FIELDS:
        return None
    private_argument = SHAREABLE_FIELDS[field.name.value]
    for argument in field.arguments or ():
        if argument.name.value != private_argument:
            continue
        value = argument.value
        if isinstance(value, VariableNode):
            if (variables or {}).get(value.name.value) is not None:
                return None
        elif not isinstance(value, NullValueNode):
            return None
    return (org_id, query, operation_name, orjson.dumps(variables or {}, option=orjson.OPT_SORT_KEYS))


@dataclass
class Outcome:
    """How a member's subscription ended."""

    pre_execution: PreExecutionError | None = None
    too_slow: bool = False
    closed: bool = False


class Member:
    """One subscriber (an operation on one connection) of a shared stream."""

    def __init__(self, handler: SharingTransportWSHandler, operation: Operation[Any, Any]) -> None:
        self.handler = handler
        self.operation = operation
        self.writer: FrameWriter | None = frame_writer(handler.websocket.ws.scope)  # type: ignore[attr-defined]
        # how far behind it may fall: unsent bytes with a frame writer, queued results without one
        self.max_buffered = handler.max_buffered_bytes
        self.max_queued = handler.max_queued_results
        self.done: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self.queue: deque[dict[str, Any]] = deque()
        self.pending: list[bytes] = []
        self.wakeup = asyncio.Event()

    def deliver(self, payload: dict[str, Any], body: bytes, frames: dict[str, bytes]) -> bool:
        """Takes one result; True when this member now has frames waiting for the stream's next flush."""
        if self.done.done():
            return False
        if self.writer is None:
            if len(self.queue) >= self.max_queued:
                self.finish(Outcome(too_slow=True))
                return False
            self.queue.append(payload)
            self.wakeup.set()
            return False
        frame = frames.get(self.operation.id)
        if frame is None:
            message = b'{"id":' + orjson.dumps(self.operation.id) + b',"type":"next","payload":' + body + b"}"
            frame = frames[self.operation.id] = text_frame(message)
        self.pending.append(frame)
        return len(self.pending) == 1

    def flush(self) -> None:
        """Writes what is waiting in one go (one system call for a backlog of several results)."""
        pending, self.pending = self.pending, []
        if self.done.done() or not pending or self.writer is None:
            return
        if self.writer.buffered() > self.max_buffered:
            self.finish(Outcome(too_slow=True))
            return
        if not self.writer.write(pending[0] if len(pending) == 1 else b"".join(pending)):
            self.finish(Outcome(closed=True))

    def finish(self, outcome: Outcome) -> None:
        if not self.done.done():
            self.done.set_result(outcome)
        self.wakeup.set()

    async def run(self) -> None:
        """Sends what the stream gives this member until it ends, then ends the operation as strawberry would."""
        while True:
            while self.queue:
                next_message = {"id": self.operation.id, "type": "next", "payload": self.queue.popleft()}
                await self.operation.send_operation_message(next_message)  # type: ignore[arg-type]
            if self.done.done():
                break
            self.wakeup.clear()
            await self.wakeup.wait()
        outcome = self.done.result()
        op = self.operation
        if outcome.closed:
            self.handler.operations.pop(op.id, None)
        elif outcome.pre_execution is not None:
            await self.handler._handle_pre_execution_error(op, outcome.pre_execution)
        else:
            if outcome.too_slow:
                error = SubscriberTooSlowError()
                formatted = format_error(GraphQLError(error.message, original_error=error), "").formatted
                message: NextMessage = {"id": op.id, "type": "next", "payload": {"data": None, "errors": [formatted]}}
                await op.send_operation_message(message)
            await op.send_operation_message({"id": op.id, "type": "complete"})


class SharedStream:
    """One execution of a subscription, fanned out to its members."""

    def __init__(
        self, start: Callable[[], Awaitable[Any]], on_close: Callable[[SharedStream], None], flush_interval: float
    ) -> None:
        self.members: dict[int, Member] = {}
        self._on_close = on_close
        self._dirty: list[Member] = []
        self._flush_scheduled = False
        self._flush_interval = flush_interval
        self._last_flush = 0.0
        self.task = asyncio.create_task(self._pump(start), name="shared-subscription")

    def join(self, member: Member) -> None:
        self.members[id(member)] = member

    def leave(self, member: Member) -> None:
        self.members.pop(id(member), None)
        if not self.members and not self.task.done():
            self.task.cancel()
            self._on_close(self)

    def _schedule_flush(self) -> None:
        # The first result after a quiet spell goes out at once (as soon as the pump has taken every result
        # that was already waiting); while results keep coming, at most one write per member per
        # `flush_interval`. Each write is a system call per subscriber: under load, a member's backlog
        # goes out in one.
        if self._flush_scheduled:
            return
        self._flush_scheduled = True
        loop = asyncio.get_running_loop()
        delay = self._last_flush + self._flush_interval - loop.time()
        if delay > 0:
            loop.call_later(delay, self._flush)
        else:
            loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._last_flush = asyncio.get_running_loop().time()
        dirty, self._dirty = self._dirty, []
        for member in dirty:
            member.flush()

    def _finish_all(self, outcome: Outcome) -> None:
        self._flush()
        for member in list(self.members.values()):
            member.finish(outcome)

    async def _pump(self, start: Callable[[], Awaitable[Any]]) -> None:
        try:
            source = await start()
            first = True
            async with aclosing(source):
                async for result in source:
                    if first and isinstance(result, PreExecutionError):
                        self._finish_all(Outcome(pre_execution=result))
                        return
                    first = False
                    # the schema offers no incremental delivery (@defer/@stream): every result is whole
                    assert isinstance(result, ExecutionResult)
                    payload: dict[str, Any] = {"data": result.data}
                    if result.errors:
                        payload["errors"] = [error.formatted for error in result.errors]
                    if result.extensions:
                        payload["extensions"] = result.extensions
                    body = orjson.dumps(payload)
                    frames: dict[str, bytes] = {}
                    dirty = self._dirty
                    for member in list(self.members.values()):
                        if member.deliver(payload, body, frames):
                            dirty.append(member)
                    if dirty:
                        self._schedule_flush()
            self._finish_all(Outcome())
        except asyncio.CancelledError:
            self._finish_all(Outcome(closed=True))
            raise
        except Exception:
            log.exception("shared subscription failed")
            self._finish_all(Outcome())  # its members complete; they may subscribe again
        finally:
            self._on_close(self)


class SharedSubscriptions:
    """The process's shared streams, by (organisation, document, operation, variables)."""

    def __init__(self, *, flush_interval: float = 0.02) -> None:
        self._streams: dict[Key, SharedStream] = {}
        self._flush_interval = flush_interval

    def __len__(self) -> int:
        return len(self._streams)

    async def run(self, key: Key, member: Member, start: Callable[[], Awaitable[Any]]) -> None:
        stream = self._streams.get(key)
        if stream is None or stream.task.done():
            stream = SharedStream(start, functools.partial(self._closed, key), self._flush_interval)
            self._streams[key] = stream
        stream.join(member)
        try:
            await member.run()
        finally:
            stream.leave(member)

    def _closed(self, key: Key, stream: SharedStream) -> None:
        if self._streams.get(key) is stream:
            del self._streams[key]


async def _closing(source: AsyncIterator[Any], context: OrganizationContext) -> AsyncIterator[Any]:
    """The results of a shared execution; its context (sessions, DataLoaders) closed when they end."""
    try:
        async with aclosing(source):
            async for result in source:
                yield result
    finally:
        await context.close()


class SharingTransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """strawberry's graphql-transport-ws handler, with identical live subscriptions shared per process."""

    shared: SharedSubscriptions
    max_buffered_bytes: int
    max_queued_results: int

    async def handle_message(self, message: Any) -> None:
        # valid JSON that is not an object ([1,2], "s", 42, null) is a protocol error like any other: 4400,
        # without a traceback (strawberry would index into it and drop the connection)
        if not isinstance(message, dict):
            await self.handle_invalid_message("WebSocket message must be a JSON object")
            return
        await super().handle_message(cast(Message, message))

    async def run_operation(self, operation: Operation[Any, Any]) -> None:
        key = None
        with contextlib.suppress(Exception):  # not signed in etc.: the normal path reports it
            principal = await self.context.principal()
            key = share_key(principal.org_id, operation.query, operation.operation_name, operation.variables)
            # the shared stream runs under the organisation, so each subscriber's own permission is checked here
            # before it joins; one refused takes the normal path, whose guard answers the refusal
            field = _root_field(operation.query, operation.operation_name)
            if key is not None and field is not None and not permits(f"Subscription.{field.name.value}", principal):
                key = None
        if key is None:
            await super().run_operation(operation)
            return

        org_id = key[0]

        async def start() -> AsyncIterator[Any]:
            # the stream's own context, bound to the organisation only: not this first subscriber's
            context = OrganizationContext(self.context.runtime, org_id)
            source = await self.schema.stream(
                operation.query,
                variable_values=operation.variables,
                context_value=context,
                root_value=self.root_value,
                operation_name=operation.operation_name,
            )
            return _closing(source, context)

        with contextlib.suppress(_OperationStreamClosed):  # strawberry closed the connection over a bad document
            await self.shared.run(key, Member(self, operation), start)
