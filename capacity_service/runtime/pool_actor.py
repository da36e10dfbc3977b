"""The Ray actor that hosts pools: a thin shell around ``PoolHost``.

In ``actor_per_pool`` mode each actor hosts one pool; in ``sharded`` mode it hosts every pool hashed onto
its shard. Same class, same code path. Errors come back as values (a ``CapacityError``), not raised
through Ray, so callers get our own exception types without Ray's wrapping.
"""

from __future__ import annotations

import asyncio
import gc
from typing import TypeVar

from capacity_service.adapters.journal import Journal, JournalError
from capacity_service.application import tracing
from capacity_service.application.order_host import OrderHost
from capacity_service.application.pool_history import PoolGlance
from capacity_service.application.pool_host import AddressedCommand, PoolHost
from capacity_service.application.pool_writer import CommandOutcome
from capacity_service.application.schedule_host import ScheduleHost
from capacity_service.domain import PoolCommand, PoolView, Reservation, ReservationStatus, WaitlistPlace
from capacity_service.domain.ids import (
    is_order_stream,
    is_pool_stream,
    is_schedule_stream,
    order_of_stream,
    schedule_of_stream,
)
from capacity_service.domain.order import OrderView
from capacity_service.domain.schedule import ScheduleView
from capacity_service.errors import CapacityError, Unavailable
from capacity_service.runtime import bootstrap, channel
from capacity_service.runtime._ray import current_node_id, plain, process_id
from capacity_service.runtime.actor_api import SAME_NODE_METHODS, PoolApi
from capacity_service.runtime.environment import metrics_collected
from capacity_service.runtime.metrics import GAUGE_INTERVAL_S, RayHostMetrics
from capacity_service.settings import ServiceSettings

T = TypeVar("T")


def _freeze_the_startup_heap() -> None:
    """What is loaded by now (Ray, SQLAlchemy, pydantic: hundreds of thousands of objects) lives as long
    as the process: out of the garbage collector's way, so that its full collections scan only what the
    pools hold. Once, before the first command is answered; garbage cycles present then would stay
    (collected first). Full collections still scan every reservation the pools hold while every command
    in flight waits: they run ten times less often than Python's default."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, 100)


async def _show_stats(host: PoolHost, metrics: RayHostMetrics) -> None:
    while True:
        metrics.show(host.stats())
        await asyncio.sleep(GAUGE_INTERVAL_S)


def _kind(stream_id: str) -> str:
    return "order" if is_order_stream(stream_id) else "schedule" if is_schedule_stream(stream_id) else "pool"


class PoolActor(PoolApi):
    def __init__(self, settings: ServiceSettings) -> None:
        tracing.log_to_stderr(json_lines=settings.log_format == "json")
        self._settings = settings
        self._host: PoolHost | None = None
        self._orders: OrderHost | None = None
        self._schedules: ScheduleHost | None = None
        self._journal: Journal | None = None
        self._opening = asyncio.Lock()
        self._gauges: asyncio.Future[None] | None = None
        self._channel = channel.ChannelServer({name: getattr(self, name) for name in SAME_NODE_METHODS})

    async def _pool_host(self) -> PoolHost:
        # Opened on first use, not in __init__: a constructor that fails while the journal is down would
        # make Ray restart the actor in a tight loop instead of answering "unavailable".
        if self._host is not None:
            return self._host
        async with self._opening:
            if self._host is None:
                try:
                    self._journal = await asyncio.to_thread(bootstrap.journal, self._settings.journal)
                except JournalError as exc:
                    raise Unavailable(f"journal unavailable: {exc}") from exc
                metrics = RayHostMetrics(store=self._settings.journal.store) if metrics_collected() else None
                self._host = bootstrap.pool_host(self._settings, self._journal, metrics)
                self._orders = bootstrap.order_host(self._settings, self._host, self._journal, metrics)
                self._schedules = bootstrap.schedule_host(self._settings, self._host, self._journal)
                if metrics is not None:
                    self._gauges = asyncio.ensure_future(_show_stats(self._host, metrics))
                _freeze_the_startup_heap()
        return self._host

    async def execute(
        self, pool_id: str, command: PoolCommand, deadline: float | None = None
    ) -> CommandOutcome | CapacityError:
        try:
            return await (await self._pool_host()).execute(pool_id, command, deadline)
        except CapacityError as exc:
            return exc

    async def execute_many(self, commands: list[AddressedCommand]) -> list[CommandOutcome | CapacityError]:
        """Several commands in one call (the router batches them), each with its deadline; each is answered
        on its own. Commands to orders' and schedules' streams go to their hosts."""
        try:
            host = await self._pool_host()
        except CapacityError as exc:
            return [exc] * len(commands)
        if all(is_pool_stream(stream_id) for stream_id, *_ in commands):
            return await host.execute_many(commands)
        return await self._execute_mixed(host, commands)

    async def _execute_mixed(
        self, host: PoolHost, commands: list[AddressedCommand]
    ) -> list[CommandOutcome | CapacityError]:
        assert self._orders is not None and self._schedules is not None
        kinds = [_kind(stream_id) for stream_id, *_ in commands]
        executes = {
            "pool": host.execute_many,
            "order": self._orders.execute_many,
            "schedule": self._schedules.execute_many,
        }
        kinds_present = list(dict.fromkeys(kinds))
        if len(kinds_present) == 1:  # a batch of one kind (orders alone): straight to its host, no task
            return list(await executes[kinds_present[0]](commands))
        answered = await asyncio.gather(
            *(executes[kind]([c for c, k in zip(commands, kinds, strict=True) if k == kind]) for kind in kinds_present)
        )
        answers = {kind: iter(found) for kind, found in zip(kinds_present, answered, strict=True)}
        return [next(answers[kind]) for kind in kinds]

    async def order_view(self, order_id: str) -> OrderView | CapacityError:
        try:
            await self._pool_host()
            assert self._orders is not None
            return await self._orders.view(order_id)
        except CapacityError as exc:
            return exc

    async def schedule_view(self, schedule_id: str) -> ScheduleView | CapacityError:
        try:
            await self._pool_host()
            assert self._schedules is not None
            return await self._schedules.view(schedule_id)
        except CapacityError as exc:
            return exc

    async def open_channel(self) -> channel.ChannelAddress | None:
        """Where a caller on this node sends ``execute_many`` without Ray's RPC (None: use Ray)."""
        if not (self._settings.hosting.same_node_channel and channel.supported()):
            return None
        return await self._channel.start(current_node_id())

    async def view(self, pool_id: str) -> PoolView | CapacityError:
        try:
            return await (await self._pool_host()).view(pool_id)
        except CapacityError as exc:
            return exc

    async def views(self, pool_ids: list[str]) -> list[PoolView | CapacityError]:
        """Several registered pools' views in one call (anti-entropy of the availability caches). Running
        pools are answered at once; the others are started together first, as the watchdog starts them (one
        by one, a cache bootstrapping beside 10,000 cold pools recovered them one journal read at a time)."""
        try:
            host = await self._pool_host()
        except CapacityError as exc:
            return [exc] * len(pool_ids)
        ready = [host.durable_view(pool_id) for pool_id in pool_ids]
        missing = [p for p, view in zip(pool_ids, ready, strict=True) if view is None]
        if missing:
            await host.ensure_started_many(missing)  # failures are answered by ``view`` below
        waited = iter(await asyncio.gather(*(self.view(p) for p in missing)))
        return plain([view if view is not None else next(waited) for view in ready])

    async def versions(self, pool_ids: list[str]) -> list[int | None]:
        """Several pools' versions, answered at once (anti-entropy asks these first, then pulls only the
        views it is behind on); None where only ``views`` can tell."""
        try:
            host = await self._pool_host()
        except CapacityError:
            return [None] * len(pool_ids)
        return host.durable_versions(pool_ids)

    async def reservation(self, pool_id: str, reservation_id: str) -> Reservation | CapacityError | None:
        try:
            return await (await self._pool_host()).reservation(pool_id, reservation_id)
        except CapacityError as exc:
            return exc

    async def reservation_of_request(self, pool_id: str, request_id: str) -> Reservation | CapacityError | None:
        try:
            return await (await self._pool_host()).reservation_of_request(pool_id, request_id)
        except CapacityError as exc:
            return exc

    async def waitlist_place(self, pool_id: str, entry_id: str) -> WaitlistPlace | CapacityError | None:
        try:
            return await (await self._pool_host()).waitlist_place(pool_id, entry_id)
        except CapacityError as exc:
            return exc

    async def reservations(
        self, pool_id: str, status: ReservationStatus | None, limit: int
    ) -> list[Reservation] | CapacityError:
        try:
            return await (await self._pool_host()).reservations(pool_id, status, limit)
        except CapacityError as exc:
            return exc

    async def reset(self, pool_id: str, to_seq_nr: int) -> CommandOutcome | CapacityError:
        """Set the pool back to its state after event ``to_seq_nr`` (an operator's repair)."""
        try:
            return await (await self._pool_host()).reset(pool_id, to_seq_nr)
        except CapacityError as exc:
            return exc

    async def check(self, pool_id: str) -> tuple[int, list[str]] | CapacityError:
        """Replay the pool from its journal and compare with the live state (an operator's check)."""
        try:
            return await (await self._pool_host()).check(pool_id)
        except CapacityError as exc:
            return exc

    async def glance(self, pool_id: str, limit: int) -> PoolGlance | CapacityError | None:
        """The pool as the operator's console shows it."""
        try:
            return await (await self._pool_host()).glance(pool_id, limit)
        except CapacityError as exc:
            return exc

    async def ensure_started(self, pool_id: str) -> int | CapacityError:
        """The watchdog's ping: recover the pool if needed; returns its seq_nr."""
        try:
            return await (await self._pool_host()).ensure_started(pool_id)
        except CapacityError as exc:
            return exc

    async def ensure_started_many(self, pool_ids: list[str]) -> list[int | CapacityError]:
        """The watchdog's ping of registered pools hosted here, in one call; those not running are
        recovered together."""
        try:
            host = await self._pool_host()
        except CapacityError as exc:
            return [exc] * len(pool_ids)
        if all(is_pool_stream(stream_id) for stream_id in pool_ids):
            return await host.ensure_started_many(pool_ids)
        assert self._orders is not None and self._schedules is not None
        orders = [order_of_stream(s) for s in pool_ids if is_order_stream(s)]
        schedules = [schedule_of_stream(s) for s in pool_ids if is_schedule_stream(s)]
        started = iter(await host.ensure_started_many([s for s in pool_ids if is_pool_stream(s)]))
        started_orders = iter(await self._orders.ensure_started_many(orders))
        started_schedules = iter(await self._schedules.ensure_started_many(schedules))
        return [
            next(started_orders if is_order_stream(s) else started_schedules if is_schedule_stream(s) else started)
            for s in pool_ids
        ]

    async def describe(self) -> dict[str, object]:
        host = self._host
        return {
            "pid": process_id(),
            "node_id": current_node_id(),
            "pools": host.pool_ids if host else [],
            "epochs": {p: host.epoch_of(p) for p in host.pool_ids} if host else {},
            "fenced": host.fenced if host else False,
            "breaker": host.breaker.state.value if host else "closed",
            "channel_calls": self._channel.calls,
        }
