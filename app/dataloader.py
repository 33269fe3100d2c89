"""The base of every domain's DataLoaders: typed keys and results, one set-based query per batch."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from strawberry.dataloader import DataLoader

from app.db import AsyncSession

K = TypeVar("K")
T = TypeVar("T")

SessionSource = Callable[[], Awaitable[AsyncSession]]
"""The request's session, opened on first use: a loader asks for it at each batch, so a request whose fields
load nothing through it opens nothing for it."""


class SessionLoader(DataLoader[K, T], Generic[K, T]):
    """A DataLoader of one request (made per request by `app.api.loaders.Loaders`): batches only within it."""

    def __init__(self, db: SessionSource) -> None:
        super().__init__(load_fn=self._load_batch)
        self._db = db

    async def _load_batch(self, keys: list[K]) -> Sequence[T]:
        return await self.fetch(await self._db(), keys)

    async def fetch(self, session: AsyncSession, keys: list[K]) -> Sequence[T]:
        """One result per key, in the keys' order."""
        raise NotImplementedError
