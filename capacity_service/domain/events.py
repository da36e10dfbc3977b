"""Domain events of a capacity pool. Each names its type and the schema version it is written in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from capacity_service.domain.values import pickled_by_fields


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


PoolEvent = PoolConfigured | CapacityReserved | CapacityReleased
