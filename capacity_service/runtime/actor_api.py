"""What each of the service's actors answers, as one Protocol per actor, and ``Call``: a method of one of
them with its arguments.

Callers name an actor method through its Protocol (``call(PoolApi.view, pool_id)``), never as a string:
mypy checks the arguments and knows the answer's type, and a renamed method is a type error, not a failure
in an end-to-end test. Each actor class subclasses its Protocol, so mypy also checks that it keeps the
promise. The Protocols live apart from the actors because actors call each other both ways (pools push
to caches, caches pull from pools): importing the classes themselves would make a cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar

from capacity_service.domain import PersistedEvent, PoolCommand, PoolView, Reservation, ReservationStatus, WaitlistPlace
from capacity_service.domain.order import OrderView
from capacity_service.domain.schedule import ScheduleView
from capacity_service.errors import CapacityError
from capacity_service.models import Webhook

if TYPE_CHECKING:  # only for annotations: the runtime modules these come from import this one
    from capacity_service.application.availability_index import ZoneCounts
    from capacity_service.application.pool_history import PoolGlance
    from capacity_service.application.pool_host import AddressedCommand
    from capacity_service.application.pool_writer import CommandOutcome
    from capacity_service.runtime.channel import ChannelAddress
    from capacity_service.runtime.watchdog import SweepReport
    from capacity_service.settings import ServiceSettings

__all__ = [
    "SAME_NODE_METHODS",
    "CacheApi",
    "Call",
    "PoolApi",
    "PoolCalls",
    "SupervisorApi",
    "WarehouseStreamApi",
    "WebhooksApi",
    "call",
]

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Call(Generic[R]):
    """One call of an actor method: the method's name and its positional arguments; ``R`` is its answer."""

    method: str
    args: tuple[Any, ...] = ()


def call(method: Callable[Concatenate[Any, P], Coroutine[Any, Any, R]], *args: P.args, **kwargs: P.kwargs) -> Call[R]:
    """``method`` (an actor Protocol's, e.g. ``PoolApi.view``) called with ``args``."""
    if kwargs:  # the same-node channel sends positional arguments only
        raise TypeError(f"{method.__name__}: actor calls take positional arguments only")
    return Call(method.__name__, args)


class PoolCalls(Protocol):
    """What is asked of one pool, beside its commands: of its host, and of the router that finds it."""

    async def view(self, pool_id: str) -> PoolView | CapacityError: ...

    async def reservation(self, pool_id: str, reservation_id: str) -> Reservation | CapacityError | None: ...

    async def reservation_of_request(self, pool_id: str, request_id: str) -> Reservation | CapacityError | None: ...

    async def waitlist_place(self, pool_id: str, entry_id: str) -> WaitlistPlace | CapacityError | None: ...

    async def reservations(
        self, pool_id: str, status: ReservationStatus | None, limit: int
    ) -> list[Reservation] | CapacityError: ...

    async def reset(self, pool_id: str, to_seq_nr: int) -> CommandOutcome | CapacityError: ...

    async def check(self, pool_id: str) -> tuple[int, list[str]] | CapacityError: ...

    async def glance(self, pool_id: str, limit: int) -> PoolGlance | CapacityError | None: ...


class PoolApi(PoolCalls, Protocol):
    """A pool host (``runtime/pool_actor.py``): one shard of pools, or one pool. Errors come back as values."""

    async def execute(
        self, pool_id: str, command: PoolCommand, deadline: float | None = None
    ) -> CommandOutcome | CapacityError: ...

    async def execute_many(self, commands: list[AddressedCommand]) -> list[CommandOutcome | CapacityError]: ...

    async def order_view(self, order_id: str) -> OrderView | CapacityError: ...

    async def schedule_view(self, schedule_id: str) -> ScheduleView | CapacityError: ...

    async def open_channel(self) -> ChannelAddress | None: ...

    async def views(self, pool_ids: list[str]) -> list[PoolView | CapacityError]: ...

    async def versions(self, pool_ids: list[str]) -> list[int | None]: ...

    async def ensure_started(self, pool_id: str) -> int | CapacityError: ...

    async def ensure_started_many(self, pool_ids: list[str]) -> list[int | CapacityError]: ...

    async def describe(self) -> dict[str, object]: ...


# What a pool actor serves on its same-node channel (``runtime/channel.py``): the hot path, and a pool's
# reads, which a cold restart's first GETs (and a chosen reserve's look for what it took) make many of at
# once; every other method goes through Ray.
SAME_NODE_METHODS = frozenset(
    method.__name__
    for method in (PoolApi.execute_many, PoolApi.view, PoolApi.reservation, PoolApi.reservation_of_request)
)


class CacheApi(Protocol):
    """An availability cache replica, one per node (``runtime/cache_actor.py``)."""

    async def start(self) -> None: ...

    async def sync(self) -> int: ...

    async def update(self, views: list[PoolView]) -> int: ...

    async def query(
        self, zone: str, slot_from: datetime | None, slot_to: datetime | None, quantity: int
    ) -> list[PoolView]: ...

    async def zones(self, after: str | None, limit: int) -> tuple[list[ZoneCounts], bool]: ...

    async def status(self) -> dict[str, object]: ...

    async def changes_since(
        self, incarnation: str, change_nr: int, wait_s: float = 0.0
    ) -> tuple[str, int, list[PoolView], bool]: ...


class SupervisorApi(Protocol):
    """The detached supervisor: watchdog, cache replicas, warehouse streams (``runtime/supervisor.py``)."""

    async def start(self) -> None: ...

    async def settings(self) -> ServiceSettings: ...

    async def sweep_now(self) -> SweepReport: ...

    async def last_report(self) -> SweepReport | None: ...


class WarehouseStreamApi(Protocol):
    """A warehouse stream, delivering some pools' events (``runtime/warehouse_stream_actor.py``)."""

    async def start(self) -> None: ...

    async def offer(self, events: list[PersistedEvent]) -> None: ...

    async def flush(self) -> int: ...

    async def catch_up(self) -> int: ...

    async def status(self) -> dict[str, object]: ...


class WebhooksApi(Protocol):
    """The webhooks' registrations and deliveries, one per service (``runtime/webhook_actor.py``). Errors
    come back as values."""

    async def start(self) -> None: ...

    async def put_webhook(
        self, webhook_id: str, url: str, events: list[str], secret: str
    ) -> tuple[Webhook, bool] | CapacityError: ...

    async def list_webhooks(self) -> list[Webhook] | CapacityError: ...

    async def get_webhook(self, webhook_id: str) -> Webhook | CapacityError: ...

    async def delete_webhook(self, webhook_id: str) -> Webhook | CapacityError: ...

    async def status(self) -> dict[str, object]: ...

    async def streams_moved(self, heads: dict[str, int]) -> None:
        """Streams whose events just became durable, with their newest seq_nr (``WebhookHints``)."""
