"""Domain events of a capacity pool. Each names its type and the schema version it is written in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar

from capacity_service.domain.values import pickled_by_fields

if TYPE_CHECKING:  # the pool's state is made of its events: only the type is needed here
    from capacity_service.domain.pool import PoolState


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class PoolConfigured:
    """The pool was created, or its capacity / zone / slot changed."""

    TYPE: ClassVar[str] = "PoolConfigured"
    VERSION: ClassVar[int] = 2

    capacity: int
    zone: str
    slot_start: datetime | None
    slot_end: datetime | None


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class CapacityReserved:
    TYPE: ClassVar[str] = "CapacityReserved"
    VERSION: ClassVar[int] = 1

    reservation_id: str
    quantity: int
    request_id: str


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class CapacityReleased:
    TYPE: ClassVar[str] = "CapacityReleased"
    VERSION: ClassVar[int] = 1

    reservation_id: str
    quantity: int


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class CapacityHeld:
    """Units taken until ``expires_at`` unless confirmed: they count as taken like a reservation's."""

    TYPE: ClassVar[str] = "CapacityHeld"
    VERSION: ClassVar[int] = 1

    reservation_id: str
    quantity: int
    request_id: str
    expires_at: datetime


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class HoldConfirmed:
    TYPE: ClassVar[str] = "HoldConfirmed"
    VERSION: ClassVar[int] = 1

    reservation_id: str


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class HoldsExpired:
    """Holds neither confirmed nor released in time: their units are back on sale. One event carries all
    the holds the pool expired at once (version 1 carried one), so that a storm of expiries costs the pool's
    writer one event per batch, not one per hold. ``quantities[i]`` is ``reservation_ids[i]``'s."""

    TYPE: ClassVar[str] = "HoldExpired"  # the name journals store it under, older than the class's
    VERSION: ClassVar[int] = 2

    reservation_ids: tuple[str, ...]
    quantities: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class PoolWasRetired:
    """The pool takes no new reservations from now on; what it holds still ends as usual."""

    TYPE: ClassVar[str] = "PoolRetired"  # the name journals store it under, older than the class's
    VERSION: ClassVar[int] = 1


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class PoolPaused:
    """An operator stopped the pool's writes (reserves, releases, confirms, changes) until resumed; reads
    and hold expiry go on."""

    TYPE: ClassVar[str] = "PoolPaused"
    VERSION: ClassVar[int] = 1

    reason: str


@dataclass(frozen=True, slots=True)
class PoolResumed:
    TYPE: ClassVar[str] = "PoolResumed"
    VERSION: ClassVar[int] = 1


@dataclass(frozen=True, slots=True)
class PoolReset:
    """An operator set the pool back to its state after event ``to_seq_nr``: ``state`` is that state (its
    settings and reservations; whether it is paused or retired stays as it was). History is kept: the events
    after ``to_seq_nr`` stay in the journal, and this one follows them."""

    TYPE: ClassVar[str] = "PoolReset"
    VERSION: ClassVar[int] = 1

    to_seq_nr: int
    state: PoolState


PoolEvent = (
    PoolConfigured
    | CapacityReserved
    | CapacityReleased
    | CapacityHeld
    | HoldConfirmed
    | HoldsExpired
    | PoolWasRetired
    | PoolPaused
    | PoolResumed
    | PoolReset
)
