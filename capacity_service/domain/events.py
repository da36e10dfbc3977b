"""Domain events of a capacity pool. Each names its type and the schema version it is written in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar

from capacity_service.domain.values import pickled_by_fields
from capacity_service.domain.waitlist import DEFAULT_MAX_HOLD_SECONDS, DEFAULT_WAITLIST_LIMIT

if TYPE_CHECKING:  # the pool's state is made of its events: only the type is needed here
    from capacity_service.domain.pool import PoolState


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class PoolConfigured:
    """The pool was created, or its settings changed: capacity, zone, slot, and since version 3 how long a
    hold may be extended to (``max_hold_seconds``) and how many may wait (``waitlist_limit``)."""

    TYPE: ClassVar[str] = "PoolConfigured"
    VERSION: ClassVar[int] = 3

    capacity: int
    zone: str
    slot_start: datetime | None
    slot_end: datetime | None
    max_hold_seconds: int = DEFAULT_MAX_HOLD_SECONDS
    waitlist_limit: int = DEFAULT_WAITLIST_LIMIT


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
    VERSION: ClassVar[int] = 2  # v2: the state as snapshot v4 writes it (v1: as v3)

    to_seq_nr: int
    state: PoolState


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class HoldExtended:
    """A hold now ends at ``expires_at`` (later than before)."""

    TYPE: ClassVar[str] = "HoldExtended"
    VERSION: ClassVar[int] = 1

    reservation_id: str
    expires_at: datetime


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class WaitlistJoined:
    """An entry joined the end of the pool's waitlist."""

    TYPE: ClassVar[str] = "WaitlistJoined"
    VERSION: ClassVar[int] = 1

    entry_id: str
    request_id: str
    quantity: int
    hold_seconds: int
    reservation_id: str


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class WaitlistOffered:
    """A waiting entry was offered units that came free: they are held for it (``reservation_id``, until
    ``expires_at`` unless confirmed), exactly as ``CapacityHeld`` holds them. ``request_id`` is the one the
    entry joined with."""

    TYPE: ClassVar[str] = "WaitlistOffered"
    VERSION: ClassVar[int] = 1

    entry_id: str
    request_id: str
    reservation_id: str
    quantity: int
    expires_at: datetime


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class WaitlistLeft:
    """A waiting entry left the waitlist (``request_id``: the one it joined with)."""

    TYPE: ClassVar[str] = "WaitlistLeft"
    VERSION: ClassVar[int] = 1

    entry_id: str
    request_id: str


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
    | HoldExtended
    | WaitlistJoined
    | WaitlistOffered
    | WaitlistLeft
)
