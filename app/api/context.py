"""The per-request GraphQL context: one database session, the caller, per-request DataLoaders."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from starlette.requests import HTTPConnection

from app.api.auth import authenticate
from app.db import SYSTEM, AsyncSession
from app.errors import Unauthenticated
from app.orgs.credentials import TokenSigner
from app.orgs.principal import Principal
from app.runtime.resources import Runtime


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
        self._session: AsyncSession | None = None
        self._system_session: AsyncSession | None = None
        self._loaders: dict[str, Any] = {}

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

    def use_principal(self, principal: Principal) -> None:
        self._principal = principal
        self._authenticated = True

    # --- database -------------------------------------------------------------------------------
    async def db(self) -> AsyncSession:
        """The caller's tenant session: every query through it sees only the caller's organisation."""
        if self._session is None:
            principal = await self.principal()
            self._session = self.runtime.db.session(org_id=principal.org_id)
        return self._session

    def system_db(self) -> AsyncSession:
        """Unscoped session, for the few operations that come before an organisation is known."""
        if self._system_session is None:
            self._system_session = self.runtime.db.session(org_id=SYSTEM)
        return self._system_session

    def loader(self, name: str, factory: Callable[[], Any]) -> Any:
        """Per-request DataLoader, created on first use (batches only within this request)."""
        if name not in self._loaders:
            self._loaders[name] = factory()
        return self._loaders[name]

    async def close(self) -> None:
        for session in (self._session, self._system_session):
            if session is not None:
                with contextlib.suppress(Exception):
                    await session.close()
        self._session = None
        self._system_session = None
        self._loaders.clear()
