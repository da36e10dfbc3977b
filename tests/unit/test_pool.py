"""The pool aggregate's rules, example by example."""

from datetime import UTC, datetime

from capacity_service.domain import (
    CapacityReleased,
    CapacityReserved,
    ConfigurePool,
    InvalidCommand,
    NotEnoughCapacity,
    PoolCommand,
    PoolConfigured,
    PoolEvent,
    PoolState,
    Release,
    RequestIdReused,
    ReservationStatus,
    Reserve,
    UnknownPool,
    UnknownReservation,
    apply_all,
    decide,
    new_reservation_id,
)


def configured(capacity: int = 10) -> PoolState:
    state = PoolState("p1")
    return apply_all(state, [PoolConfigured(capacity, "north", None, None)])


def accept(state: PoolState, command: PoolCommand) -> list[PoolEvent]:
    events = decide(state, command)
    assert isinstance(events, list), events
    apply_all(state, events)
    return events


def reserve(quantity: int = 1, request_id: str = "r1", pool_id: str = "p1") -> Reserve:
    return Reserve(quantity, request_id, new_reservation_id(pool_id))


def test_configure_creates_the_pool() -> None:
    start = datetime(2026, 12, 1, 8, tzinfo=UTC)
    end = datetime(2026, 12, 1, 10, tzinfo=UTC)
    events = decide(PoolState("p1"), ConfigurePool(5, "north", start, end))
    assert events == [PoolConfigured(5, "north", start, end)]


def test_configure_with_unchanged_values_emits_nothing() -> None:
    assert decide(configured(10), ConfigurePool(10, "north")) == []


def test_configure_rejects_bad_values() -> None:
    state = PoolState("p1")
    assert isinstance(decide(state, ConfigurePool(-1, "north")), InvalidCommand)
    assert isinstance(decide(state, ConfigurePool(1, "")), InvalidCommand)
    t = datetime(2026, 12, 1, tzinfo=UTC)
    assert isinstance(decide(state, ConfigurePool(1, "n", t, t)), InvalidCommand)


def test_reserve_on_unknown_pool_is_rejected() -> None:
    assert decide(PoolState("p1"), reserve()) == UnknownPool("p1")


def test_reserve_takes_capacity() -> None:
    state = configured(10)
    command = reserve(3)
    events = decide(state, command)
    assert events == [CapacityReserved(command.reservation_id, 3, "r1")]
    apply_all(state, events)
    assert (state.reserved, state.remaining) == (3, 7)


def test_reserve_beyond_remaining_is_rejected() -> None:
    state = configured(2)
    accept(state, reserve(2))
    assert decide(state, reserve(1, "r2")) == NotEnoughCapacity("p1", 1, 0)


def test_reserve_needs_a_positive_quantity() -> None:
    assert isinstance(decide(configured(), reserve(0)), InvalidCommand)


def test_reserve_with_a_reservation_id_of_another_pool_is_rejected() -> None:
    assert isinstance(decide(configured(), reserve(1, pool_id="other")), InvalidCommand)


def test_repeated_request_id_returns_nothing_new() -> None:
    state = configured(10)
    accept(state, reserve(2, "same"))
    assert decide(state, reserve(2, "same")) == []
    assert state.reserved == 2


def test_repeated_request_id_with_another_quantity_conflicts() -> None:
    state = configured(10)
    first = reserve(2, "same")
    accept(state, first)
    assert decide(state, reserve(3, "same")) == RequestIdReused("same", first.reservation_id)


def test_release_returns_capacity_and_is_idempotent() -> None:
    state = configured(10)
    command = reserve(4)
    accept(state, command)
    events = decide(state, Release(command.reservation_id))
    assert events == [CapacityReleased(command.reservation_id, 4)]
    apply_all(state, events)
    assert state.reserved == 0
    assert state.reservations[command.reservation_id].status is ReservationStatus.RELEASED
    assert decide(state, Release(command.reservation_id)) == []


def test_release_of_unknown_reservation() -> None:
    unknown = new_reservation_id("p1")
    assert decide(configured(), Release(unknown)) == UnknownReservation(unknown)


def test_lowering_capacity_below_reserved_is_allowed_and_offers_nothing() -> None:
    state = configured(10)
    first = reserve(8)
    accept(state, first)
    accept(state, ConfigurePool(5, "north"))
    assert (state.capacity, state.reserved, state.remaining) == (5, 8, 0)
    assert isinstance(decide(state, reserve(1, "r2")), NotEnoughCapacity)
    accept(state, Release(first.reservation_id))
    assert state.remaining == 5


def test_a_copy_of_the_state_keeps_its_values_while_the_state_moves_on() -> None:
    # What a snapshot relies on: it copies the state, then encodes the copy while writes go on.
    state = configured(10)
    command = reserve(4)
    accept(state, command)
    kept = state.copy()
    accept(state, Release(command.reservation_id))
    accept(state, reserve(2, request_id="r2"))
    assert kept.reserved == 4 and kept.reservations[command.reservation_id].status is ReservationStatus.ACTIVE
    assert len(kept.reservations) == 1 and "r2" not in kept.reservation_by_request
    assert state.reserved == 2 and state.reservations[command.reservation_id].status is ReservationStatus.RELEASED
