"""The `@cost` schema directive: what a field adds to an operation's cost, declared next to the field.

Domains declare it on their fields (`directives=[Cost(weight=…)]`); app/api/cost.py reads the declarations and
computes an operation's cost before it runs (see there and the README's "Query cost").
"""

from __future__ import annotations

import strawberry
from strawberry.schema_directive import Location


@strawberry.schema_directive(
    name="cost",
    locations=[Location.FIELD_DEFINITION, Location.INPUT_FIELD_DEFINITION],
    description=(
        "What a field adds to an operation's cost (see the README's query cost): `weight` per resolution "
        "(or, on an input field, when it is set), `listSize` the most items a list returns, `scope` lists "
        "of one bounded set that do not multiply when nested in each other."
    ),
)
class Cost:
    weight: int | None = strawberry.field(
        default=strawberry.UNSET, description="Cost of resolving the field once, beyond the nodes it returns."
    )
    list_size: int | None = strawberry.field(
        default=strawberry.UNSET, description="Most items this list returns (its declared bound)."
    )
    scope: str | None = strawberry.field(
        default=strawberry.UNSET, description="Lists of the same scope nested in each other share one bound."
    )
