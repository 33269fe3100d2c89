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

Plain objects: a list of objects whose selection is plain (leaves as above, `__typename`, and lists of objects
read as plain attributes or through a direct resolver, app/direct.py, with plain selections of their own, to any
depth) is completed without graphql-core's per-object and per-field steps: the selection is collected once per
field of the query (fragments, aliases, @include/@skip applied by graphql-core itself), then the result's dicts
are made directly, still pausing every YIELD_EVERY objects. Anything else in the selection (a resolver, an
argument, an abstract type) leaves that list to the general path; so does anything unusual in the values (a null
for a non-null field, a value a scalar refuses, an object of another class), which is then completed again the
general way, so that errors are exactly graphql-core's.
"""

from __future__ import annotations

import asyncio
import functools
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from graphql import (
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLResolveInfo,
    is_leaf_type,
)
from graphql.pyutils import AwaitableOrValue, Path, Undefined, gather_with_cancel
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import GraphQLCoreConverter

from app.direct import DIRECT

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
    if not _is_basic(resolve):
        return None
    output_type = field.type
    nullable = not isinstance(output_type, GraphQLNonNull)
    if not nullable:
        output_type = output_type.of_type
    if not is_leaf_type(output_type):
        return None
    return resolve, output_type.coerce_output_value, nullable


def _is_basic(resolve: Any) -> bool:
    """Strawberry's resolver for a field that is a plain attribute (no resolver function, no extensions)."""
    return resolve is not None and getattr(resolve, "__name__", "") == "_get_basic_result"


# a plain object's selection, per response name: (kind, a, b, c), see ObjectPlan below
_TYPENAME, _LEAF, _ATTRIBUTE_LIST, _DIRECT_LIST = range(4)
FieldStep = tuple[str, int, Any, Any, Any]


@dataclass(slots=True)
class ObjectPlan:
    """How to complete objects of one type under one field of the query: the class its values must be, and
    per response name in the selection's order one of (TYPENAME, name), (LEAF, resolve, coerce, nullable),
    (ATTRIBUTE_LIST or DIRECT_LIST, read, item plan, list nullable)."""

    origin: type
    nullable: bool  # the list's items may be null
    steps: list[FieldStep]


class _Irregular(Exception):
    """A value the plain completion does not handle: the list is completed again the general way."""


def _object_list_type(output_type: GraphQLOutputType) -> tuple[GraphQLObjectType, bool, bool] | None:
    """(item type, list nullable, items nullable) when `output_type` is a list of objects."""
    list_nullable = not isinstance(output_type, GraphQLNonNull)
    if not list_nullable:
        output_type = output_type.of_type  # type: ignore[union-attr]
    if not isinstance(output_type, GraphQLList):
        return None
    item_type = output_type.of_type
    item_nullable = not isinstance(item_type, GraphQLNonNull)
    if not item_nullable:
        item_type = item_type.of_type
    if not isinstance(item_type, GraphQLObjectType):
        return None
    return item_type, list_nullable, item_nullable


# list items completed between two pauses for the other requests of the process (some milliseconds of work)
YIELD_EVERY = 200


class FastLeafExecutionContext(StrawberryGraphQLCoreExecutionContext):
    _plans: ClassVar[dict[tuple[GraphQLObjectType, str], LeafPlan | None]] = {}
    _since_pause: int = 0  # list items completed since the last pause (per execution)

    plain_objects: ClassVar[bool] = True  # the plain-object completion (tests compare it with the general path)
    _object_plans: dict[tuple[GraphQLObjectType, int], tuple[Any, ObjectPlan | None]]  # per execution

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
        plan = self._items_plan(item_type, field_details_list) if self.plain_objects else None
        if plan is not None:

            def general() -> AwaitableOrValue[list[Any]]:
                return self._complete_general(item_type, field_details_list, info, path, items, position_context)

            return self._complete_plain(plan, items, general)
        return self._complete_general(item_type, field_details_list, info, path, items, position_context)

    def _complete_general(
        self,
        item_type: GraphQLOutputType,
        field_details_list: Any,
        info: GraphQLResolveInfo[Any],
        path: Path,
        items: list[Any] | tuple[Any, ...],
        position_context: Any,
    ) -> AwaitableOrValue[list[Any]]:
        if self._since_pause + len(items) <= YIELD_EVERY:
            self._since_pause += len(items)
            return super().complete_iterable_value(item_type, field_details_list, info, path, items, position_context)
        return self._complete_in_slices(item_type, field_details_list, info, path, items, position_context)

    @classmethod
    def _leaf(cls, parent_type: GraphQLObjectType, field_name: str) -> LeafPlan | None:
        key = (parent_type, field_name)
        plan = cls._plans.get(key, _UNPLANNED)
        if plan is _UNPLANNED:
            plan = cls._plans[key] = _leaf_plan(parent_type, field_name)
        return plan

    # -- plain objects ------------------------------------------------------------------------------------

    def _items_plan(self, item_type: GraphQLOutputType, field_details_list: Any) -> ObjectPlan | None:
        nullable = not isinstance(item_type, GraphQLNonNull)
        if not nullable:
            item_type = item_type.of_type  # type: ignore[union-attr]
        if not isinstance(item_type, GraphQLObjectType):
            return None
        return self._object_plan(item_type, field_details_list, nullable)

    def _object_plan(
        self, object_type: GraphQLObjectType, field_details_list: Any, nullable: bool
    ) -> ObjectPlan | None:
        """The plan for objects of `object_type` under this field of the query (memoized per execution, on the
        identity of the field's details as graphql-core's collect_subfields is), or None when its selection
        is not plain."""
        try:
            plans = self._object_plans
        except AttributeError:
            plans = self._object_plans = {}
        key = (object_type, id(field_details_list))
        cached = plans.get(key)
        if cached is None:
            cached = plans[key] = (field_details_list, self._make_plan(object_type, field_details_list, nullable))
        return cached[1]

    def _make_plan(self, object_type: GraphQLObjectType, field_details_list: Any, nullable: bool) -> ObjectPlan | None:
        manager = self.middleware_manager
        if object_type.is_type_of is not None or (manager is not None and manager.middlewares):
            return None
        definition = (object_type.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
        origin = getattr(definition, "origin", None)
        if not isinstance(origin, type):
            return None
        grouped_field_set, new_defer_usages, _forbidden = self.collect_subfields(object_type, field_details_list)
        if new_defer_usages:
            return None
        steps: list[FieldStep] = []
        for response_name, sub_details in grouped_field_set.items():
            step = self._field_step(object_type, response_name, sub_details)
            if step is None:
                return None
            steps.append(step)
        return ObjectPlan(origin=origin, nullable=nullable, steps=steps)

    def _field_step(self, object_type: GraphQLObjectType, response_name: str, details_list: Any) -> FieldStep | None:
        details = details_list[0]
        node = details.node
        if node.arguments or details.fragment_variable_values is not None:
            return None
        name = node.name.value
        if name == "__typename":
            return (response_name, _TYPENAME, object_type.name, None, None)
        field = object_type.fields.get(name)
        if field is None or field.args:
            return None
        strawberry_field = (field.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
        basic = _is_basic(field.resolve)
        read: Callable[[Any], Any] | None = None
        if basic and strawberry_field is not None and strawberry_field.default_resolver is getattr:
            read = operator.attrgetter(strawberry_field.python_name)  # what the basic resolver does, in one call
        elif basic and field.resolve is not None:
            read = functools.partial(field.resolve, info=None)
        leaf = self._leaf(object_type, name)
        if leaf is not None and read is not None:
            _resolve, coerce, leaf_nullable = leaf
            return (response_name, _LEAF, read, coerce, leaf_nullable)
        listed = _object_list_type(field.type)
        if listed is None:
            return None
        item_type, list_nullable, item_nullable = listed
        if basic:
            if read is None:
                return None
            kind = _ATTRIBUTE_LIST
        else:
            if strawberry_field is None or strawberry_field.extensions or strawberry_field.permission_classes:
                return None
            direct = (strawberry_field.metadata or {}).get(DIRECT)
            if direct is None:
                return None
            read = direct
            kind = _DIRECT_LIST
        item_plan = self._object_plan(item_type, details_list, item_nullable)
        if item_plan is None:
            return None
        return (response_name, kind, read, item_plan, list_nullable)

    def _complete_plain(
        self, plan: ObjectPlan, items: list[Any] | tuple[Any, ...], general: Callable[[], AwaitableOrValue[list[Any]]]
    ) -> AwaitableOrValue[list[Any]]:
        completed: list[Any] = []
        work: list[list[Any]] = [[items, plan, completed, 0]]
        try:
            if self._plain_slice(work):
                return completed
        except Exception:  # anything unusual: the general way, with graphql-core's own errors
            return general()
        return self._plain_in_slices(work, completed, general)

    async def _plain_in_slices(
        self, work: list[list[Any]], completed: list[Any], general: Callable[[], AwaitableOrValue[list[Any]]]
    ) -> list[Any]:
        done = False
        while not done:
            self._since_pause = 0
            await asyncio.sleep(0)
            try:
                done = self._plain_slice(work)
            except Exception:  # anything unusual: the general way, with graphql-core's own errors
                result = general()
                return await result if self.is_awaitable(result) else result  # type: ignore[return-value]
        return completed

    def _plain_slice(self, work: list[list[Any]]) -> bool:
        """Completes objects of `work` (tasks: items, plan, the list to fill, how many are done) up to the
        pause; True when all are done. Raises _Irregular (or what a coercion raised) on an unusual value."""
        budget = YIELD_EVERY - self._since_pause
        while work:
            task = work.pop()
            items, plan, out, start = task
            end = min(len(items), start + max(budget, 0))
            origin, nullable, steps = plan.origin, plan.nullable, plan.steps
            append = out.append
            for index in range(start, end):
                item = items[index]
                if type(item) is not origin:
                    if item is None and nullable:
                        append(None)
                        continue
                    raise _Irregular
                row: dict[str, Any] = {}
                for name, kind, read, then, nullable_value in steps:
                    if kind == _LEAF:
                        value = read(item)
                        if value is None:
                            if not nullable_value:
                                raise _Irregular
                            row[name] = None
                        else:
                            value = then(value)
                            if value is None or value is Undefined:
                                raise _Irregular
                            row[name] = value
                    elif kind == _TYPENAME:
                        row[name] = read
                    else:
                        value = read(item)
                        if value is None:
                            if kind == _ATTRIBUTE_LIST and nullable_value:
                                row[name] = None
                                continue
                            raise _Irregular
                        if not isinstance(value, list | tuple):
                            raise _Irregular
                        sub: list[Any] = []
                        row[name] = sub
                        if value:
                            work.append([value, then, sub, 0])
                append(row)
            budget -= end - start
            if end < len(items):
                task[3] = end
                work.append(task)
                self._since_pause = YIELD_EVERY
                return False
        self._since_pause = YIELD_EVERY - budget
        return True

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
            plan = plans.get((parent_type, node.name.value), _UNPLANNED)
            if plan is _UNPLANNED:
                plan = self._leaf(parent_type, node.name.value)
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
