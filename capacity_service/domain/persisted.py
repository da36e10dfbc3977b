"""A journal event as its stream publishes it once durable: where it sits in the stream, and, for a pool's
event, the pool's state right after it (the warehouse keeps every state)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from capacity_service.domain.events import PoolEvent
from capacity_service.domain.order import OrderEvent
from capacity_service.domain.values import pickled_by_fields


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class PersistedEvent:
    """One journal event with the pool's state right after it (the warehouse keeps every state). An order's
    event (``pool_id`` is then the order's stream id) has no pool state: 0, "" and None (``of_order``)."""

    pool_id: str
    seq_nr: int
    event: PoolEvent | OrderEvent
    capacity: int
    reserved: int
    zone: str
    slot_start: datetime | None
    slot_end: datetime | None
    occurred_at: datetime

    @staticmethod
    def of_order(stream_id: str, seq_nr: int, event: OrderEvent, occurred_at: datetime) -> PersistedEvent:
        return PersistedEvent(stream_id, seq_nr, event, 0, 0, "", None, None, occurred_at)
