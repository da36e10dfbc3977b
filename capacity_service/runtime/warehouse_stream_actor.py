"""The Ray actor around ``WarehouseStream``: one per stream shard (``warehouse-stream:<k>``).

One stream per cluster by default, not one per node: a pool's rows must reach the sink contiguously
through ONE owner of its cursor, and pools move between nodes on failover. ``WarehouseSettings.streams``
hashes pools onto more stream actors when one is not enough.
"""

from __future__ import annotations

import asyncio

from capacity_service.adapters.warehouse.rows import rows_of
from capacity_service.domain import PersistedEvent
from capacity_service.runtime import bootstrap
from capacity_service.runtime._ray import process_id
from capacity_service.runtime.actor_api import WarehouseStreamApi
from capacity_service.runtime.environment import metrics_collected
from capacity_service.runtime.metrics import GAUGE_INTERVAL_S, RayWarehouseMetrics
from capacity_service.settings import ServiceSettings


class WarehouseStreamActor(WarehouseStreamApi):
    def __init__(self, settings: ServiceSettings, shard: int) -> None:
        self._stream = bootstrap.warehouse_stream(settings, shard)

        self._metrics: asyncio.Task[None] | None = None
        self._metrics_on = metrics_collected()

    async def start(self) -> None:
        self._stream.start()
        if self._metrics is None and self._metrics_on:
            self._metrics = asyncio.ensure_future(self._show_metrics())

    async def _show_metrics(self) -> None:
        metrics = RayWarehouseMetrics()
        while True:
            rows, seconds = self._stream.lag()
            metrics.show(rows, seconds, self._stream.pools_lagging, self._stream.stats["flushed_rows"])
            await asyncio.sleep(GAUGE_INTERVAL_S)

    async def offer(self, events: list[PersistedEvent]) -> None:
        await self.start()
        self._stream.offer(rows_of(event) for event in events)

    async def flush(self) -> int:
        return await self._stream.flush()

    async def catch_up(self) -> int:
        return await self._stream.catch_up(None)

    async def status(self) -> dict[str, object]:
        self._stream.start()
        return {**self._stream.status(), "pid": process_id()}
