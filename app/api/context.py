"""The per-request GraphQL context: one database session, the caller, per-request DataLoaders."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import structlog
from graphql import GraphQLSchema
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncMappingResult, AsyncResult, AsyncScalarResult
from sqlalchemy.ext.asyncio.result import AsyncTupleResult
from starlette.requests import HTTPConnection
from starlette.responses import Response

from app import unit_of_work
from app.api.auth import authenticate
from app.api.loaders import Loaders
from app.db import SYSTEM, AsyncSession
from app.errors import Unauthenticated
from app.orgs.credentials import TokenSigner
from app.principal import Principal
from app.runtime.resources import Runtime

log = structlog.get_logger(__name__)

# what passes a shared session, connection or streamed result unlocked: bookkeeping in memory, never a wait
# on the database. Anything else that awaits holds the lock; anything else at all is refused (AttributeError),
# so a method SQLAlchemy adds later cannot slip past it.
_PURE = frozenset(
    {
        # session
        "add",
        "add_all",
        "expunge",
        "expunge_all",
        "expire",
        "expire_all",
        "is_modified",
        "no_autoflush",
        "info",
        "bind",
        "get_bind",
        "sync_session",
        "identity_map",
        "new",
        "dirty",
        "deleted",
        "is_active",
        "in_transaction",
        "in_nested_transaction",
        # connection
        "dialect",
        "sync_connection",
        "closed",
        "invalidated",
        # streamed result
        "keys",
    }
)
# a streamed result's filters: new views of the same cursor, locked in turn
_VIEWS = frozenset({"scalars", "mappings", "columns", "unique", "yield_per", "tuples", "t"})
_STARTABLE = frozenset({"stream", "stream_scalars"})
# the driver's own connection runs past any lock: a shared session cannot hand it out
_REFUSED = frozenset({"get_raw_connection"})
_STREAMED = (AsyncResult, AsyncScalarResult, AsyncMappingResult, AsyncTupleResult, AsyncConnection)


class SerializedSession:
    """The request's one AsyncSession, shared by resolvers that GraphQL runs concurrently (sibling fields,
    list items). An AsyncSession must not be used by two coroutines at once, so every call that awaits the
    database holds a per-request lock: statements interleave, one at a time, on one connection.

    The same holds for what it hands out that talks to the database later: the connection (`connection()`)
    and streamed results (`stream`, `stream_scalars`). A stream holds the lock for each fetch, not while it is
    open: its consumer, or a sibling resolver, can run statements between two fetches (each server-side cursor
    is a portal of its own in the transaction), so no stream waits for a lock that its own reader holds."""

    def __init__(self, target: Any, lock: asyncio.Lock | None = None) -> None:
        self._target = target
        self._lock = lock or asyncio.Lock()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if name in _PURE:
            return attribute
        lock = self._lock
        if name in _REFUSED:
            raise AttributeError(f"{name}: the driver's connection cannot be shared; open a session of its own")
        if inspect.isasyncgenfunction(attribute):  # a result's partitions()
            return lambda *args, **kwargs: _locked_iteration(attribute(*args, **kwargs), lock)
        # AsyncConnection.stream(): awaitable (and an async context manager, which a shared one is not)
        if inspect.iscoroutinefunction(attribute) or name in _STARTABLE:

            async def locked(*args: Any, **kwargs: Any) -> Any:
                async with lock:
                    return _shared(await attribute(*args, **kwargs), lock)

            return locked
        if name in _VIEWS:
            return lambda *args, **kwargs: _shared(attribute(*args, **kwargs), lock)
        raise AttributeError(f"{name}: not known to be safe on a shared session")

    def __aiter__(self) -> AsyncIterator[Any]:  # a streamed result, row by row
        return _locked_iteration(aiter(self._target), self._lock)


def _shared(value: Any, lock: asyncio.Lock) -> Any:
    return SerializedSession(value, lock) if isinstance(value, _STREAMED) else value


async def _locked_iteration(iterator: AsyncIterator[Any], lock: asyncio.Lock) -> AsyncIterator[Any]:
    """`iterator`, each step under the lock; the lock is free while the consumer works on an item."""
    try:
        while True:
            async with lock:
                try:
                    item = await anext(iterator)
                except StopAsyncIteration:
                    return
            yield item
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            async with lock:
                await aclose()


class OperationScope:
    """What an operation's resolvers share whoever runs it: the runtime, its sessions, its DataLoaders, and
    the unit of work that commits them. `principal()` says whom it runs for."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._session: Any = None
        self._system_session: Any = None
        self.loaders = Loaders(self.db)

    async def principal(self) -> Principal:
        raise NotImplementedError

    async def caller(self) -> Principal | None:
        """What the root fields' permission declarations check (app/api/permissions.py): the principal, or
        None when nobody signed in."""
        return await self.principal()

    # --- database -------------------------------------------------------------------------------
    async def db(self) -> AsyncSession:
        """The caller's tenant session: every query through it sees only the caller's organisation."""
        principal = await self.principal()
        if self._session is None:
            self._session = SerializedSession(self.runtime.db.session(org_id=principal.org_id))
        return cast(AsyncSession, self._session)

    def system_db(self) -> AsyncSession:
        """Unscoped session, for the few operations that come before an organisation is known."""
        if self._system_session is None:
            self._system_session = SerializedSession(self.runtime.db.session(org_id=SYSTEM))
        return cast(AsyncSession, self._system_session)

    def _open_sessions(self) -> list[Any]:
        return [s for s in (self._session, self._system_session) if s is not None]

    async def commit(self) -> None:
        """Commits what the operation wrote so far and runs its after-commit effects (see `commit_mutations`)."""
        for session in self._open_sessions():
            await unit_of_work.commit(session, self.runtime)

    async def rollback(self) -> None:
        """Discards what the operation wrote since the last commit, and the effects it registered."""
        for session in self._open_sessions():
            await unit_of_work.rollback(session)

    async def close(self) -> None:
        """At the end of the operation: commits what is left (queries that write, such as roll-ups, and the
        reads of mutation results), runs its effects, then closes the sessions."""
        for session in self._open_sessions():
            try:
                await unit_of_work.commit(session, self.runtime)
            except Exception:
                log.warning("could not commit at the end of the operation", exc_info=True)
                with contextlib.suppress(Exception):
                    await unit_of_work.rollback(session)
            with contextlib.suppress(Exception):
                await session.close()
        self._session = None
        self._system_session = None
        self.loaders = Loaders(self.db)


class Context(OperationScope):
    """One request's (or one WebSocket connection's) context: the caller and where the call came from."""

    def __init__(
        self, *, runtime: Runtime, signer: TokenSigner, connection: HTTPConnection, response: Response | None = None
    ) -> None:
        super().__init__(runtime)
        self.signer = signer
        self.connection = connection
        self.response = response  # HTTP: where resolvers set cookies (sign-in's cookie mode); None on a WebSocket
        self.connection_params: dict[str, Any] | None = None  # set by graphql-transport-ws connection_init
        self.request_id: str = connection.scope.get("state", {}).get("request_id", "")
        self.source_ip: str = connection.client.host if connection.client else "unknown"
        self._principal: Principal | None = None
        self._authenticated = False
        # sibling resolvers run concurrently: the lazy set-up below must happen once, not once per resolver
        self._setup_lock = asyncio.Lock()

    def _credentials_source(self) -> dict[str, str]:
        if self.connection_params is not None:
            return {str(k).lower(): str(v) for k, v in self.connection_params.items() if isinstance(v, str)}
        return {k.lower(): v for k, v in self.connection.headers.items()}

    async def caller(self) -> Principal | None:
        """The authenticated caller, None without credentials; UNAUTHENTICATED when the credential is bad."""
        if not self._authenticated:
            self._principal = await authenticate(self._credentials_source(), runtime=self.runtime, signer=self.signer)
            self._authenticated = True
        return self._principal

    async def principal(self) -> Principal:
        """The authenticated caller; UNAUTHENTICATED when there is none or the credential is bad."""
        principal = await self.caller()
        if principal is None:
            raise Unauthenticated("authentication required: send `Authorization: Bearer <token>` or `X-API-Key`")
        return principal


class OrganizationContext(OperationScope):
    """What a shared live execution runs under (app/api/shared_subscriptions.py): its organisation and
    nothing of any subscriber (no user, key, role, connection or address), so no field can show one
    subscriber's identity to another. Its principal is the organisation itself: not a user, so anything
    declared for users only is refused in it."""

    def __init__(self, runtime: Runtime, org_id: str) -> None:
        super().__init__(runtime)
        self._principal = Principal(kind="organization", org_id=org_id)

    async def principal(self) -> Principal:
        return self._principal


def commit_mutations(schema: GraphQLSchema) -> None:
    """Each root mutation is its own transaction, owned here: committed (with its effects) as soon as its
    resolver returns, before its result's fields are read and so before the client gets the answer; rolled
    back, effects and all, when it raises, so a failed mutation leaves nothing behind while the mutations
    before it in the same request stay committed. Mutations run one after another, so each sees the last."""
    if schema.mutation_type is None:
        return
    for field in schema.mutation_type.fields.values():
        if field.resolve is not None:
            field.resolve = _committed(field.resolve)


def _committed(resolve: Callable[..., Any]) -> Callable[..., Any]:
    async def resolve_and_commit(source: Any, info: Any, **args: Any) -> Any:
        context = info.context
        try:
            result = resolve(source, info, **args)
            if inspect.isawaitable(result):
                result = await result
        except BaseException:
            with contextlib.suppress(Exception):  # the resolver's error is the one to report
                await context.rollback()
            raise
        await context.commit()
        return result

    return resolve_and_commit
