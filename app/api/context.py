"""The per-request GraphQL context: one database session, the caller, per-request DataLoaders."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, cast

from starlette.requests import HTTPConnection

from app.api.auth import authenticate
from app.db import SYSTEM, AsyncSession
from app.errors import Unauthenticated
from app.orgs.credentials import TokenSigner
from app.orgs.principal import Principal
from app.runtime.resources import Runtime
from app.webhooks import service as webhooks


class SerializedSession:
    """The request's one AsyncSession, shared by resolvers that GraphQL runs concurrently (sibling fields,
    list items). An AsyncSession must not be used by two coroutines at once, so every call that talks to
    the database holds a per-request lock: statements interleave, one at a time, on one connection."""

    _LOCKED = frozenset(
        {
            "execute",
            "exec",
            "get",
            "scalar",
            "scalars",
            "commit",
            "rollback",
            "flush",
            "delete",
            "refresh",
            "merge",
            "close",
            "run_sync",
        }
    )

    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self._lock = asyncio.Lock()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._session, name)
        if name not in self._LOCKED:
            return attribute

        async def locked(*args: Any, **kwargs: Any) -> Any:
            async with self._lock:
                return await attribute(*args, **kwargs)

        return locked


class Context:
    def __init__(self, *, runtime: Runtime, signer: TokenSigner, connection: HTTPConnection) -> None:
        self.runtime = runtime
        self.signer = signer
        self.connection = connection
        self.connection_params: dict[str, Any] | None = None  # set by graphql-transport-ws connection_init
        self.request_id: str = connection.scope.get("state", {}).get("request_id", "")
        self.source_ip: str = connection.client.host if connection.client else "unknown"
        self._principal: Principal | None = None
        self._authenticated = False
        self._session: Any = None
        self._system_session: Any = None
        self._loaders: dict[str, Any] = {}
        # sibling resolvers run concurrently: the lazy set-up below must happen once, not once per resolver
        self._setup_lock = asyncio.Lock()

    # --- who is calling -------------------------------------------------------------------------
    def _credentials_source(self) -> dict[str, str]:
        if self.connection_params is not None:
            return {str(k).lower(): str(v) for k, v in self.connection_params.items() if isinstance(v, str)}
        return {k.lower(): v for k, v in self.connection.headers.items()}

    async def principal(self) -> Principal:
        """The authenticated caller; UNAUTHENTICATED when there is none or the credential is bad."""
        if not self._authenticated:
            self._principal = await authenticate(self._credentials_source(), runtime=self.runtime, signer=self.signer)
            self._authenticated = True
        if self._principal is None:
            raise Unauthenticated("authentication required: send `Authorization: Bearer <token>` or `X-API-Key`")
        return self._principal

    async def user(self) -> Principal:
        principal = await self.principal()
        principal.require_user("do this")
        return principal

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

    def loader(self, name: str, factory: Callable[[], Any]) -> Any:
        """Per-request DataLoader, created on first use (batches only within this request)."""
        if name not in self._loaders:
            self._loaders[name] = factory()
        return self._loaders[name]

    async def close(self) -> None:
        """At the end of the operation: queues the webhook deliveries its committed transactions emitted
        (one place for every mutation, instead of a call after each), then closes the sessions."""
        for session in (self._session, self._system_session):
            if session is not None:
                await webhooks.dispatch_emitted(self.runtime, cast(AsyncSession, session))
                with contextlib.suppress(Exception):
                    await session.close()
        self._session = None
        self._system_session = None
        self._loaders.clear()
