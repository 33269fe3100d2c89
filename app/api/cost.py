"""Static query cost: how many nodes an operation can return, weighted for expensive fields, before it runs.

Counted as GitHub counts (nodes, not fields): every object a field returns is one node, leaves are free.
A connection's `first`/`last` (default 50) multiplies what is below its list of edges; any other list
multiplies by its declared bound. What a field costs beyond its nodes, and how long a list can be, is
declared next to the field with the `@cost` schema directive of app/cost.py (printed in schema.graphql, so
clients can compute the same figure):

    @strawberry.field(description="…", directives=[Cost(weight=2000, list_size=1000)])

- `weight`: work per resolution, added once per parent node (a whole-trace read, an aggregate, a scan);
  on an input field, added when the argument sets it (a full-text search).
- `listSize`: how many items a list field returns at most (undeclared lists count DEFAULT_LIST_SIZE).
- `scope`: lists drawing on one bounded set. Nested directly inside a list of the same scope, a list
  does not multiply again: the children of all of a trace's spans are themselves at most the trace's
  10,000 spans, however deep the tree is walked.

Introspection (`__schema`, `__type`, `__typename`) is free: it is bounded by the schema itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLUnionType,
    InlineFragmentNode,
    ListValueNode,
    ObjectValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
    get_named_type,
    is_composite_type,
    is_input_object_type,
    is_list_type,
)
from graphql.execution.values import get_argument_values, get_variable_values
from graphql.utilities import type_from_ast
from strawberry.types.unset import UNSET

from app.cost import Cost
from app.pagination import DEFAULT_PAGE_SIZE

DEFAULT_LIST_SIZE = 100
PAGE_ARGUMENTS = ("first", "last")
MAX_REPORTED_COST = 2**53 - 1


@dataclass(frozen=True, slots=True)
class Declared:
    weight: int | None = None
    list_size: int | None = None
    scope: str | None = None


_NONE = Declared()


def _declared(definition: Any) -> Declared:
    strawberry_field = (getattr(definition, "extensions", None) or {}).get("strawberry-definition")
    for directive in getattr(strawberry_field, "directives", None) or ():
        if isinstance(directive, Cost):
            return Declared(_set(directive.weight), _set(directive.list_size), _set(directive.scope))
    return _NONE


def _set(value: Any) -> Any:
    return None if value is UNSET else value


class _Arguments:
    """The arguments of a field that can change its cost (page sizes, weighted inputs), in the shape
    `get_argument_values` reads (`.args`): the others are never coerced for the analysis."""

    __slots__ = ("args",)

    def __init__(self, args: dict[str, Any]) -> None:
        self.args = args


class CostAnalysis:
    """Per schema: the declarations, read once per field, and the walk over an operation.

    Only what can change a cost is coerced: page sizes and input objects that hold a weighted field (at any
    depth). An ingest batch's records (`logEvents(input: [...])`, up to 1,000 of them) weigh nothing, so they
    are left to execution, which coerces them anyway, instead of being coerced and walked twice.
    """

    def __init__(self, schema: GraphQLSchema) -> None:
        self.schema = schema
        self._fields: dict[tuple[str, str], Declared] = {}
        self._weighted: dict[str, bool] = {}
        self._arguments: dict[tuple[str, str], _Arguments] = {}

    def weighted_input(self, type_: Any) -> bool:
        """Whether an input object type (or one nested in it) has a field with a declared weight."""
        named = get_named_type(type_)
        if not is_input_object_type(named):
            return False
        assert isinstance(named, GraphQLInputObjectType)
        found = self._weighted.get(named.name)
        if found is None:
            self._weighted[named.name] = False  # a recursive input type: its cycle adds nothing
            found = any(
                self.declared(named, name, field).weight or self.weighted_input(field.type)
                for name, field in named.fields.items()
            )
            self._weighted[named.name] = found
        return found

    def relevant(self, type_: Any) -> bool:
        """Whether a value of this type can change a cost: anything but an input object without weights."""
        return not is_input_object_type(get_named_type(type_)) or self.weighted_input(type_)

    def arguments(self, parent: Any, name: str, definition: GraphQLField) -> _Arguments:
        key = (parent.name, name)
        found = self._arguments.get(key)
        if found is None:
            found = self._arguments[key] = _Arguments(
                {n: a for n, a in definition.args.items() if n in PAGE_ARGUMENTS or self.weighted_input(a.type)}
            )
        return found

    def declared(self, parent: Any, name: str, definition: Any) -> Declared:
        key = (parent.name, name)
        found = self._fields.get(key)
        if found is None:
            found = self._fields[key] = _declared(definition)
        return found

    def operation_cost(
        self, document: DocumentNode, operation_name: str | None, variables: dict[str, Any] | None
    ) -> int | None:
        """The operation's cost; None when it cannot be known statically (the variables do not coerce:
        execution then reports that error itself)."""
        prepared = self._prepare(document, operation_name, variables)
        if prepared is None:
            return None
        walk, root, operation = prepared
        # nested multipliers can make any number: what is reported stays an integer JSON carries exactly
        return min(walk.selections(root, operation.selection_set, 1, None, None), MAX_REPORTED_COST)

    def actual_cost(
        self, document: DocumentNode, operation_name: str | None, variables: dict[str, Any] | None, data: Any
    ) -> int | None:
        """What the operation cost once it ran: the same count over the nodes its result really holds
        (every object returned is one node, a list counts its items, not its bound), plus the weight of every
        weighted field that was resolved. None when the operation cannot be analysed."""
        prepared = self._prepare(document, operation_name, variables)
        if prepared is None:
            return None
        walk, root, operation = prepared
        return min(walk.returned(root, (operation.selection_set,), data), MAX_REPORTED_COST)

    def _prepare(
        self, document: DocumentNode, operation_name: str | None, variables: dict[str, Any] | None
    ) -> tuple[_Walk, Any, OperationDefinitionNode] | None:
        operation: OperationDefinitionNode | None = None
        fragments: dict[str, FragmentDefinitionNode] = {}
        for definition in document.definitions:
            if isinstance(definition, FragmentDefinitionNode):
                fragments[definition.name.value] = definition
            elif isinstance(definition, OperationDefinitionNode) and (
                operation_name is None or (definition.name and definition.name.value == operation_name)
            ):
                operation = operation or definition
        if operation is None:
            return None
        root = self.schema.get_root_type(operation.operation)
        if root is None:
            return None
        # a variable given whole as an argument has that argument's type; one inside a literal is always kept
        nested = _variables_in_literals(document)
        wanted = [
            d
            for d in operation.variable_definitions or ()
            if d.variable.name.value in nested or (t := type_from_ast(self.schema, d.type)) is None or self.relevant(t)
        ]
        coerced = get_variable_values(self.schema, wanted, variables or {})
        if isinstance(coerced, list):
            return None
        return _Walk(self, fragments, coerced), root, operation


# what the result walk looks at in one object: (response name, weight of resolving it, its composite type or
# None for a leaf, the selection sets below it)
_Returned = tuple[str, int, Any, tuple[SelectionSetNode, ...]]


class _Walk:
    def __init__(self, analysis: CostAnalysis, fragments: dict[str, FragmentDefinitionNode], variables: Any) -> None:
        self.analysis = analysis
        self.fragments = fragments
        self.variables = variables
        self._plans: dict[tuple[str, tuple[int, ...]], list[_Returned]] = {}

    def returned(self, parent: Any, selection_sets: tuple[SelectionSetNode, ...], value: Any) -> int:
        """Nodes and weights of what one object of the result (`value`, keyed by response names) holds."""
        if not isinstance(value, dict):
            return 0
        total = 0
        for response_name, weight, named, below in self._plan(parent, selection_sets):
            if response_name not in value:
                continue  # a fragment on another type, or a field skipped (@skip, @include)
            total += weight
            if named is not None:
                total += self._objects(named, below, value[response_name])
        return total

    def _objects(self, named: Any, below: tuple[SelectionSetNode, ...], value: Any) -> int:
        if value is None:
            return 0
        if isinstance(value, list):
            plan = self._plan(named, below)
            if all(composite is None for _, _, composite, _ in plan):
                # objects with only leaves below them (some weighted): one node each plus the weights of the
                # fields they hold, counted in one loop rather than a call per object (a 10,000-span list is
                # counted in milliseconds, not tens of them, during which the event loop would wait)
                weights = [(name, weight) for name, weight, _, _ in plan]
                total = 0
                for item in value:
                    if item is None:
                        continue
                    if isinstance(item, list):
                        total += self._objects(named, below, item)
                        continue
                    total += 1
                    if isinstance(item, dict):
                        for name, weight in weights:
                            if name in item:
                                total += weight
                return total
            return sum(self._objects(named, below, item) for item in value)
        return 1 + self.returned(named, below, value)

    def _plan(self, parent: Any, selection_sets: tuple[SelectionSetNode, ...]) -> list[_Returned]:
        """Per type and selection: the fields that count (weighted or composite), by response name, merged
        as execution merges them (a name selected twice walks both selections below it)."""
        key = (parent.name, tuple(id(s) for s in selection_sets))
        found = self._plans.get(key)
        if found is not None:
            return found
        grouped: dict[str, list[tuple[Any, FieldNode]]] = {}
        for selection_set in selection_sets:
            for owner, node in self._fields(parent, selection_set, frozenset()):
                if not node.name.value.startswith("__"):
                    grouped.setdefault(node.alias.value if node.alias else node.name.value, []).append((owner, node))
        plan: list[_Returned] = []
        for response_name, fields in grouped.items():
            owner, node = fields[0]
            for concrete in self._possible(owner):
                definition: GraphQLField | None = concrete.fields.get(node.name.value)
                if definition is None:
                    continue
                weight = self._weight(concrete, node, definition)
                named = get_named_type(definition.type)
                composite = named if is_composite_type(named) else None
                if weight or composite is not None:
                    below = tuple(n.selection_set for _, n in fields if n.selection_set is not None)
                    plan.append((response_name, weight, composite, below))
                break
        self._plans[key] = plan
        return plan

    def _weight(self, parent: Any, node: FieldNode, definition: GraphQLField) -> int:
        declared = self.analysis.declared(parent, node.name.value, definition)
        relevant = self.analysis.arguments(parent, node.name.value, definition)
        arguments = get_argument_values(cast(Any, relevant), node, self.variables) if relevant.args else {}
        return (declared.weight or 0) + self._input_weights(definition, arguments)

    def _fields(self, parent: Any, selection_set: SelectionSetNode, seen: frozenset[str]) -> list[tuple[Any, Any]]:
        """(type, field node) for every field selected on `parent`, fragments expanded (on an abstract
        type, every possible type's fields count: an upper bound)."""
        out: list[tuple[Any, Any]] = []
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                out.append((parent, selection))
            elif isinstance(selection, InlineFragmentNode):
                target = parent
                if selection.type_condition is not None:
                    target = self.analysis.schema.get_type(selection.type_condition.name.value) or parent
                out.extend(self._fields(target, selection.selection_set, seen))
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.fragments.get(name)
                if fragment is None or name in seen:
                    continue
                target = self.analysis.schema.get_type(fragment.type_condition.name.value) or parent
                out.extend(self._fields(target, fragment.selection_set, seen | {name}))
        return out

    def selections(
        self, parent: Any, selection_set: SelectionSetNode, multiplier: int, scope: str | None, page: int | None
    ) -> int:
        total = 0
        for owner, node in self._fields(parent, selection_set, frozenset()):
            name = node.name.value
            if name.startswith("__"):
                continue
            for concrete in self._possible(owner):
                definition: GraphQLField | None = concrete.fields.get(name)
                if definition is not None:
                    total += self.field(concrete, node, definition, multiplier, scope, page)
                    break
        return total

    def _possible(self, owner: Any) -> list[Any]:
        if isinstance(owner, GraphQLObjectType):
            return [owner]
        if isinstance(owner, GraphQLInterfaceType | GraphQLUnionType):
            return list(self.analysis.schema.get_possible_types(owner))
        return []

    def field(
        self,
        parent: Any,
        node: FieldNode,
        definition: GraphQLField,
        multiplier: int,
        scope: str | None,
        page: int | None,
    ) -> int:
        declared = self.analysis.declared(parent, node.name.value, definition)
        relevant = self.analysis.arguments(parent, node.name.value, definition)
        arguments = get_argument_values(cast(Any, relevant), node, self.variables) if relevant.args else {}
        cost = multiplier * ((declared.weight or 0) + self._input_weights(definition, arguments))
        named = get_named_type(definition.type)
        if not is_composite_type(named):
            return cost
        items = multiplier
        child_page: int | None = None
        if any(arg in definition.args for arg in PAGE_ARGUMENTS):
            # a connection: its page size applies to the list of edges below it
            sizes = [arguments.get(arg) for arg in PAGE_ARGUMENTS]
            child_page = max((s for s in sizes if isinstance(s, int)), default=DEFAULT_PAGE_SIZE)
            child_page = max(0, child_page)
        if _is_list(definition.type):
            if page is not None:
                items = multiplier * page
            elif declared.scope is not None and declared.scope == scope:
                items = multiplier  # a list of the same bounded set as the one it is nested in
            else:
                items = multiplier * (declared.list_size if declared.list_size is not None else DEFAULT_LIST_SIZE)
        cost += items  # one node per object returned
        if node.selection_set is not None:
            child_scope = declared.scope if _is_list(definition.type) else None
            cost += self.selections(named, node.selection_set, items, child_scope, child_page)
        return cost

    def _input_weights(self, definition: GraphQLField, arguments: dict[str, Any]) -> int:
        total = 0
        for name, argument in definition.args.items():
            value = arguments.get(name)
            if value is not None:
                total += self._input_value_weight(argument.type, value)
        return total

    def _input_value_weight(self, type_: Any, value: Any) -> int:
        named = get_named_type(type_)
        if not is_input_object_type(named) or value is None:
            return 0
        values = value if isinstance(value, list) else [value]
        total = 0
        assert isinstance(named, GraphQLInputObjectType)
        for item in values:
            for field_name, input_field in named.fields.items():
                field_value = _input_field_value(item, field_name, input_field)
                if field_value is None:
                    continue
                declared = self.analysis.declared(named, field_name, input_field)
                total += (declared.weight or 0) + self._input_value_weight(input_field.type, field_value)
        return total


def _variables_in_literals(document: DocumentNode) -> set[str]:
    """Names of the variables used inside list or object literals of the document's arguments."""
    found: set[str] = set()

    def literal(value: Any, inside: bool) -> None:
        if isinstance(value, VariableNode):
            if inside:
                found.add(value.name.value)
        elif isinstance(value, ListValueNode):
            for item in value.values:
                literal(item, True)
        elif isinstance(value, ObjectValueNode):
            for field in value.fields:
                literal(field.value, True)

    def selections(selection_set: SelectionSetNode | None) -> None:
        for selection in selection_set.selections if selection_set is not None else ():
            for argument in getattr(selection, "arguments", None) or ():
                literal(argument.value, False)
            for directive in selection.directives or ():
                for argument in directive.arguments or ():
                    literal(argument.value, False)
            selections(getattr(selection, "selection_set", None))

    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode | FragmentDefinitionNode):
            selections(definition.selection_set)
    return found


def _input_field_value(item: Any, name: str, input_field: Any) -> Any:
    if isinstance(item, dict):
        return item.get(name)
    # strawberry coerces input objects into instances of their class, keyed by the Python name
    definition = (input_field.extensions or {}).get("strawberry-definition")
    return getattr(item, getattr(definition, "python_name", name), None)


def _is_list(type_: Any) -> bool:
    while isinstance(type_, GraphQLNonNull):
        type_ = type_.of_type
    return is_list_type(type_) or isinstance(type_, GraphQLList)
