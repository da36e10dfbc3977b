"""The service without Ray, for fast tests of the layers above the actors: a ``PoolHost`` over the
in-memory journal stands in for the pool actors, an ``AvailabilityIndex`` for the cache replicas."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import datetime
from typing import TypeVar

from capacity_service.adapters.codec import Codec
from capacity_service.adapters.journal.memory import InMemoryJournal
from capacity_service.adapters.webhooks.memory import InMemoryWebhookStore
from capacity_service.application.availability_feed import AvailabilityFeed, Watcher
from capacity_service.application.availability_index import AvailabilityIndex, ZoneCounts
from capacity_service.application.host_first import HostFirstConfigurer, HostFirstSender
from capacity_service.application.order_driver import OrderDriver
from capacity_service.application.order_host import OrderHost
from capacity_service.application.order_writer import OrderOutcome
from capacity_service.application.pool_history import JournalHistory, PoolGlance, read_history
from capacity_service.application.pool_host import PoolHost
from capacity_service.application.pool_writer import CommandOutcome
from capacity_service.application.schedule_host import PoolConfigurer, ScheduleHost
from capacity_service.application.schedule_writer import ScheduleOutcome
from capacity_service.application.webhook_delivery import WebhookDeliveries
from capacity_service.client import AsyncCapacityClient
from capacity_service.domain import ConfigurePool, PoolCommand, PoolView, Reservation, ReservationStatus, WaitlistPlace
from capacity_service.domain.choice import SlotChoice
from capacity_service.domain.order import OrderCommand, OrderView
from capacity_service.domain.schedule import ScheduleCommand, ScheduleView
from capacity_service.errors import CapacityError, Unavailable
from capacity_service.models import Pool, ReleaseReceipt, ReservationInfo, ReservationReceipt
from capacity_service.settings import WebhookSettings, WriteSideSettings

T = TypeVar("T")


async def _as_value(answer: Awaitable[T]) -> T | CapacityError:
    """The answer, or its error as a value: what the pool actors send back."""
    try:
        return await answer
    except CapacityError as exc:
        return exc


class _NoOtherHost:
    async def execute(self, pool_id: str, command: PoolCommand, deadline: float | None = None) -> CapacityError:
        return Unavailable(f"pool {pool_id!r} is not hosted in this process")

    async def reservation(self, pool_id: str, reservation_id: str) -> CapacityError:
        return Unavailable(f"pool {pool_id!r} is not hosted in this process")


class _HereFirst:
    """Every pool runs in the one host: one that does not run yet is started there (the router's part)."""

    def __init__(self, host: PoolHost) -> None:
        self._host = host

    async def execute(
        self, pool_id: str, command: PoolCommand, deadline: float | None = None
    ) -> CommandOutcome | CapacityError:
        return await _as_value(self._host.execute(pool_id, command, deadline))

    async def reservation(self, pool_id: str, reservation_id: str) -> Reservation | CapacityError | None:
        return await _as_value(self._host.reservation(pool_id, reservation_id))


class HeldBatches:
    """Passes a schedule's batches on to its pools, except while ``held`` (a test's way to see an apply
    under way)."""

    def __init__(self, inner: PoolConfigurer) -> None:
        self._inner = inner
        self.held = False

    async def configure_many(
        self, commands: list[tuple[str, ConfigurePool]], deadline: float
    ) -> list[CommandOutcome | CapacityError]:
        while self.held:
            await asyncio.sleep(0.01)
        return await self._inner.configure_many(commands, deadline)


class InProcessRouter:
    """The router's part for one process hosting every pool and order."""

    def __init__(self, host: PoolHost, journal: InMemoryJournal) -> None:
        self._host = host
        self._host_journal = journal
        driver = OrderDriver(HostFirstSender(host, _NoOtherHost()), late_s=0.5, retry_s=0.01)
        self.orders = OrderHost(journal, host.shared, driver, answer_grace_s=0.5)
        self.schedule_batches = HeldBatches(HostFirstConfigurer(host, _HereFirst(host)))
        self.schedules = ScheduleHost(journal, host.shared, self.schedule_batches, call_timeout_s=5.0)

    async def execute_schedule(
        self, schedule_id: str, command: ScheduleCommand, deadline: float | None = None
    ) -> ScheduleOutcome | CapacityError:
        return await _as_value(self.schedules.execute(schedule_id, command, deadline))

    async def schedule_view(self, schedule_id: str) -> ScheduleView | CapacityError:
        return await _as_value(self.schedules.view(schedule_id))

    async def execute_order(
        self, order_id: str, command: OrderCommand, deadline: float | None = None
    ) -> OrderOutcome | CapacityError:
        return await _as_value(self.orders.execute(order_id, command, deadline))

    async def order_view(self, order_id: str) -> OrderView | CapacityError:
        return await _as_value(self.orders.view(order_id))

    async def execute(
        self, pool_id: str, command: PoolCommand, deadline: float | None = None
    ) -> CommandOutcome | CapacityError:
        try:
            return await self._host.execute(pool_id, command, deadline)
        except CapacityError as exc:
            return exc

    async def view(self, pool_id: str) -> PoolView | CapacityError:
        return await _as_value(self._host.view(pool_id))

    async def reservation(self, pool_id: str, reservation_id: str) -> Reservation | CapacityError | None:
        return await _as_value(self._host.reservation(pool_id, reservation_id))

    async def reservation_of_request(self, pool_id: str, request_id: str) -> Reservation | CapacityError | None:
        return await _as_value(self._host.reservation_of_request(pool_id, request_id))

    async def waitlist_place(self, pool_id: str, entry_id: str) -> WaitlistPlace | CapacityError | None:
        return await _as_value(self._host.waitlist_place(pool_id, entry_id))

    async def reservations(
        self, pool_id: str, status: ReservationStatus | None, limit: int
    ) -> list[Reservation] | CapacityError:
        return await _as_value(self._host.reservations(pool_id, status, limit))

    async def reset(self, pool_id: str, to_seq_nr: int) -> CommandOutcome | CapacityError:
        return await _as_value(self._host.reset(pool_id, to_seq_nr))

    async def check(self, pool_id: str) -> tuple[int, list[str]] | CapacityError:
        return await _as_value(self._host.check(pool_id))

    async def history(
        self, pool_id: str, at: datetime | None, before: int | None, limit: int
    ) -> JournalHistory | CapacityError | None:
        return read_history(self._host_journal, Codec(), pool_id, at, before, limit)

    async def glance(self, pool_id: str, limit: int) -> PoolGlance | CapacityError | None:
        return await _as_value(self._host.glance(pool_id, limit))

    async def live_pool_ids(self) -> list[str]:
        return self._host_journal.live_pool_ids()

    async def aclose(self) -> None:
        pass


class IndexAvailability:
    """An ``AvailabilityIndex`` as the service layer's ``AvailabilitySource`` (the cache replicas' part)."""

    def __init__(self, index: AvailabilityIndex) -> None:
        self.index = index

    async def query(
        self, zone: str, slot_from: datetime | None, slot_to: datetime | None, quantity: int
    ) -> list[PoolView]:
        return self.index.query(zone, slot_from, slot_to, quantity)

    def known_view(self, pool_id: str) -> PoolView | None:
        return self.index.view(pool_id)

    async def zones(self, after: str | None, limit: int) -> tuple[list[ZoneCounts], bool]:
        return self.index.zones(after, limit)


class NoNetwork:
    """Webhook deliveries' transport in unit tests: no name resolves, no POST goes out."""

    async def resolve(self, host: str, port: int) -> list[str]:
        raise OSError(f"{host}: no network in unit tests")

    async def aclose(self) -> None:
        pass

    async def post(self, url: str, headers: dict[str, str], body: bytes, timeout_s: float, allow_private: bool) -> int:
        raise ConnectionRefusedError("no network in unit tests")


class InProcessBackend:
    """Implements the HTTP app's ``Backend``; the availability index is updated on every write."""

    def __init__(self, write_side: WriteSideSettings | None = None) -> None:
        self.index = AvailabilityIndex()
        self.feed = AvailabilityFeed(lambda zone: self.index.query(zone, None, None, 0), max_clients=4)
        self.journal = InMemoryJournal()
        self.ready_checks = {"cache": "ok", "pools": "ok", "journal": "ok"}
        self.host = PoolHost(self.journal, write_side, views=self)
        self.router = InProcessRouter(self.host, self.journal)
        # Registrations in memory, over this journal; nothing is delivered (``NoNetwork``).
        self.webhooks = WebhookDeliveries(
            WebhookSettings(allow_private_targets=True), InMemoryWebhookStore, lambda: self.journal, NoNetwork()
        )
        self.client = AsyncCapacityClient(
            router=self.router, availability=IndexAvailability(self.index), webhooks=self.webhooks
        )

    def publish_view(self, view: PoolView) -> None:
        if self.index.update(view):
            self.feed.publish([view])

    def watch_availability(self, zones: list[str], last_event_id: str | None) -> Watcher:
        return self.feed.watch(zones, last_event_id)

    async def start(self) -> None:
        pass

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
        return self.index.query(zone, slot_from, slot_to, quantity)

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
        return dict(self.ready_checks)
