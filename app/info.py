"""`Info`, the type of every resolver's `info`: Strawberry's, bound to our request context.

Domains cannot import `app.api` (the import contract), so the context is bound for the type checker only;
at run time this is Strawberry's plain `Info`, which is what it looks for in a resolver's signature."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

import strawberry

if TYPE_CHECKING:
    from app.api.context import Context

    Info: TypeAlias = strawberry.Info[Context, None]
else:
    Info = strawberry.Info
