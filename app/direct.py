"""Direct resolvers: a field whose value follows from its parent object alone (no info, no arguments, no I/O),
declared next to the field so that the execution's fast path (app/api/execution.py) can read it without the
per-field machinery of graphql-core and Strawberry.

    @strawberry.field(description=..., metadata=direct(lambda span: ...))

The function returns the field's value, or None when it cannot tell from the parent alone (the general path
then runs the field's resolver as usual). Only fields without extensions or permission classes are read
directly: a declared check is never skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

DIRECT = "agentrail.direct"


def direct(resolve: Callable[[Any], Any]) -> dict[str, Any]:
    """The field metadata declaring `resolve(parent)` as the field's direct resolver."""
    return {DIRECT: resolve}
