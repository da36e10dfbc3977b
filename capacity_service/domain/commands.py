"""Commands a capacity pool decides on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from capacity_service.domain.values import pickled_by_fields

if TYPE_CHECKING:
    from capacity_service.domain.pool import PoolState


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class ConfigurePool:
    """Create the pool or change it. Lowering capacity below what is reserved is allowed, unless
    ``refuse_below_reserved`` (a schedule's changes: ``LowersBelowReserved`` then, nothing changed)."""

    capacity: int
    zone: str
    slot_start: datetime | None = None
    slot_end: datetime | None = None
    # None: as the pool has it (the defaults for a new pool: ``domain/waitlist.py``).
    max_hold_seconds: int | None = None
    waitlist_limit: int | None = None
    refuse_below_reserved: bool = False


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Reserve:
    """Take ``quantity`` units. ``request_id`` makes it idempotent; ``reservation_id`` is minted by the
    caller (``new_reservation_id``) so that deciding stays deterministic. With ``hold_seconds`` the units
    are held until the pool's clock passes that many seconds from the decision, unless confirmed."""

    quantity: int
    request_id: str
    reservation_id: str
    hold_seconds: int | None = None


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Release:
    reservation_id: str


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Confirm:
    """Turn a hold into an active reservation (it then never expires). Idempotent."""

    reservation_id: str


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class ExpireHolds:
    """Expire these holds if they are still held and due: the pool's own timer sends it (an empty tuple
    only wakes the pool, which expires whatever is due before deciding anything)."""

    reservation_ids: tuple[str, ...] = ()


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class ExtendHold:
    """Make a hold end ``hold_seconds`` from now (up to the pool's ``max_hold_seconds``), if that is later
    than it ends already: a hold is only ever lengthened."""

    reservation_id: str
    hold_seconds: int


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class JoinWaitlist:
    """Wait for ``quantity`` units, offered as a hold of ``hold_seconds`` when they come free.
    ``request_id`` makes it idempotent; ``entry_id`` and the offer's ``reservation_id`` are minted by the
    caller so that deciding stays deterministic."""

    entry_id: str
    request_id: str
    quantity: int
    hold_seconds: int
    reservation_id: str


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class LeaveWaitlist:
    """Stop waiting. Idempotent; an entry offered its hold already is answered as it is (the hold is
    released as any reservation is)."""

    entry_id: str


@dataclass(frozen=True, slots=True)
class RetirePool:
    """Stop selling the pool's capacity for good (its slot is over, or it was made by mistake). Idempotent."""


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class PausePool:
    """Stop the pool's writes until ``ResumePool`` (an operator's kill switch). Idempotent."""

    reason: str


@dataclass(frozen=True, slots=True)
class ResumePool:
    """Take writes again. Idempotent."""


@dataclass(frozen=True, slots=True)
class ResetPool:
    """Set the pool back to ``state``, its state after event ``to_seq_nr`` (the host reads it from the
    journal). An operator's repair: history stays, and this is recorded as one more event."""

    to_seq_nr: int
    state: PoolState


PoolCommand = (
    ConfigurePool
    | Reserve
    | Release
    | Confirm
    | ExpireHolds
    | RetirePool
    | PausePool
    | ResumePool
    | ResetPool
    | ExtendHold
    | JoinWaitlist
    | LeaveWaitlist
)
