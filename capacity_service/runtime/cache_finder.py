"""Finding an availability cache replica to ask: the one on this node, else any (a node without one yet),
remembered until it is gone. The Python client and the HTTP replicas both ask through this."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

from capacity_service.application.availability_index import ZoneCounts
from capacity_service.domain import PoolView
from capacity_service.errors import Unavailable
from capacity_service.runtime import _ray
from capacity_service.runtime.actor_api import CacheApi, Call, call
from capacity_service.runtime.names import CACHE_PREFIX, cache_name

R = TypeVar("R")

# A cache replica answers from memory: waiting longer means it is gone or its node is in trouble.
CACHE_TIMEOUT_S = 5.0


class CacheFinder:
    def __init__(self, namespace: str, start_service: Callable[[], Awaitable[None]]) -> None:
        self._namespace = namespace
        self._start_service = start_service  # the supervisor keeps a replica per node
        self._cache: _ray.Handle | None = None

    async def handle(self) -> _ray.Handle:
        if self._cache is not None:
            return self._cache
        handle = await asyncio.to_thread(_ray.lookup_actor, cache_name(_ray.current_node_id()), self._namespace)
        if handle is None:
            names = await asyncio.to_thread(_ray.named_actors, self._namespace, CACHE_PREFIX)
            if not names:
                await self._start_service()
                raise Unavailable("the availability cache is starting")
            handle = await asyncio.to_thread(_ray.lookup_actor, random.choice(names), self._namespace)
            if handle is None:
                raise Unavailable("the availability cache is starting")
        self._cache = handle
        return handle

    def forget(self) -> None:
        """The replica did not answer (restarting, or its node is gone): find one again next time."""
        self._cache = None

    async def ask_replica(self, request: Call[R], timeout: float = CACHE_TIMEOUT_S) -> R:
        """``request`` to a replica, trying a second one if the first is gone."""
        for _attempt in range(2):
            cache = await self.handle()
            try:
                return await _ray.ask(cache, request, timeout)
            except _ray.ActorGone:
                self.forget()
        raise Unavailable("no availability cache answered")

    def known_view(self, pool_id: str) -> PoolView | None:
        """None: the replicas are in other processes (``query`` asks them)."""
        return None

    async def query(
        self, zone: str, slot_from: datetime | None, slot_to: datetime | None, quantity: int
    ) -> list[PoolView]:
        return await self.ask_replica(call(CacheApi.query, zone, slot_from, slot_to, quantity))

    async def zones(self, after: str | None, limit: int) -> tuple[list[ZoneCounts], bool]:
        return await self.ask_replica(call(CacheApi.zones, after, limit))
