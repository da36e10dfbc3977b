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
    """Create the pool or change it. Lowering capacity below what is reserved is allowed."""

    capacity: int
    zone: str
    slot_start: datetime | None = None
    slot_end: datetime | None = None


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
    ConfigurePool | Reserve | Release | Confirm | ExpireHolds | RetirePool | PausePool | ResumePool | ResetPool
)
