"""A detached actor that runs the watchdog every ``watchdog_interval_s``, for the life of the cluster."""

from __future__ import annotations

import asyncio
import logging

from capacity_service.adapters.journal import Journal
from capacity_service.errors import CapacityError
from capacity_service.runtime import _ray, bootstrap
from capacity_service.runtime.actor_api import CacheApi, SupervisorApi, WarehouseStreamApi, WebhooksApi, call
from capacity_service.runtime.cache_actor import AvailabilityCache
from capacity_service.runtime.names import CACHE_PREFIX, cache_name
from capacity_service.runtime.pool_actor import PoolActor
from capacity_service.runtime.router import shard_names
from capacity_service.runtime.warehouse_feed import ensure_stream
from capacity_service.runtime.watchdog import SweepReport, Watchdog
from capacity_service.runtime.webhook_actor import ensure_webhooks
from capacity_service.settings import ServiceSettings

log = logging.getLogger(__name__)


class Supervisor(SupervisorApi):
    # Async: Ray runs an async constructor on the actor's event loop, where the loops can be started.
    async def __init__(self, settings: ServiceSettings) -> None:  # type: ignore[misc]
        self._settings = settings
        self._router = bootstrap.router(settings)
        self._journal: Journal | None = None
        self._watchdog = Watchdog(
            self._registered_pools, self._ping, settings.hosting.watchdog_concurrency, self._router.host_of
        )
        self._loop_task: asyncio.Task[None] | None = None
        self._cache_task: asyncio.Task[None] | None = None
        self._stream_task: asyncio.Task[None] | None = None
        self._webhooks_task: asyncio.Task[None] | None = None
        if _ray.actor_was_restarted():
            await self.start()  # its node died and Ray restarted it elsewhere: nobody else would resume them

    def _registered_pools(self) -> list[str]:
        if self._journal is None:
            self._journal = bootstrap.journal(self._settings.journal)
        return self._journal.live_stream_ids()  # orders too: one under way is finished by its next host

    async def _ping(self, pool_ids: list[str]) -> dict[str, str]:
        results = await self._router.ensure_started(pool_ids)
        return {p: str(r) for p, r in zip(pool_ids, results, strict=True) if isinstance(r, CapacityError)}

    async def start(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.ensure_future(self._run())
            self._cache_task = asyncio.ensure_future(self._keep_cache_replicas())
            if self._settings.warehouse.enabled:
                self._stream_task = asyncio.ensure_future(self._keep_warehouse_streams())
            if self._settings.webhooks.enabled:
                self._webhooks_task = asyncio.ensure_future(self._keep_webhooks())

    async def _keep_cache_replicas(self) -> None:
        """One availability cache replica per alive node: new nodes get one, gone nodes lose theirs."""
        namespace = self._settings.hosting.namespace
        while True:
            try:
                nodes = set(await asyncio.to_thread(_ray.alive_node_ids))
                for node_id in nodes:
                    handle = await asyncio.to_thread(
                        _ray.ensure_actor,
                        AvailabilityCache,
                        cache_name(node_id),
                        namespace,
                        (self._settings,),
                        {},
                        node_id,
                    )
                    _ray.tell(handle, call(CacheApi.start))
                for name in await asyncio.to_thread(_ray.named_actors, namespace, CACHE_PREFIX):
                    if name.removeprefix(CACHE_PREFIX) not in nodes:
                        stale = await asyncio.to_thread(_ray.lookup_actor, name, namespace)
                        if stale is not None:
                            _ray.kill_actor(stale, restart=False)
            except Exception:
                log.exception("keeping availability cache replicas failed")
            await asyncio.sleep(self._settings.read_side.membership_interval_s)

    async def _keep_warehouse_streams(self) -> None:
        """Every warehouse stream actor exists and runs, so catch-up happens even with no traffic (and
        after Ray restarted a stream, before any pool hands it an event)."""
        while True:
            try:
                for shard in range(self._settings.warehouse.streams):
                    handle = await asyncio.to_thread(ensure_stream, self._settings, shard)
                    _ray.tell(handle, call(WarehouseStreamApi.start))
            except Exception:
                log.exception("keeping warehouse streams failed")
            await asyncio.sleep(self._settings.read_side.membership_interval_s)

    async def _keep_webhooks(self) -> None:
        """The webhooks actor exists and delivers, with no request needed (and after Ray restarted it)."""
        while True:
            try:
                handle = await asyncio.to_thread(ensure_webhooks, self._settings)
                _ray.tell(handle, call(WebhooksApi.start))
            except Exception:
                log.exception("keeping the webhooks actor failed")
            await asyncio.sleep(self._settings.read_side.membership_interval_s)

    async def settings(self) -> ServiceSettings:
        """The service's settings (``service.py``): every process routes to pools with these."""
        return self._settings

    async def _ensure_shards(self) -> None:
        """In sharded hosting every shard runs from the start: requests for pools that do not exist must
        not be what starts one (nor a storm of first requests, all at once)."""
        hosting = self._settings.hosting
        for name in shard_names(self._settings):
            await asyncio.to_thread(
                _ray.ensure_actor, PoolActor, name, hosting.namespace, (self._settings,), hosting.actor_resources
            )

    async def _run(self) -> None:
        while True:
            try:
                await self._ensure_shards()
                await self._watchdog.sweep()
            except Exception:
                log.exception("watchdog sweep failed")
            await asyncio.sleep(self._settings.hosting.watchdog_interval_s)

    async def sweep_now(self) -> SweepReport:
        return await self._watchdog.sweep()

    async def last_report(self) -> SweepReport | None:
        return self._watchdog.last_report
