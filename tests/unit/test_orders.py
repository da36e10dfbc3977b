"""Orders on real pool and order hosts over the in-memory journal (no Ray): all lines or none, holds then
confirm, cancel, idempotent repeats, and a host that dies in the middle of an order, whose successor
finishes or undoes it from the order's events alone."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from capacity_service.adapters.journal import AppendRequest
from capacity_service.adapters.journal.memory import InMemoryJournal
from capacity_service.application.host_first import HostFirstSender
from capacity_service.application.order_driver import CommandSender, OrderDriver
from capacity_service.application.order_host import OrderHost
from capacity_service.application.pool_host import PoolHost
from capacity_service.application.pool_writer import CommandOutcome
from capacity_service.client import AsyncCapacityClient
from capacity_service.domain import ConfigurePool, PersistedEvent, PoolCommand, Reservation, Reserve, new_reservation_id
from capacity_service.domain.ids import is_order_stream, order_stream_id
from capacity_service.domain.order import (
    MAX_ORDER_LINES,
    Attempt,
    CancelOrder,
    ConfirmOrder,
    OrderIdReused,
    OrderLine,
    OrderStatus,
    PlaceOrder,
    UnknownOrder,
)
from capacity_service.errors import (
    CapacityError,
    InvalidRequest,
    OrderIdConflict,
    OrderLineRefused,
    OrderNotFound,
    OrderNotHeld,
    OutcomeUnknown,
    Unavailable,
)
from capacity_service.models import OrderLineRequest
from tests.support.faulty_journal import FaultyJournal
from tests.support.in_process import InProcessRouter


class Nowhere:
    """No other host: every pool of these tests runs in the one under test."""

    async def execute(self, pool_id: str, command: PoolCommand, deadline: float | None = None) -> CapacityError:
        return Unavailable(f"{pool_id} is not hosted here")

    async def reservation(self, pool_id: str, reservation_id: str) -> CapacityError:
        return Unavailable(f"{pool_id} is not hosted here")


class Stalling:
    """Passes commands on, except reserves on ``pool_id``: those never get an answer (the host is about to
    die)."""

    def __init__(self, inner: CommandSender, pool_id: str) -> None:
        self._inner, self._pool_id = inner, pool_id

    async def execute(
        self, pool_id: str, command: PoolCommand, deadline: float | None = None
    ) -> CommandOutcome | CapacityError:
        if pool_id == self._pool_id and isinstance(command, Reserve):
            await asyncio.Event().wait()
        return await self._inner.execute(pool_id, command, deadline)

    async def reservation(self, pool_id: str, reservation_id: str) -> Reservation | CapacityError | None:
        return await self._inner.reservation(pool_id, reservation_id)


class Hosts:
    """One process's pool host and order host, sharing its journal."""

    def __init__(self, journal: InMemoryJournal, sender: Callable[[PoolHost], CommandSender] | None = None) -> None:
        self.published: list[PersistedEvent] = []  # what the pools and orders hand to the warehouse
        self.pools = PoolHost(journal, events=self)
        base = HostFirstSender(self.pools, Nowhere())
        driver = OrderDriver(base if sender is None else sender(self.pools), late_s=0.2, retry_s=0.01)
        self.orders = OrderHost(journal, self.pools.shared, driver, answer_grace_s=0.5, events=self.pools.events)

    def publish_events(self, events: Sequence[PersistedEvent]) -> None:
        self.published.extend(events)

    async def configure(self, *pools: tuple[str, int]) -> None:
        for pool_id, capacity in pools:
            await self.pools.execute(pool_id, ConfigurePool(capacity, "north"))

    async def remaining(self, pool_id: str) -> int:
        return (await self.pools.view(pool_id)).remaining


def line(pool_id: str, quantity: int, order_id: str, index: int) -> OrderLine:
    return OrderLine(quantity, (Attempt(pool_id, new_reservation_id(pool_id), f"order:{order_id}:{index}"),))


def place(order_id: str, lines: list[tuple[str, int]], hold: int | None = None, in_s: float = 5) -> PlaceOrder:
    order_lines = tuple(line(p, q, order_id, i) for i, (p, q) in enumerate(lines))
    deadline = datetime.now(UTC) + timedelta(seconds=in_s)
    return PlaceOrder(order_lines, hold, deadline, digest=repr((lines, hold)))


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(test())


def test_every_line_is_taken_or_none() -> None:
    async def scenario() -> None:
        hosts = Hosts(InMemoryJournal())
        await hosts.configure(("van", 3), ("picker", 1))
        taken = await hosts.orders.execute("o1", place("o1", [("van", 2), ("picker", 1)]), time.time() + 5)
        assert taken.rejection is None and taken.view.status is OrderStatus.CONFIRMED
        assert [(line.pool_id, line.quantity) for line in taken.view.lines] == [("van", 2), ("picker", 1)]
        assert (await hosts.remaining("van"), await hosts.remaining("picker")) == (1, 0)

        refused = await hosts.orders.execute("o2", place("o2", [("van", 1), ("picker", 1)]), time.time() + 5)
        assert refused.view.status is OrderStatus.FAILED
        assert (refused.view.failed_line, refused.view.failed_error) == (1, "insufficient_capacity")
        assert (await hosts.remaining("van"), await hosts.remaining("picker")) == (1, 0)  # van's unit went back

    run(scenario)


def test_an_orders_events_go_to_the_warehouse_as_they_become_durable_beside_its_pools_events() -> None:
    async def scenario() -> None:
        hosts = Hosts(InMemoryJournal())
        await hosts.configure(("van", 3), ("picker", 1))
        await hosts.orders.execute("o1", place("o1", [("van", 2), ("picker", 1)]), time.time() + 5)
        await hosts.orders.execute("o2", place("o2", [("van", 1), ("picker", 1)]), time.time() + 5)  # fails
        for _ in range(50):  # the answer can come before the order's last event is durable
            await asyncio.sleep(0.01)
            if {p.pool_id for p in hosts.published if is_order_stream(p.pool_id)} == {"order~o1", "order~o2"}:
                break
        orders = [(p.pool_id, p.seq_nr, type(p.event).__name__) for p in hosts.published if is_order_stream(p.pool_id)]
        placed = [e for e in orders if e[0] == "order~o1"]
        assert placed == [("order~o1", 1, "OrderPlaced"), ("order~o1", 2, "OrderLinesTaken")]
        failed = [e for e in orders if e[0] == "order~o2"]
        assert failed[0][1:] == (1, "OrderPlaced") and [e[1] for e in failed] == list(range(1, len(failed) + 1))
        assert failed[-1][2] == "OrderUndone"

    run(scenario)


def test_an_order_at_rest_is_marked_dormant_by_its_last_append_not_by_a_write_of_its_own() -> None:
    class CountingMarks(InMemoryJournal):
        marks = 0

        def mark_dormant_many(self, pool_ids: Sequence[str]) -> None:
            self.marks += 1
            super().mark_dormant_many(pool_ids)

    async def scenario() -> None:
        journal = CountingMarks()
        hosts = Hosts(journal)
        await hosts.configure(("van", 3), ("picker", 1))
        await hosts.orders.execute("o1", place("o1", [("van", 2), ("picker", 1)]), time.time() + 5)
        for _ in range(100):  # answered while its last event is written; handed back once that is durable
            await asyncio.sleep(0.01)
            if "o1" not in hosts.orders.order_ids:
                break
        assert "o1" not in hosts.orders.order_ids  # at rest: no longer hosted
        assert order_stream_id("o1") in set(journal.dormant_pool_ids()) and journal.marks == 0

    run(scenario)


def test_a_repeat_takes_nothing_twice_and_other_lines_under_the_same_id_are_refused() -> None:
    async def scenario() -> None:
        hosts = Hosts(InMemoryJournal())
        await hosts.configure(("van", 5))
        first = place("o1", [("van", 2)])
        await hosts.orders.execute("o1", first, time.time() + 5)
        again = await hosts.orders.execute("o1", first, time.time() + 5)
        assert again.view.status is OrderStatus.CONFIRMED and await hosts.remaining("van") == 3
        other = await hosts.orders.execute("o1", place("o1", [("van", 3)]), time.time() + 5)
        assert isinstance(other.rejection, OrderIdReused) and await hosts.remaining("van") == 3

    run(scenario)


def test_a_repeat_on_another_host_reads_the_order_it_believed_new_and_takes_nothing_twice() -> None:
    """An order placed anew on a host where it is not running is created by its first append; when that finds
    the order exists (placed on another host), the host claims it, reads it and answers the repeat from it."""

    async def scenario() -> None:
        journal = InMemoryJournal()
        first_host, second_host = Hosts(journal), Hosts(journal)
        await first_host.configure(("van", 5))
        placed = place("o1", [("van", 2)])
        assert (await first_host.orders.execute("o1", placed, time.time() + 5)).view.status is OrderStatus.CONFIRMED
        again = await second_host.orders.execute("o1", placed, time.time() + 5)
        assert again.rejection is None and again.view.status is OrderStatus.CONFIRMED
        assert [e.event_type for e in journal.read("order~o1")] == ["OrderPlaced", "OrderLinesTaken"]
        assert await second_host.remaining("van") == 3
        other = await second_host.orders.execute("o1", place("o1", [("van", 1)]), time.time() + 5)
        assert isinstance(other.rejection, OrderIdReused) and await second_host.remaining("van") == 3

    run(scenario)


def test_held_orders_are_confirmed_or_cancelled_as_a_whole() -> None:
    async def scenario() -> None:
        hosts = Hosts(InMemoryJournal())
        await hosts.configure(("van", 2), ("picker", 2))
        held = await hosts.orders.execute("o1", place("o1", [("van", 1), ("picker", 1)], hold=60), time.time() + 5)
        assert held.view.status is OrderStatus.HELD and held.view.expires_at is not None
        confirmed = await hosts.orders.execute("o1", ConfirmOrder(), time.time() + 5)
        assert confirmed.view.status is OrderStatus.CONFIRMED
        van = (await hosts.pools.reservations("van"))[0]
        assert van.status.value == "active"

        await hosts.orders.execute("o2", place("o2", [("van", 1), ("picker", 1)], hold=60), time.time() + 5)
        cancelled = await hosts.orders.execute("o2", CancelOrder(), time.time() + 5)
        assert cancelled.view.status is OrderStatus.CANCELLED
        assert (await hosts.remaining("van"), await hosts.remaining("picker")) == (1, 1)
        assert isinstance((await hosts.orders.execute("o3", ConfirmOrder(), None)).rejection, UnknownOrder)

    run(scenario)


def test_a_held_order_whose_holds_expire_is_cancelled_by_its_own_timer() -> None:
    async def scenario() -> None:
        hosts = Hosts(InMemoryJournal())
        await hosts.configure(("van", 1))
        await hosts.orders.execute("o1", place("o1", [("van", 1)], hold=1), time.time() + 5)
        deadline = time.monotonic() + 10
        while (await hosts.orders.view("o1")).status is not OrderStatus.CANCELLED:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert (await hosts.orders.view("o1")).undo_reason == "hold_expired"
        assert await hosts.remaining("van") == 1

    run(scenario)


@pytest.mark.parametrize("deadline_passes", [False, True], ids=["finished", "undone"])
def test_an_order_cut_off_by_its_hosts_death_is_finished_or_undone_by_the_next_host(deadline_passes: bool) -> None:
    async def scenario() -> None:
        journal = InMemoryJournal()
        first = Hosts(journal, lambda pools: Stalling(HostFirstSender(pools, Nowhere()), "picker"))
        await first.configure(("van", 2), ("picker", 2))
        order = place("o1", [("van", 1), ("picker", 1)], in_s=0.5 if deadline_passes else 30)
        with pytest.raises(OutcomeUnknown):  # the van is taken, the picker's reserve never answers
            await first.orders.execute("o1", order, time.time() + 0.3)
        if deadline_passes:
            await asyncio.sleep(0.6)
        second = Hosts(journal)  # the next incarnation: it claims the pools and the order anew
        await second.pools.ensure_started_many(["van", "picker"])
        await second.orders.ensure_started_many(["o1"])
        deadline = time.monotonic() + 10
        while (view := await second.orders.view("o1")).status not in (OrderStatus.CONFIRMED, OrderStatus.FAILED):
            assert time.monotonic() < deadline, view
            await asyncio.sleep(0.05)
        remaining = (await second.remaining("van"), await second.remaining("picker"))
        if deadline_passes:
            assert view.status is OrderStatus.FAILED and view.undo_reason == "deadline"
            assert remaining == (2, 2)  # nothing of it is left taken
        else:
            assert view.status is OrderStatus.CONFIRMED and remaining == (1, 1)
        repeat = await second.orders.execute("o1", order, time.time() + 5)  # the caller settles its 504
        assert repeat.view.status is view.status and (await second.remaining("van")) == remaining[0]

    run(scenario)


def records_lines_taken(request: AppendRequest) -> bool:
    return any(e.event_type == "OrderLinesTaken" for e in request.events)


class RecordsNoTakenOrder(FaultyJournal):
    """Every append that records an order's lines taken hangs until ``frozen`` is set (the host dies before it
    lands)."""

    def __init__(self) -> None:
        super().__init__()
        self.frozen = threading.Event()
        self.before_append = self._hang_if_it_records_lines_taken

    def _hang_if_it_records_lines_taken(self, request: AppendRequest) -> None:
        if records_lines_taken(request) and not self.frozen.is_set():
            self.frozen.wait(30)


def test_an_order_answered_taken_stays_taken_when_its_host_dies_before_recording_it() -> None:
    """The caller hears "confirmed" once every line is taken, before the order records it; the host dies
    then, and the deadline passes: the next host looks the lines up in their pools and records the order
    taken, never undoing what its caller was told."""

    async def scenario() -> None:
        journal = RecordsNoTakenOrder()
        first = Hosts(journal)
        await first.configure(("van", 2), ("picker", 2))
        order = place("o1", [("van", 1), ("picker", 1)], in_s=0.5)
        answered = await first.orders.execute("o1", order, time.time() + 5)
        assert answered.view.status is OrderStatus.CONFIRMED
        assert [e.event_type for e in journal.read("order~o1")] == ["OrderPlaced"]
        await asyncio.sleep(0.8)  # past the deadline and the margin after it
        second = Hosts(journal)
        await second.pools.ensure_started_many(["van", "picker"])
        await second.orders.ensure_started_many(["o1"])
        journal.frozen.set()  # the dead host's write may land now: it is fenced, and changes nothing
        deadline = time.monotonic() + 10
        while (view := await second.orders.view("o1")).status is not OrderStatus.CONFIRMED:
            assert view.status is OrderStatus.PLACING and time.monotonic() < deadline, view
            await asyncio.sleep(0.05)
        assert (await second.remaining("van"), await second.remaining("picker")) == (1, 1)
        assert [e.event_type for e in journal.read("order~o1")] == ["OrderPlaced", "OrderLinesTaken"]

    run(scenario)


class OutageAtTheRecord(FaultyJournal):
    """The journal goes down (appends and reads fail) as an order's lines are recorded taken, until
    ``failing`` is turned off."""

    def __init__(self) -> None:
        super().__init__()
        self.outage = "down"
        self.before_append = self._go_down_at_the_record

    def _go_down_at_the_record(self, request: AppendRequest) -> None:
        if records_lines_taken(request):
            self.failing = True
            self.before_append = None  # once: the record retried after the outage lands


def test_an_order_is_driven_on_through_a_journal_outage_without_being_asked() -> None:
    async def scenario() -> None:
        journal = OutageAtTheRecord()
        hosts = Hosts(journal)
        await hosts.configure(("van", 2), ("picker", 2))
        answered = await hosts.orders.execute("o1", place("o1", [("van", 1), ("picker", 1)]), time.time() + 5)
        assert answered.view.status is OrderStatus.CONFIRMED  # every line was taken before the outage
        await asyncio.sleep(0.5)  # the record failed, and the order cannot even be read back meanwhile
        journal.failing = False
        deadline = time.monotonic() + 5
        while [e.event_type for e in journal.read("order~o1")] != ["OrderPlaced", "OrderLinesTaken"]:
            assert time.monotonic() < deadline, list(journal.read("order~o1"))
            await asyncio.sleep(0.05)
        assert (await hosts.remaining("van"), await hosts.remaining("picker")) == (1, 1)

    run(scenario)


def test_nothing_is_created_for_an_order_that_does_not_exist() -> None:
    async def scenario() -> None:
        journal = InMemoryJournal()
        hosts = Hosts(journal)
        for command in (ConfirmOrder(), CancelOrder()):
            answer: Any = await hosts.orders.execute("nope", command, None)
            assert isinstance(answer.rejection, UnknownOrder)
        assert list(journal.pool_ids()) == []

    run(scenario)


# ------------------------------------------------------------------ through the service layer (the client)


def client_and_journal() -> tuple[AsyncCapacityClient, InMemoryJournal]:
    journal = InMemoryJournal()
    host = PoolHost(journal)
    return AsyncCapacityClient(router=InProcessRouter(host, journal)), journal


def named(*lines: tuple[str, int]) -> list[OrderLineRequest]:
    return [OrderLineRequest(pool_id=pool_id, quantity=quantity) for pool_id, quantity in lines]


def test_the_client_places_confirms_cancels_and_reads_orders() -> None:
    async def scenario() -> None:
        client, _ = client_and_journal()
        await client.configure_pool("van", 3, "north")
        await client.configure_pool("picker", 2, "north")
        order = await client.place_order(named(("van", 2), ("picker", 1)), order_id="o1", hold_seconds=600)
        assert order.status == "held" and [line.pool_id for line in order.lines] == ["van", "picker"]
        assert all(line.reservation_id for line in order.lines) and order.expires_at is not None
        assert (await client.place_order(named(("van", 2), ("picker", 1)), order_id="o1", hold_seconds=600)) == order
        assert (await client.confirm_order("o1")).status == "confirmed"
        van = await client.get_reservation(order.lines[0].reservation_id or "")
        assert van.status == "active"
        assert (await client.cancel_order("o1")).status == "cancelled"
        assert (await client.get_pool("van")).remaining == 3
        assert (await client.get_order("o1")).status == "cancelled"
        with pytest.raises(OrderNotHeld):
            await client.confirm_order("o1")
        with pytest.raises(OrderNotFound):
            await client.get_order("nope")

    run(scenario)


def test_a_line_that_cannot_be_served_fails_the_order_with_nothing_taken() -> None:
    async def scenario() -> None:
        client, _ = client_and_journal()
        await client.configure_pool("van", 3, "north")
        await client.configure_pool("picker", 1, "north")
        with pytest.raises(OrderLineRefused) as refused:
            await client.place_order(named(("van", 1), ("picker", 2)), order_id="o1")
        assert (refused.value.line, refused.value.pool_id, refused.value.line_error) == (
            1,
            "picker",
            "insufficient_capacity",
        )
        assert (await client.get_pool("van")).remaining == 3
        assert (await client.get_order("o1")).status == "failed"
        with pytest.raises(OrderIdConflict):
            await client.place_order(named(("van", 1)), order_id="o1")

    run(scenario)


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([], InvalidRequest),
        ([("van", 1), ("van", 1)], InvalidRequest),
        ([(f"p{i}", 1) for i in range(MAX_ORDER_LINES + 1)], InvalidRequest),
        ([("van", 0)], InvalidRequest),
        ([("van", 1), ("ghost", 1)], OrderLineRefused),
        ([("van", 1), ("old", 1)], OrderLineRefused),
        ([("van", 1), ("stopped", 1)], OrderLineRefused),
    ],
    ids=["empty", "a-pool-twice", "too-many-lines", "zero", "unknown-pool", "retired-pool", "paused-pool"],
)
def test_a_bad_order_is_refused_and_creates_nothing(lines: list[tuple[str, int]], expected: type[Exception]) -> None:
    async def scenario() -> None:
        client, journal = client_and_journal()
        for pool_id in ("van", "old", "stopped"):
            await client.configure_pool(pool_id, 5, "north")
        await client.retire_pool("old")
        await client.pause_pool("stopped", "inventory")
        streams_before = set(journal.pool_ids())
        with pytest.raises(expected):
            await client.place_order(named(*lines), order_id="bad")
        assert set(journal.pool_ids()) == streams_before  # no order stream
        assert (await client.get_pool("van")).remaining == 5

    run(scenario)


def test_a_chosen_line_passes_over_a_full_candidate_for_the_next() -> None:
    async def scenario() -> None:
        hosts = Hosts(InMemoryJournal())
        await hosts.configure(("full", 1), ("free", 1))
        await hosts.pools.execute("full", Reserve(1, "r", new_reservation_id("full")))  # the cache lags this
        attempts = tuple(Attempt(p, new_reservation_id(p), f"order:o1:0:{k}") for k, p in enumerate(["full", "free"]))
        deadline = datetime.now(UTC) + timedelta(seconds=5)
        order = PlaceOrder((OrderLine(1, attempts, chosen=True),), None, deadline, "d")
        taken = await hosts.orders.execute("o1", order, time.time() + 5)
        assert taken.view.status is OrderStatus.CONFIRMED and taken.view.lines[0].pool_id == "free"
        assert (await hosts.remaining("full"), await hosts.remaining("free")) == (0, 0)

    run(scenario)


class Held:
    """Passes commands on, except reserves on ``pool_id``: those wait until ``release`` (a host frozen
    past its failover, then thawed)."""

    def __init__(self, inner: CommandSender, pool_id: str) -> None:
        self._inner, self._pool_id = inner, pool_id
        self.release = asyncio.Event()

    async def execute(
        self, pool_id: str, command: PoolCommand, deadline: float | None = None
    ) -> CommandOutcome | CapacityError:
        if pool_id == self._pool_id and isinstance(command, Reserve):
            await self.release.wait()
        return await self._inner.execute(pool_id, command, deadline)

    async def reservation(self, pool_id: str, reservation_id: str) -> Reservation | CapacityError | None:
        return await self._inner.reservation(pool_id, reservation_id)


def test_a_zombie_order_writer_is_fenced_and_its_late_step_changes_nothing() -> None:
    async def scenario() -> None:
        journal = InMemoryJournal()
        held: list[Held] = []

        def holding(pools: PoolHost) -> CommandSender:
            held.append(Held(HostFirstSender(pools, Nowhere()), "picker"))
            return held[0]

        zombie = Hosts(journal, holding)
        await zombie.configure(("van", 2), ("picker", 2))
        order = place("o1", [("van", 1), ("picker", 1)], in_s=30)
        with pytest.raises(OutcomeUnknown):
            await zombie.orders.execute("o1", order, time.time() + 0.3)
        successor = Hosts(journal)  # the zombie's order and pools are claimed anew
        await successor.pools.ensure_started_many(["van", "picker"])
        finished = await successor.orders.execute("o1", order, time.time() + 5)
        assert finished.view.status is OrderStatus.CONFIRMED
        # The answer may come before the order's own record of it (decision 0009); a read waits for that.
        assert (await successor.orders.view("o1")).status is OrderStatus.CONFIRMED
        events_before = [e.event_type for e in journal.read("order~o1")]
        assert events_before == ["OrderPlaced", "OrderLinesTaken"]
        held[0].release.set()  # the zombie thaws: its reserve and its step go on
        for _ in range(50):
            await asyncio.sleep(0.02)
        assert zombie.pools.fenced  # its next write learned of the newer incarnation
        assert [e.event_type for e in journal.read("order~o1")] == events_before
        assert (await successor.remaining("van"), await successor.remaining("picker")) == (1, 1)

    run(scenario)
