"""A journal event as the pool publishes it once durable: where it sits in the stream, and the pool's state
right after it (the warehouse keeps every state)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from capacity_service.domain.events import PoolEvent
from capacity_service.domain.values import pickled_by_fields


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class PersistedEvent:
    """One journal event with the pool's state right after it (the warehouse keeps every state)."""

    pool_id: str
    seq_nr: int
    event: PoolEvent
    capacity: int
    reserved: int
    zone: str
    slot_start: datetime | None
    slot_end: datetime | None
    occurred_at: datetime
