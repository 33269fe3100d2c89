"""GraphQL execution with a fast path for plain leaf fields.

graphql-core executes every field through the same general machinery (a path object, a resolve-info object,
the resolver wrapper, an awaitable check, value completion): some microseconds each, which adds up to most of
the time of a 2,000-span trace (about ten fields a span). Most of those fields are plain attributes of a
scalar or enum type. For them this execution context reads the attribute and coerces the value directly.
Anything unusual (arguments, fragment variables, a field-level middleware, a null for a non-null field, a
value the scalar refuses) takes the general path, so results and errors are exactly the same.

Fair to other requests: completing a big result (a trace of 10,000 spans, a page of 500 records with every
field) is pure Python that never awaits, so it would hold the event loop, and every other request of the
process with it, for as long as it takes (about half a second for a 10,000-span trace). Lists are therefore
completed in slices: once YIELD_EVERY list items have been completed since the last pause, the next list (or
the rest of a long one) goes on after `asyncio.sleep(0)`, so other requests run in between, whatever the
shape of the result (one long flat list, or a deep tree of short ones).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from graphql import GraphQLNonNull, GraphQLObjectType, GraphQLOutputType, GraphQLResolveInfo, is_leaf_type
from graphql.pyutils import AwaitableOrValue, Path, Undefined, gather_with_cancel
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

# a plain field: (resolver without info, output coercion, may be null)
LeafPlan = tuple[Callable[..., Any], Callable[[Any], Any], bool]


def _unplanned(*_args: Any) -> Any:
    raise AssertionError("a placeholder, never called")


# marks a field not planned yet (a plan itself, so that the plans' dict stays typed)
_UNPLANNED: LeafPlan = (_unplanned, _unplanned, False)


def _leaf_plan(parent_type: GraphQLObjectType, field_name: str) -> LeafPlan | None:
    field = parent_type.fields.get(field_name)
    if field is None or field.args:
        return None
    resolve = field.resolve
    # strawberry's resolver for a field that is a plain attribute (no resolver function, no extensions)
    if resolve is None or getattr(resolve, "__name__", "") != "_get_basic_result":
        return None
    output_type = field.type
    nullable = not isinstance(output_type, GraphQLNonNull)
    if not nullable:
        output_type = output_type.of_type
    if not is_leaf_type(output_type):
        return None
    return resolve, output_type.coerce_output_value, nullable


# list items completed between two pauses for the other requests of the process (some milliseconds of work)
YIELD_EVERY = 200


class FastLeafExecutionContext(StrawberryGraphQLCoreExecutionContext):
    _plans: ClassVar[dict[tuple[GraphQLObjectType, str], LeafPlan | None]] = {}
    _since_pause: int = 0  # list items completed since the last pause (per execution)

    def complete_iterable_value(
        self,
        item_type: GraphQLOutputType,
        field_details_list: Any,
        info: GraphQLResolveInfo[Any],
        path: Path,
        items: Iterable[Any],
        position_context: Any,
    ) -> AwaitableOrValue[list[Any]]:
        if not isinstance(items, list | tuple) or self.get_stream_usage(field_details_list, path) is not None:
            return super().complete_iterable_value(item_type, field_details_list, info, path, items, position_context)
        if self._since_pause + len(items) <= YIELD_EVERY:
            self._since_pause += len(items)
            return super().complete_iterable_value(item_type, field_details_list, info, path, items, position_context)
        return self._complete_in_slices(item_type, field_details_list, info, path, items, position_context)

    async def _complete_in_slices(
        self,
        item_type: GraphQLOutputType,
        field_details_list: Any,
        info: GraphQLResolveInfo[Any],
        path: Path,
        items: list[Any] | tuple[Any, ...],
        position_context: Any,
    ) -> list[Any]:
        """graphql-core's completion of a list (complete_iterable_value, without @stream, which the schema
        does not have), pausing every YIELD_EVERY items."""
        completed: list[Any] = []
        awaitable_indices: list[int] = []
        try:
            for index, item in enumerate(items):
                if self._since_pause >= YIELD_EVERY:
                    self._since_pause = 0
                    await asyncio.sleep(0)
                self._since_pause += 1
                item_path = path.add_key(index, None)
                if self.is_awaitable(item):
                    completed.append(
                        self.complete_awaitable_list_item_value(
                            item, item_type, field_details_list, info, item_path, position_context
                        )
                    )
                    awaitable_indices.append(index)
                elif self.complete_list_item_value(
                    item, completed, item_type, field_details_list, info, item_path, position_context
                ):
                    awaitable_indices.append(index)
        except BaseException:
            pending = [completed[i] for i in awaitable_indices]
            if pending:
                self.settle_in_background(pending)
            raise
        if awaitable_indices:
            results = await gather_with_cancel(*(completed[i] for i in awaitable_indices))
            for index, result in zip(awaitable_indices, results, strict=True):
                completed[index] = result
        return completed

    def execute_fields(
        self,
        parent_type: GraphQLObjectType,
        source_value: Any,
        path: Path | None,
        grouped_field_set: Any,
        position_context: Any,
    ) -> AwaitableOrValue[dict[str, Any]]:
        # strawberry always passes a manager, empty unless an extension wraps resolvers: only a real one counts
        manager = self.middleware_manager
        if manager is not None and manager.middlewares:
            return super().execute_fields(parent_type, source_value, path, grouped_field_set, position_context)
        plans = self._plans
        fast: dict[str, Any] = {}
        slow: dict[str, Any] = {}
        for response_name, field_details_list in grouped_field_set.items():
            details = field_details_list[0]
            node = details.node
            key = (parent_type, node.name.value)
            plan = plans.get(key, _UNPLANNED)
            if plan is _UNPLANNED:
                plan = plans[key] = _leaf_plan(parent_type, node.name.value)
            if plan is not None and not node.arguments and details.fragment_variable_values is None:
                resolve, coerce, nullable = plan
                value = resolve(source_value, None)
                if value is None:
                    if nullable:
                        fast[response_name] = None
                        continue
                else:
                    coerced = coerce(value)
                    if coerced is not None and coerced is not Undefined:
                        fast[response_name] = coerced
                        continue
            slow[response_name] = field_details_list
        if not slow:
            return fast
        result = super().execute_fields(parent_type, source_value, path, slow, position_context)
        if not fast:
            return result
        if self.is_awaitable(result):

            async def merged() -> dict[str, Any]:
                return _in_order(grouped_field_set, fast, await result)

            return merged()
        return _in_order(grouped_field_set, fast, result)  # type: ignore[arg-type]


def _in_order(grouped_field_set: Any, fast: dict[str, Any], slow: dict[str, Any]) -> dict[str, Any]:
    """Both halves in the order the query asked for them (a response keeps the selection's order)."""
    merged: dict[str, Any] = {}
    for name in grouped_field_set:
        if name in fast:
            merged[name] = fast[name]
        elif name in slow:
            merged[name] = slow[name]
    return merged
