"""A replica of the availability cache: one per Ray node, holding every pool's view.

Pool actors push views to every replica (``CacheFanout``); each replica also checks every registered
pool every ``anti_entropy_interval_s`` (bootstrap, then repair of lost pushes): the actors report their
pools' versions, and the views it is behind on (all of them, the first time) are pulled. It reports
ready after its first complete round. Last writer wins by seq_nr, so pushes and pulls may cross.

Mirrors in Serve replicas follow a replica's changes with a long poll (``changes_since`` with a wait): a
call with nothing new waits for the next change instead of coming back empty, so an idle service does
not spend a call per ``mirror_interval_s`` on both sides.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from datetime import datetime

from capacity_service.adapters.journal import Journal
from capacity_service.application.availability_index import AvailabilityIndex, ZoneCounts
from capacity_service.domain import PoolView
from capacity_service.runtime import _ray, bootstrap
from capacity_service.runtime.actor_api import CacheApi
from capacity_service.runtime.environment import metrics_collected
from capacity_service.runtime.metrics import GAUGE_INTERVAL_S, RayCacheMetrics
from capacity_service.settings import ServiceSettings

log = logging.getLogger(__name__)


class AvailabilityCache(CacheApi):
    def __init__(self, settings: ServiceSettings) -> None:
        self._settings = settings
        self._index = AvailabilityIndex()
        self._router = bootstrap.router(settings)
        self._journal: Journal | None = None
        self._sync_task: asyncio.Task[None] | None = None
        self._metrics_task: asyncio.Task[None] | None = None
        self._last_sync: float | None = None
        self._last_error: str | None = None
        self._incarnation = uuid.uuid4().hex
        # Set (and replaced) whenever the index changes: wakes the long polls waiting in changes_since.
        self._changed = asyncio.Event()

    async def start(self) -> None:
        """Start bootstrapping and anti-entropy (idempotent; every method calls it)."""
        if self._sync_task is None:
            self._sync_task = asyncio.ensure_future(self._sync_forever())
            self._metrics_task = asyncio.ensure_future(self._show_metrics()) if metrics_collected() else None

    async def _show_metrics(self) -> None:
        metrics = RayCacheMetrics()
        while True:
            age = None if self._last_sync is None else time.monotonic() - self._last_sync
            metrics.show(age, len(self._index))
            await asyncio.sleep(GAUGE_INTERVAL_S)

    async def _sync_forever(self) -> None:
        while True:
            try:
                await self.sync()
            except Exception as exc:
                self._last_error = f"{type(exc).__name__}: {exc}"
                log.warning("availability cache sync failed: %s", self._last_error)
            await asyncio.sleep(self._settings.read_side.anti_entropy_interval_s)

    async def sync(self) -> int:
        """Pull the view of every live pool (registered, not dormant); returns how many were newer than ours."""
        pool_ids = await asyncio.to_thread(self._registered_pools)
        # The first pull (nothing held yet) takes every view; later ones only those this replica is behind on.
        views, answered = await self._router.views(pool_ids, held=self._index.version_of)
        changed = self._apply(views)
        if answered < len(pool_ids):
            raise RuntimeError(f"{len(pool_ids) - answered} of {len(pool_ids)} pools did not answer")
        self._last_sync, self._last_error = time.monotonic(), None
        return changed

    def _registered_pools(self) -> list[str]:
        if self._journal is None:
            self._journal = bootstrap.journal(self._settings.journal)
        return self._journal.live_pool_ids()

    async def update(self, views: list[PoolView]) -> int:
        await self.start()
        return self._apply(views)

    def _apply(self, views: list[PoolView]) -> int:
        changed = self._index.update_all(views)
        if changed:
            self._changed.set()
            self._changed = asyncio.Event()
        return changed

    async def query(
        self, zone: str, slot_from: datetime | None, slot_to: datetime | None, quantity: int
    ) -> list[PoolView]:
        await self.start()
        return self._index.query(zone, slot_from, slot_to, quantity)

    async def zones(self, after: str | None, limit: int) -> tuple[list[ZoneCounts], bool]:
        await self.start()
        return self._index.zones(after, limit)

    async def status(self) -> dict[str, object]:
        await self.start()
        age = None if self._last_sync is None else time.monotonic() - self._last_sync
        return {
            "ready": self._last_sync is not None,
            "pools": len(self._index),
            "last_sync_age_s": age,
            "last_error": self._last_error,
            "pid": os.getpid(),
        }

    async def changes_since(
        self, incarnation: str, change_nr: int, wait_s: float = 0.0
    ) -> tuple[str, int, list[PoolView], bool]:
        """For mirrors in Serve replicas: (this replica's incarnation, next change number, changed views,
        ready). A mirror that knew another incarnation gets everything (its change numbers mean nothing
        here). When a ready replica has nothing new, the answer waits for the next change, up to
        ``wait_s`` (one not ready yet answers at once: the mirror keeps asking until it is)."""
        await self.start()
        since = change_nr if incarnation == self._incarnation else 0
        if wait_s > 0 and since == self._index.change_nr and self._last_sync is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), wait_s)
        next_nr, views = self._index.changes_since(since)
        return self._incarnation, next_nr, _ray.plain(views), self._last_sync is not None
