"""Values that cross processes (channels, Ray calls) come back equal, however they are pickled."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from ray import cloudpickle

from capacity_service.application.pool_writer import CommandOutcome
from capacity_service.domain import (
    CapacityReleased,
    CapacityReserved,
    ConfigurePool,
    InvalidCommand,
    NotEnoughCapacity,
    PersistedEvent,
    PoolConfigured,
    PoolView,
    Release,
    RequestIdReused,
    Reservation,
    ReservationStatus,
    Reserve,
    UnknownPool,
    UnknownReservation,
)
from capacity_service.domain.values import pickled_by_fields
from capacity_service.runtime._ray import plain

# Ray's vendored cloudpickle is unannotated; this is its dumps, typed.
cloudpickle_dumps: Callable[[object], bytes] = cloudpickle.dumps

NOW = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)
VIEW = PoolView("north:0800", True, "north", NOW, None, 20, 3, 17, 9)
RESERVED = CapacityReserved("north:0800~r1", 2, "req-1")
VALUES: list[object] = [
    ConfigurePool(20, "north", NOW, None),
    Reserve(2, "req-1", "north:0800~r1"),
    Release("north:0800~r1"),
    PoolConfigured(20, "north", NOW, None),
    RESERVED,
    CapacityReleased("north:0800~r1", 2),
    UnknownPool("north:0800"),
    NotEnoughCapacity("north:0800", 5, 3),
    UnknownReservation("north:0800~r1"),
    RequestIdReused("req-1", "north:0800~r1"),
    InvalidCommand("quantity must be positive"),
    VIEW,
    CommandOutcome(None, VIEW, Reservation("north:0800~r1", 2, "req-1", ReservationStatus.ACTIVE), (RESERVED,)),
    CommandOutcome(NotEnoughCapacity("north:0800", 5, 3), VIEW, None, ()),
    PersistedEvent("north:0800", 9, RESERVED, 20, 3, "north", NOW, None, NOW),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_a_value_survives_both_picklers(value: object) -> None:
    for dumps in (pickle.dumps, cloudpickle.dumps):
        copy = pickle.loads(dumps(value))
        assert copy == value and type(copy) is type(value)


def test_a_plain_value_reaches_every_receiver_as_itself() -> None:
    batch = [VIEW, VALUES[-1]]
    sent = plain(batch)
    # Ray pickles an argument once per call: two receivers of one ``plain`` value get it whole.
    assert [pickle.loads(cloudpickle_dumps(sent)) for _ in range(2)] == [batch, batch]


def test_only_a_class_set_wholly_by_init_is_pickled_by_fields() -> None:
    @dataclass(frozen=True)
    class Counted:
        name: str
        count: int = field(init=False, default=0)

    with pytest.raises(TypeError, match="__init__"):
        pickled_by_fields(Counted)
