"""``CapacityClient``: the service's operations for Python code inside the Ray cluster.

Calls go through Ray handles straight to the pool actors (no HTTP). Results are pydantic models;
failures are our typed exceptions (``PoolNotFound``, ``InsufficientCapacity``, ``ReservationNotFound``,
``RequestIdConflict``, ``InvalidRequest``, ``Unavailable``: nothing taken, ``OutcomeUnknown``: repeat with
the error's ``request_id``, ``Overloaded``). ``AsyncCapacityClient`` is the same for
asyncio code (Serve deployments); ``CapacityClient`` wraps it for plain synchronous code. The operations
themselves are the service layer's (``application/operations.py``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Sequence
from datetime import datetime
from typing import Any, TypeVar

from capacity_service.application.operations import (
    MAX_LISTED_RESERVATIONS,
    AvailabilitySource,
    CapacityOperations,
    PoolGateway,
)
from capacity_service.application.webhook_delivery import WebhookAdmin
from capacity_service.domain.choice import SlotChoice
from capacity_service.errors import Unavailable
from capacity_service.models import (
    Order,
    OrderLineRequest,
    Pool,
    PoolCheck,
    PoolHistory,
    PoolsChanged,
    ReleaseReceipt,
    ReservationInfo,
    ReservationReceipt,
    Schedule,
    ScheduleTemplate,
    WaitlistPlace,
    Webhook,
    ZoneList,
)
from capacity_service.runtime import _ray, bootstrap, service
from capacity_service.runtime.actor_api import CacheApi, SupervisorApi, call
from capacity_service.runtime.cache_finder import CACHE_TIMEOUT_S, CacheFinder
from capacity_service.runtime.names import SUPERVISOR_NAME
from capacity_service.runtime.supervisor import Supervisor
from capacity_service.runtime.watchdog import SweepReport
from capacity_service.settings import ServiceSettings

__all__ = ["MAX_LISTED_RESERVATIONS", "AsyncCapacityClient", "CapacityClient", "SlotChoice"]

T = TypeVar("T")


class AsyncCapacityClient(CapacityOperations):
    """With no ``settings``, the client attaches to the service running in ``namespace`` and routes with
    its settings (journal, hosting, shard count); settings given must agree with the running service's
    (``SettingsMismatch`` otherwise), and start it when none runs there yet. ``ray_address``: of the Ray
    cluster (default: this process's Ray, else a local one; "auto": the one running on this machine).
    ``router``: where commands go instead of the cluster's pool actors (tests); ``availability``: where
    availability comes from instead of the cluster's cache replicas (an HTTP replica's mirror of them, tests)."""

    def __init__(
        self,
        settings: ServiceSettings | None = None,
        *,
        namespace: str = service.DEFAULT_NAMESPACE,
        ray_address: str | None = None,
        router: PoolGateway | None = None,
        availability: AvailabilitySource | None = None,
        webhooks: WebhookAdmin | None = None,
    ) -> None:
        if router is None:
            settings, router = bootstrap.python_api(settings, namespace, ray_address)
        self.settings = settings or ServiceSettings()
        self._webhooks = webhooks
        # The availability cache replicas (found lazily: a client that never asks never looks).
        self.caches = CacheFinder(self.settings.hosting.namespace, self.start_watchdog)
        super().__init__(router, availability or self.caches, self.settings.hosting.call_timeout_s)

    async def watch_availability(self, zone: str, wait_s: float = 5.0) -> AsyncIterator[Pool]:
        """The zone's pools as they change, from a cache replica: first every pool of the zone, then each
        change (a view newer than the last one given; ``state`` retired: it left availability). Endless:
        break out of it to stop. A replica that is replaced is followed, giving its whole picture again."""
        incarnation, change_nr = "", 0
        given: dict[str, int] = {}
        while True:
            request = call(CacheApi.changes_since, incarnation, change_nr, wait_s)
            try:
                incarnation, change_nr, views, _ = await self.caches.ask_replica(request, CACHE_TIMEOUT_S + wait_s)
            except Unavailable:
                await asyncio.sleep(1.0)
                continue
            for view in sorted(views, key=lambda v: v.version):
                if view.zone == zone and view.exists and given.get(view.pool_id, -1) < view.version:
                    given[view.pool_id] = view.version
                    yield Pool.of(view)

    # ------------------------------------------------------------------ webhooks (admin)

    @property
    def webhooks(self) -> WebhookAdmin:
        if self._webhooks is None:
            self._webhooks = bootstrap.webhook_admin(self.settings)
        return self._webhooks

    async def put_webhook(self, webhook_id: str, url: str, events: Sequence[str], secret: str) -> tuple[Webhook, bool]:
        """Register a webhook, or change one; True if it was new. ``events``: of ``pool.sold_out``,
        ``pool.back_on_sale``, ``hold.expired``, ``waitlist.offered``, ``order.confirmed``, ``order.cancelled``."""
        return await self.webhooks.put_webhook(webhook_id, url, events, secret)

    async def list_webhooks(self) -> list[Webhook]:
        return await self.webhooks.list_webhooks()

    async def get_webhook(self, webhook_id: str) -> Webhook:
        """The webhook with its delivery status (``WebhookNotFound`` if none)."""
        return await self.webhooks.get_webhook(webhook_id)

    async def delete_webhook(self, webhook_id: str) -> Webhook:
        return await self.webhooks.delete_webhook(webhook_id)

    async def start_watchdog(self) -> None:
        """Start the cluster's watchdog (idempotent): it keeps every registered pool's actor alive."""
        await _ray.ask(self._supervisor(), call(SupervisorApi.start), self.settings.hosting.call_timeout_s)

    async def sweep(self, timeout_s: float = 300.0) -> SweepReport:
        """Run one watchdog sweep now: recover every registered pool (bounded concurrency)."""
        return await _ray.ask(self._supervisor(), call(SupervisorApi.sweep_now), timeout_s)

    def _supervisor(self) -> _ray.Handle:
        return _ray.ensure_actor(Supervisor, SUPERVISOR_NAME, self.settings.hosting.namespace, (self.settings,), {})


class CapacityClient:
    """Synchronous facade over ``AsyncCapacityClient`` (it runs its own event loop thread)."""

    def __init__(
        self,
        settings: ServiceSettings | None = None,
        *,
        namespace: str = service.DEFAULT_NAMESPACE,
        ray_address: str | None = None,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="capacity-client", daemon=True)
        self._thread.start()
        try:
            self._async = self._run(_make_async_client(settings, namespace, ray_address))
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    @property
    def settings(self) -> ServiceSettings:
        return self._async.settings

    def configure_pool(
        self,
        pool_id: str,
        capacity: int,
        zone: str,
        slot_start: datetime | None = None,
        slot_end: datetime | None = None,
        max_hold_seconds: int | None = None,
        waitlist_limit: int | None = None,
    ) -> Pool:
        return self._run(
            self._async.configure_pool(pool_id, capacity, zone, slot_start, slot_end, max_hold_seconds, waitlist_limit)
        )

    def get_pool(self, pool_id: str) -> Pool:
        return self._run(self._async.get_pool(pool_id))

    def retire_pool(self, pool_id: str) -> Pool:
        return self._run(self._async.retire_pool(pool_id))

    def availability(
        self,
        zone: str,
        slot_from: datetime | None = None,
        slot_to: datetime | None = None,
        quantity: int = 1,
    ) -> list[Pool]:
        return self._run(self._async.availability(zone, slot_from, slot_to, quantity))

    def reserve(
        self, pool_id: str, quantity: int = 1, request_id: str | None = None, hold_seconds: int | None = None
    ) -> ReservationReceipt:
        return self._run(self._async.reserve(pool_id, quantity, request_id, hold_seconds))

    def place_order(
        self, lines: Sequence[OrderLineRequest], order_id: str | None = None, hold_seconds: int | None = None
    ) -> Order:
        return self._run(self._async.place_order(lines, order_id, hold_seconds))

    def get_order(self, order_id: str) -> Order:
        return self._run(self._async.get_order(order_id))

    def confirm_order(self, order_id: str) -> Order:
        return self._run(self._async.confirm_order(order_id))

    def cancel_order(self, order_id: str) -> Order:
        return self._run(self._async.cancel_order(order_id))

    def reserve_chosen(
        self, choice: SlotChoice, request_id: str | None = None, hold_seconds: int | None = None
    ) -> ReservationReceipt:
        return self._run(self._async.reserve_chosen(choice, request_id, hold_seconds))

    def release(self, reservation_id: str) -> ReleaseReceipt:
        return self._run(self._async.release(reservation_id))

    def confirm(self, reservation_id: str) -> ReservationInfo:
        return self._run(self._async.confirm(reservation_id))

    def get_reservation(self, reservation_id: str) -> ReservationInfo:
        return self._run(self._async.get_reservation(reservation_id))

    def extend_hold(self, reservation_id: str, hold_seconds: int) -> ReservationInfo:
        return self._run(self._async.extend_hold(reservation_id, hold_seconds))

    def join_waitlist(
        self, pool_id: str, quantity: int, request_id: str, hold_seconds: int | None = None
    ) -> WaitlistPlace:
        return self._run(self._async.join_waitlist(pool_id, quantity, request_id, hold_seconds))

    def get_waitlist_entry(self, pool_id: str, entry_id: str) -> WaitlistPlace:
        return self._run(self._async.get_waitlist_entry(pool_id, entry_id))

    def leave_waitlist(self, pool_id: str, entry_id: str) -> WaitlistPlace:
        return self._run(self._async.leave_waitlist(pool_id, entry_id))

    def pause_pool(self, pool_id: str, reason: str) -> Pool:
        return self._run(self._async.pause_pool(pool_id, reason))

    def resume_pool(self, pool_id: str) -> Pool:
        return self._run(self._async.resume_pool(pool_id))

    def pause_all(self, reason: str) -> PoolsChanged:
        return self._run(self._async.pause_all(reason))

    def resume_all(self) -> PoolsChanged:
        return self._run(self._async.resume_all())

    def reservations(self, pool_id: str, status: str | None = None, limit: int = 1_000) -> list[ReservationInfo]:
        return self._run(self._async.reservations(pool_id, status, limit))

    def check_pool(self, pool_id: str) -> PoolCheck:
        return self._run(self._async.check_pool(pool_id))

    def reset_pool(self, pool_id: str, to_seq_nr: int) -> Pool:
        return self._run(self._async.reset_pool(pool_id, to_seq_nr))

    def put_schedule(self, schedule_id: str, template: ScheduleTemplate) -> Schedule:
        """Create or update the pools of ``template`` (in the background: ``get_schedule`` says how it goes)."""
        schedule, _ = self._run(self._async.put_schedule(schedule_id, template))
        return schedule

    def get_schedule(self, schedule_id: str) -> Schedule:
        return self._run(self._async.get_schedule(schedule_id))

    def pool_history(
        self, pool_id: str, at: datetime | None = None, before: int | None = None, limit: int = 50
    ) -> PoolHistory:
        return self._run(self._async.pool_history(pool_id, at, before, limit))

    def zones(self, after: str | None = None, limit: int = 100) -> ZoneList:
        return self._run(self._async.zones(after, limit))

    def put_webhook(self, webhook_id: str, url: str, events: Sequence[str], secret: str) -> Webhook:
        webhook, _ = self._run(self._async.put_webhook(webhook_id, url, events, secret))
        return webhook

    def list_webhooks(self) -> list[Webhook]:
        return self._run(self._async.list_webhooks())

    def get_webhook(self, webhook_id: str) -> Webhook:
        return self._run(self._async.get_webhook(webhook_id))

    def delete_webhook(self, webhook_id: str) -> Webhook:
        return self._run(self._async.delete_webhook(webhook_id))

    def start_watchdog(self) -> None:
        self._run(self._async.start_watchdog())

    def sweep(self, timeout_s: float = 300.0) -> SweepReport:
        return self._run(self._async.sweep(timeout_s))

    def close(self) -> None:
        if not self._thread.is_alive():  # closed already
            return
        try:
            self._run(self._async.aclose())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> CapacityClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _make_async_client(
    settings: ServiceSettings | None, namespace: str, ray_address: str | None
) -> AsyncCapacityClient:
    return AsyncCapacityClient(settings, namespace=namespace, ray_address=ray_address)
