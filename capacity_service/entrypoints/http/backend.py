"""The service behind the HTTP app: writes go to the pool actors through ``AsyncCapacityClient``;
availability is read from the cache replica on this node (any replica if there is none here), through a
mirror of it kept in this process: a Ray call per availability request cost half of a 2-core machine."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime

from capacity_service.application.availability_feed import AvailabilityFeed, Watcher
from capacity_service.application.availability_index import AvailabilityIndex, ZoneCounts
from capacity_service.client import AsyncCapacityClient
from capacity_service.domain import PoolView
from capacity_service.domain.choice import SlotChoice
from capacity_service.errors import Unavailable
from capacity_service.models import Pool, ReleaseReceipt, ReservationInfo, ReservationReceipt
from capacity_service.runtime import _ray
from capacity_service.runtime.actor_api import CacheApi, SupervisorApi, call
from capacity_service.runtime.cache_finder import CACHE_TIMEOUT_S
from capacity_service.runtime.names import SUPERVISOR_NAME
from capacity_service.settings import ServiceSettings

log = logging.getLogger(__name__)


class ServiceBackend:
    def __init__(self, settings: ServiceSettings) -> None:
        self._settings = settings
        # A chosen reserve picks its candidates from the mirror too (``query``).
        self.client = AsyncCapacityClient(settings, availability=self)
        self._caches = self.client.caches
        self._started = False
        self._mirror = AvailabilityIndex()
        self._mirror_incarnation = ""
        self._mirror_change_nr = 0
        self._mirror_synced_at: float | None = None
        self._mirror_task: asyncio.Task[None] | None = None
        # The availability stream's clients watch what the mirror takes in.
        self._feed = AvailabilityFeed(
            lambda zone: self._mirror.query(zone, None, None, 0), max_clients=settings.http.max_stream_clients
        )

    async def start(self) -> None:
        """Make sure the supervisor (watchdog, cache replicas per node) runs, and the mirror. Idempotent."""
        if self._mirror_task is None:
            self._mirror_task = asyncio.ensure_future(self._follow_cache())
        if not self._started:
            await self.client.start_watchdog()
            self._started = True

    async def _follow_cache(self) -> None:
        """Pull the local cache replica's changes into the mirror. Views merge last-writer-wins, so a new
        incarnation of the replica (which starts its change numbers anew) is simply merged in."""
        while True:
            try:
                cache = await self._caches.handle()
                wait_s = self._settings.read_side.mirror_wait_s  # the replica answers at the next change
                changes = call(CacheApi.changes_since, self._mirror_incarnation, self._mirror_change_nr, wait_s)
                incarnation, change_nr, views, ready = await _ray.ask(cache, changes, CACHE_TIMEOUT_S + wait_s)
                self._feed.publish([view for view in views if self._mirror.update(view)])
                self._mirror_incarnation, self._mirror_change_nr = incarnation, change_nr
                if ready:
                    self._mirror_synced_at = time.monotonic()
            except (Unavailable, _ray.ActorGone):
                self._caches.forget()
            except Exception:
                log.exception("mirroring the availability cache failed")
            await asyncio.sleep(self._settings.read_side.mirror_interval_s)

    def _mirror_fresh(self) -> bool:
        synced = self._mirror_synced_at
        return synced is not None and time.monotonic() - synced < self._settings.read_side.mirror_stale_after_s

    async def put_pool(
        self,
        pool_id: str,
        capacity: int,
        zone: str,
        slot_start: datetime | None,
        slot_end: datetime | None,
        max_hold_seconds: int | None = None,
        waitlist_limit: int | None = None,
    ) -> tuple[Pool, bool]:
        return await self.client.configure_pool_reporting_creation(
            pool_id, capacity, zone, slot_start, slot_end, max_hold_seconds, waitlist_limit
        )

    async def get_pool(self, pool_id: str) -> Pool:
        return await self.client.get_pool(pool_id)

    async def retire_pool(self, pool_id: str) -> Pool:
        return await self.client.retire_pool(pool_id)

    async def availability(
        self, zone: str, slot_from: datetime | None, slot_to: datetime | None, quantity: int
    ) -> list[PoolView]:
        if self._mirror_fresh():
            return self._mirror.query(zone, slot_from, slot_to, quantity)
        await self.start()
        return await self._caches.query(zone, slot_from, slot_to, quantity)

    async def query(
        self, zone: str, slot_from: datetime | None, slot_to: datetime | None, quantity: int
    ) -> list[PoolView]:
        """Where the client reads availability (an ``AvailabilitySource``): as ``availability``."""
        return await self.availability(zone, slot_from, slot_to, quantity)

    async def zones(self, after: str | None, limit: int) -> tuple[list[ZoneCounts], bool]:
        """Where the client lists zones (an ``AvailabilitySource``): from the mirror while it is fresh."""
        if self._mirror_fresh():
            return self._mirror.zones(after, limit)
        await self.start()
        return await self._caches.zones(after, limit)

    def watch_availability(self, zones: list[str], last_event_id: str | None) -> Watcher:
        if self._mirror_task is None:  # the stream is fed by the mirror
            self._mirror_task = asyncio.ensure_future(self._follow_cache())
        return self._feed.watch(zones, last_event_id)

    def known_view(self, pool_id: str) -> PoolView | None:
        """The pool's view in the mirror, while it is fresh."""
        return self._mirror.view(pool_id) if self._mirror_fresh() else None

    async def reserve(
        self, pool_id: str, quantity: int, request_id: str | None, hold_seconds: int | None = None
    ) -> ReservationReceipt:
        return await self.client.reserve(pool_id, quantity, request_id, hold_seconds)

    async def reserve_chosen(
        self, choice: SlotChoice, request_id: str | None, hold_seconds: int | None = None
    ) -> ReservationReceipt:
        return await self.client.reserve_chosen(choice, request_id, hold_seconds)

    async def confirm(self, reservation_id: str) -> ReservationInfo:
        return await self.client.confirm(reservation_id)

    async def release(self, reservation_id: str) -> ReleaseReceipt:
        return await self.client.release(reservation_id)

    async def get_reservation(self, reservation_id: str) -> ReservationInfo:
        return await self.client.get_reservation(reservation_id)

    async def readiness(self) -> dict[str, str]:
        await self.start()
        checks = {"cache": "ok", "pools": "ok", "journal": "ok"}
        try:
            status = await _ray.ask(await self._caches.handle(), call(CacheApi.status), CACHE_TIMEOUT_S)
            if not status["ready"]:
                checks["cache"] = f"bootstrapping ({status['last_error'] or 'first pull running'})"
        except (Unavailable, _ray.ActorGone) as exc:
            checks["cache"] = f"no cache replica answers: {exc}"
        supervisor = await asyncio.to_thread(_ray.lookup_actor, SUPERVISOR_NAME, self._settings.hosting.namespace)
        report = None
        if supervisor is not None:
            try:
                report = await _ray.ask(supervisor, call(SupervisorApi.last_report), CACHE_TIMEOUT_S)
            except _ray.ActorGone:
                report = None
        if report is None:
            checks["pools"] = "the watchdog has not completed a sweep yet"
            checks["journal"] = "not checked yet"
        elif report.journal_error:
            checks["journal"] = report.journal_error
            checks["pools"] = "unknown: the pool registry cannot be read"
        elif report.failed:
            checks["pools"] = f"{len(report.failed)} registered pools not serving: {sorted(report.failed)[:5]}"
        return checks
