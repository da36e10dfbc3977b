"""``CacheFanout``: the ``ViewPublisher`` of pool actors. It coalesces views for ``push_interval_s`` and
sends the latest of each pool to every cache replica in one fire-and-forget message per replica."""

from __future__ import annotations

import asyncio
import logging

from capacity_service.domain import PoolView
from capacity_service.runtime import _ray
from capacity_service.runtime.actor_api import CacheApi, call
from capacity_service.runtime.names import CACHE_PREFIX
from capacity_service.settings import ServiceSettings

log = logging.getLogger(__name__)


class CacheFanout:
    def __init__(self, settings: ServiceSettings) -> None:
        self._settings = settings
        self._pending: dict[str, PoolView] = {}
        self._flush_scheduled = False
        self._replicas: list[_ray.Handle] = []
        self._membership_task: asyncio.Task[None] | None = None

    def publish_view(self, view: PoolView) -> None:
        self._pending[view.pool_id] = view
        if self._membership_task is None:
            self._membership_task = asyncio.ensure_future(self._follow_membership())
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(self._settings.read_side.push_interval_s, self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, {}
        if not self._replicas:
            return  # none known (yet): their anti-entropy pulls bring them these views
        update = call(CacheApi.update, _ray.plain(list(pending.values())))  # pickled once, for every replica
        for replica in self._replicas:
            try:
                _ray.tell(replica, update)
            except Exception as exc:  # a lost push is repaired by the replica's anti-entropy pull
                log.debug("push to an availability cache failed: %s", exc)

    async def _follow_membership(self) -> None:
        namespace = self._settings.hosting.namespace
        while True:
            try:
                names = await asyncio.to_thread(_ray.named_actors, namespace, CACHE_PREFIX)
                handles = [await asyncio.to_thread(_ray.lookup_actor, name, namespace) for name in names]
                self._replicas = [h for h in handles if h is not None]
            except Exception as exc:
                log.warning("cannot list availability caches: %s", exc)
            await asyncio.sleep(self._settings.read_side.membership_interval_s)
