"""Choosing a slot: which pools a chosen reserve may take, best first (``application/choosing.py``), and
the service layer's reserve of a chosen pool (``CapacityOperations.reserve_chosen``) over the in-process
service: a real ``PoolHost`` on the in-memory journal, with an availability source that may be behind."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest

from capacity_service.application.availability_index import AvailabilityIndex, ZoneCounts
from capacity_service.application.choosing import attempt_request_id, candidates
from capacity_service.application.operations import CapacityOperations
from capacity_service.application.pool_writer import CommandOutcome
from capacity_service.domain import PoolCommand, PoolView, Reservation, Reserve
from capacity_service.domain.choice import SlotChoice
from capacity_service.errors import (
    CapacityError,
    InsufficientCapacity,
    InvalidRequest,
    NoCapacityInWindow,
    OutcomeUnknown,
    Unavailable,
)
from tests.support.in_process import IndexAvailability, InProcessBackend, InProcessRouter


def at(hour: int) -> datetime:
    return datetime(2026, 12, 1, hour, tzinfo=UTC)


def view(
    pool_id: str, start: int | None, remaining: int, zone: str = "north", paused: bool = False, retired: bool = False
) -> PoolView:
    slot_start, slot_end = (None, None) if start is None else (at(start), at(start + 2))
    return PoolView(pool_id, True, zone, slot_start, slot_end, 10, 10 - remaining, remaining, 1, retired, paused)


class Listed:
    """An availability source that answers what it is given, whatever the query (a cache that may be
    wrong), and records the queries."""

    def __init__(self, views: list[PoolView]) -> None:
        self.views = views
        self.queries: list[tuple[str, datetime | None, datetime | None, int]] = []

    async def query(
        self, zone: str, slot_from: datetime | None, slot_to: datetime | None, quantity: int
    ) -> list[PoolView]:
        self.queries.append((zone, slot_from, slot_to, quantity))
        return list(self.views)

    def known_view(self, pool_id: str) -> PoolView | None:
        return None

    async def zones(self, after: str | None, limit: int) -> tuple[list[ZoneCounts], bool]:
        return [], False


VIEWS = [
    view("n-10", 10, 5),
    view("n-08-b", 8, 2),
    view("n-08-a", 8, 3),
    view("n-noslot", None, 9),
    view("n-12", 12, 2),
    view("n-06-one-left", 6, 1),
    view("n-07-paused", 7, 5, paused=True),
    view("s-05", 5, 5, zone="south"),
]


def test_candidates_are_the_fitting_pools_earliest_slot_first_then_by_pool_id() -> None:
    source = Listed(VIEWS)
    choice = SlotChoice("north", at(6), at(14), quantity=2)
    assert asyncio.run(candidates(source, choice)) == ["n-08-a", "n-08-b", "n-10", "n-12", "n-noslot"]
    assert source.queries == [("north", at(6), at(14), 2)]  # the window and the quantity go to the cache


def test_candidates_by_most_remaining_break_ties_by_slot_then_pool_id() -> None:
    views = [*VIEWS, view("n-09", 9, 5)]
    choice = SlotChoice("north", quantity=2, prefer="most_remaining")
    assert asyncio.run(candidates(Listed(views), choice)) == ["n-noslot", "n-09", "n-10", "n-08-a", "n-08-b", "n-12"]


def test_candidates_are_at_most_limit_and_none_when_nothing_fits() -> None:
    assert asyncio.run(candidates(Listed(VIEWS), SlotChoice("north", quantity=2), limit=2)) == ["n-08-a", "n-08-b"]
    assert asyncio.run(candidates(Listed(VIEWS), SlotChoice("north", quantity=10))) == []
    assert asyncio.run(candidates(Listed(VIEWS), SlotChoice("west"))) == []


def test_candidates_use_the_cache_own_window_rule() -> None:
    index = AvailabilityIndex()
    index.update_all(VIEWS)
    choice = SlotChoice("north", at(9), at(12), quantity=2)  # [9, 12): the 08:00-10:00 and 10:00 slots overlap
    assert asyncio.run(candidates(IndexAvailability(index), choice)) == ["n-08-a", "n-08-b", "n-10", "n-noslot"]


def test_an_attempt_has_its_own_bounded_request_id_per_pool_the_same_on_every_repeat() -> None:
    assert attempt_request_id("order-42", "north:0800") == "order-42@north:0800"
    long_id, long_pool = "r" * 128, "p" * 128
    bounded = attempt_request_id(long_id, long_pool)
    assert len(bounded) <= 128 and bounded == attempt_request_id(long_id, long_pool)
    assert bounded != attempt_request_id(long_id, "q" * 128) != attempt_request_id("s" * 128, long_pool)


# ---------------------------------------------------------------------- reserve_chosen, in process


class Service:
    """The in-process service, and the service layer over it with an availability source of our own."""

    def __init__(self, call_timeout_s: float = 10.0) -> None:
        self.backend = InProcessBackend()
        self.router = Scripted(self.backend)
        self.cache = IndexAvailability(self.backend.index)  # up to date unless a test freezes it
        self.operations = CapacityOperations(self.router, self.cache, call_timeout_s)

    async def pool(self, pool_id: str, capacity: int, start: int | None, zone: str = "north") -> None:
        slot = (None, None) if start is None else (at(start), at(start + 2))
        await self.backend.client.configure_pool(pool_id, capacity, zone, *slot)

    def freeze_cache(self) -> None:
        """From now on the cache answers what it holds now: it falls behind every later write."""
        frozen = AvailabilityIndex()
        frozen.update_all(self.backend.index.views())
        self.cache.index = frozen

    async def reserved(self) -> dict[str, int]:
        return {v.pool_id: v.reserved for v in self.backend.index.views()}


class Scripted(InProcessRouter):
    """The in-process router, recording the reserves and the looks for a request, with a script of
    answers: a pool's name -> what to do instead of (or after) executing there."""

    def __init__(self, backend: InProcessBackend) -> None:
        super().__init__(backend.host, backend.journal)
        self.reserved_on: list[str] = []
        self.looked_at: list[str] = []
        self.answer_lost_on: set[str] = set()  # executed, then answered "outcome unknown"
        self.slow_full: dict[str, float] = {}  # answered "full" after this many seconds, not executed
        self.cannot_look: set[str] = set()  # a look answered "unavailable"
        self.slow_look = 0.0  # every look answered after this many seconds

    async def execute(
        self, pool_id: str, command: PoolCommand, deadline: float | None = None
    ) -> CommandOutcome | CapacityError:
        if isinstance(command, Reserve):
            self.reserved_on.append(pool_id)
            if pool_id in self.slow_full:
                await asyncio.sleep(self.slow_full[pool_id])
                return InsufficientCapacity(pool_id, command.quantity, 0)
        answer = await super().execute(pool_id, command, deadline)
        if pool_id in self.answer_lost_on:
            return OutcomeUnknown("the journal did not confirm the append")
        return answer

    async def reservation_of_request(self, pool_id: str, request_id: str) -> Reservation | CapacityError | None:
        self.looked_at.append(pool_id)
        await asyncio.sleep(self.slow_look)
        if pool_id in self.cannot_look:
            return Unavailable(f"pool {pool_id!r} is restarting")
        return await super().reservation_of_request(pool_id, request_id)


def test_a_candidate_full_though_the_cache_said_free_is_passed_over_for_the_next() -> None:
    async def scenario() -> None:
        service = Service()
        await service.pool("n-08", 2, 8)
        await service.pool("n-10", 2, 10)
        service.freeze_cache()
        await service.backend.client.reserve("n-08", 2)  # the cache still lists n-08 with 2 left
        receipt = await service.operations.reserve_chosen(SlotChoice("north", quantity=1), request_id="c-1")
        assert (receipt.pool_id, receipt.quantity, receipt.remaining, receipt.request_id) == ("n-10", 1, 1, "c-1")
        assert service.router.reserved_on == ["n-08", "n-10"]
        assert await service.reserved() == {"n-08": 2, "n-10": 1}
        held = await service.backend.client.get_reservation(receipt.reservation_id)
        assert (held.pool_id, held.quantity, held.status) == ("n-10", 1, "active")

    asyncio.run(scenario())


def test_retired_paused_and_vanished_candidates_are_passed_over() -> None:
    async def scenario() -> None:
        service = Service()
        for pool_id, start in [("n-06", 6), ("n-07", 7), ("n-09", 9)]:
            await service.pool(pool_id, 5, start)
        service.freeze_cache()
        service.cache.index.update(view("n-05-gone", 5, 5))  # listed, never configured
        await service.backend.client.retire_pool("n-06")
        await service.backend.client.pause_pool("n-07", "counting vans")
        receipt = await service.operations.reserve_chosen(SlotChoice("north", quantity=2))
        assert receipt.pool_id == "n-09"
        assert service.router.reserved_on == ["n-05-gone", "n-06", "n-07", "n-09"]
        assert await service.reserved() == {"n-06": 0, "n-07": 0, "n-09": 2}

    asyncio.run(scenario())


def test_no_candidate_left_is_no_capacity_in_window_and_takes_nothing() -> None:
    async def scenario() -> None:
        service = Service()
        await service.pool("n-08", 1, 8)
        await service.pool("n-10", 1, 10)
        await service.pool("s-08", 5, 8, zone="south")
        service.freeze_cache()
        await service.backend.client.reserve("n-08", 1)
        await service.backend.client.reserve("n-10", 1)
        events_before = {p: service.backend.journal.highest_seq_nr(p) for p in ("n-08", "n-10", "s-08")}
        with pytest.raises(NoCapacityInWindow) as refused:
            await service.operations.reserve_chosen(SlotChoice("north", quantity=1), request_id="c-2")
        assert refused.value.code == "no_capacity_in_window" and refused.value.request_id == "c-2"
        assert "2 candidates tried" in str(refused.value)
        assert {p: service.backend.journal.highest_seq_nr(p) for p in events_before} == events_before
        with pytest.raises(NoCapacityInWindow, match="none listed"):  # nothing of the zone fits
            await service.operations.reserve_chosen(SlotChoice("north", at(20), at(22)))

    asyncio.run(scenario())


def test_a_repeat_returns_the_reservation_taken_and_takes_nothing_elsewhere() -> None:
    """The pool taken drops out of availability (its last unit), and an earlier pool frees up meanwhile:
    trying the candidates again would take a second unit. The repeat finds the first one instead."""

    async def scenario() -> None:
        service = Service()
        await service.pool("n-08", 1, 8)
        await service.pool("n-10", 1, 10)
        await service.pool("n-12", 1, 12)
        someone = await service.backend.client.reserve("n-08", 1)
        first = await service.operations.reserve_chosen(SlotChoice("north"), request_id="order-7")
        assert first.pool_id == "n-10"
        await service.backend.client.release(someone.reservation_id)  # n-08 is free again; n-10 is full
        assert [v.pool_id for v in service.backend.index.query("north", None, None, 1)] == ["n-08", "n-12"]
        for _ in range(2):
            again = await service.operations.reserve_chosen(SlotChoice("north"), request_id="order-7")
            assert (again.reservation_id, again.pool_id, again.request_id) == (first.reservation_id, "n-10", "order-7")
        assert await service.reserved() == {"n-08": 0, "n-10": 1, "n-12": 0}
        assert set(service.router.looked_at) == {"n-08", "n-10", "n-12"}  # full pools are looked at too

    asyncio.run(scenario())


def test_a_repeat_with_another_quantity_is_a_request_id_conflict() -> None:
    async def scenario() -> None:
        service = Service()
        await service.pool("n-08", 5, 8)
        await service.operations.reserve_chosen(SlotChoice("north", quantity=2), request_id="order-8")
        with pytest.raises(CapacityError) as conflict:
            await service.operations.reserve_chosen(SlotChoice("north", quantity=3), request_id="order-8")
        assert conflict.value.code == "request_id_conflict"
        assert await service.reserved() == {"n-08": 2}

    asyncio.run(scenario())


def test_an_unknown_outcome_ends_the_call_and_its_repeat_settles_it_on_the_same_pool() -> None:
    async def scenario() -> None:
        service = Service()
        await service.pool("n-08", 1, 8)
        await service.pool("n-10", 1, 10)
        service.router.answer_lost_on.add("n-08")  # taken, but the answer says nobody knows
        with pytest.raises(OutcomeUnknown) as unknown:
            await service.operations.reserve_chosen(SlotChoice("north"))
        settle_with = unknown.value.request_id
        assert settle_with is not None and settle_with.startswith("auto:")
        assert service.router.reserved_on == ["n-08"]  # not moved on: n-08 may have taken it
        service.router.answer_lost_on.clear()
        settled = await service.operations.reserve_chosen(SlotChoice("north"), request_id=settle_with)
        assert (settled.pool_id, settled.request_id) == ("n-08", settle_with)
        assert await service.reserved() == {"n-08": 1, "n-10": 0}

    asyncio.run(scenario())


def test_no_attempt_starts_after_the_deadline() -> None:
    async def scenario() -> None:
        service = Service(call_timeout_s=0.2)
        await service.pool("n-08", 1, 8)
        await service.pool("n-10", 1, 10)
        service.router.slow_full["n-08"] = 0.3
        started = time.monotonic()
        with pytest.raises(NoCapacityInWindow, match="the deadline passed after 1 of 2 candidates"):
            await service.operations.reserve_chosen(SlotChoice("north"))
        assert time.monotonic() - started < 1
        assert service.router.reserved_on == ["n-08"]
        assert await service.reserved() == {"n-08": 0, "n-10": 0}

    asyncio.run(scenario())


def test_a_pool_of_the_window_that_cannot_say_what_it_took_refuses_the_repeatable_call() -> None:
    """It may hold what an earlier call took: taking elsewhere could take twice, so nothing is taken."""

    async def scenario() -> None:
        service = Service()
        await service.pool("n-08", 1, 8)
        await service.pool("n-10", 1, 10)
        service.router.cannot_look.add("n-10")
        with pytest.raises(Unavailable) as refused:
            await service.operations.reserve_chosen(SlotChoice("north"), request_id="c-3")
        assert refused.value.request_id == "c-3"
        assert service.router.reserved_on == []

    asyncio.run(scenario())


def test_a_deadline_passed_before_any_attempt_is_unavailable_not_no_capacity() -> None:
    async def scenario() -> None:
        service = Service(call_timeout_s=0.1)
        await service.pool("n-08", 1, 8)
        service.router.slow_look = 0.2
        with pytest.raises(Unavailable, match="before any candidate was tried"):
            await service.operations.reserve_chosen(SlotChoice("north"), request_id="c-4")
        assert service.router.reserved_on == []

    asyncio.run(scenario())


def test_a_call_without_request_id_looks_for_nothing_taken_before() -> None:
    async def scenario() -> None:
        service = Service()
        await service.pool("n-08", 1, 8)
        await service.operations.reserve_chosen(SlotChoice("north"))
        assert service.router.looked_at == []  # its id is new: nothing can have been taken under it

    asyncio.run(scenario())


def test_concurrent_chosen_reserves_on_a_stale_cache_never_oversell_nor_answer_from_a_full_pool() -> None:
    async def scenario() -> None:
        service = Service()
        for k, start in enumerate((8, 10, 12)):
            await service.pool(f"n-{k}", 5, start)
        service.freeze_cache()  # every call sees all three pools with 5 left
        answers = await asyncio.gather(
            *(service.operations.reserve_chosen(SlotChoice("north"), request_id=f"c-{k}") for k in range(25)),
            return_exceptions=True,
        )
        receipts = [a for a in answers if not isinstance(a, BaseException)]
        assert len(receipts) == 15
        assert all(isinstance(a, NoCapacityInWindow) for a in answers if isinstance(a, BaseException))
        assert await service.reserved() == {"n-0": 5, "n-1": 5, "n-2": 5}
        for receipt in receipts:  # each answer is a reservation its pool holds
            held = await service.backend.client.get_reservation(receipt.reservation_id)
            assert (held.pool_id, held.status) == (receipt.pool_id, "active")
        assert len({r.reservation_id for r in receipts}) == 15

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("choice", "request_id", "hold_seconds"),
    [
        (SlotChoice(""), None, None),
        (SlotChoice("north\x00"), None, None),
        (SlotChoice("north", quantity=0), None, None),
        (SlotChoice("north", prefer="latest"), None, None),  # type: ignore[arg-type]
        (SlotChoice("north"), "", None),
        (SlotChoice("north"), None, 0),
    ],
)
def test_a_choice_that_cannot_be_answered_is_invalid(
    choice: SlotChoice, request_id: str | None, hold_seconds: int | None
) -> None:
    async def scenario() -> None:
        service = Service()
        await service.pool("n-08", 5, 8)
        with pytest.raises(InvalidRequest):
            await service.operations.reserve_chosen(choice, request_id, hold_seconds)
        assert service.router.reserved_on == []

    asyncio.run(scenario())


def test_a_chosen_hold_is_a_hold_on_the_pool_taken() -> None:
    async def scenario() -> None:
        service = Service()
        await service.pool("n-08", 5, 8)
        receipt = await service.operations.reserve_chosen(SlotChoice("north"), hold_seconds=60)
        assert (receipt.pool_id, receipt.status) == ("n-08", "held") and receipt.expires_at is not None

    asyncio.run(scenario())
