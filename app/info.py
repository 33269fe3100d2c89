"""The types of the resolvers' `info`: Strawberry's `Info`, bound to what the operation runs under.

`Info`: any field's. It names `OperationScope` (runtime, sessions, DataLoaders, the principal), because a field
may run inside a shared live execution (`OrganizationContext`: the organisation only, no subscriber's
identity). `RequestInfo`: a field answered for one caller's own request (mutations that record where the
call came from, sign-in): the request `Context`, with its connection, address and token signer.

Domains cannot import `app.api` (the import contract), so the contexts are named for the type checker only;
at run time both are Strawberry's plain `Info`, which is what it looks for in a resolver's signature."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

import strawberry

if TYPE_CHECKING:
    from app.api.context import Context, OperationScope

    Info: TypeAlias = strawberry.Info[OperationScope, None]
    RequestInfo: TypeAlias = strawberry.Info[Context, None]
else:
    Info = RequestInfo = strawberry.Info
