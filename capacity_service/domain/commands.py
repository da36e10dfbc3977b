"""Commands a capacity pool decides on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from capacity_service.domain.values import pickled_by_fields


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
    caller (``new_reservation_id``) so that deciding stays deterministic."""

    quantity: int
    request_id: str
    reservation_id: str


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Release:
    reservation_id: str


PoolCommand = ConfigurePool | Reserve | Release
