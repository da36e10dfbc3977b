"""What a webhook is sent: journal events mapped to webhook events, stream by stream, in order.

Each stream (a pool's, an order's) is folded forward from its first event, as the warehouse's catch-up
folds a pool's totals, so that events derived from the state (a pool selling out, coming back on sale, an
order confirmed or cancelled) are computed while the stream is replayed in order, never from a guess. The
fold's state is small (a pool's totals; an order's lines) and is saved with the webhook's cursor, so a
restarted delivery goes on from the cursor without replaying the stream again.

| webhook event | from the stored event |
|---|---|
| `pool.sold_out` | any event after which a pool on sale has nothing left (a reserve, a hold, less capacity, an offer) |
| `pool.back_on_sale` | any event after which a pool with nothing left has some again (release, expiry, more capacity) |
| `hold.expired` | `HoldExpired`: one per hold |
| `waitlist.offered` | `WaitlistOffered`: a waiting entry turned into a hold |
| `order.confirmed` | `OrderConfirmed`, or `OrderLinesTaken` of an order placed without a hold (confirmed at once) |
| `order.cancelled` | `OrderUndone` of an order whose lines had all been taken (failed orders took nothing: no event) |

A retired pool neither sells out nor comes back on sale. Each webhook event's id, ``<stream>/<seq_nr>/<n>``,
is the same whenever it is delivered again: receivers deduplicate by it (delivery is at least once).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from capacity_service.adapters.codec import Codec, OrderCodec
from capacity_service.adapters.journal import StoredEvent
from capacity_service.domain import (
    CapacityHeld,
    CapacityReleased,
    CapacityReserved,
    HoldsExpired,
    PoolConfigured,
    PoolReset,
    PoolWasRetired,
)
from capacity_service.domain.ids import is_order_stream, is_schedule_stream, order_of_stream
from capacity_service.domain.order import (
    OrderConfirmed,
    OrderLinesTaken,
    OrderPlaced,
    OrderUndoing,
    OrderUndone,
)

log = logging.getLogger(__name__)

POOL_SOLD_OUT = "pool.sold_out"
POOL_BACK_ON_SALE = "pool.back_on_sale"
HOLD_EXPIRED = "hold.expired"
WAITLIST_OFFERED = "waitlist.offered"
ORDER_CONFIRMED = "order.confirmed"
ORDER_CANCELLED = "order.cancelled"
EVENT_TYPES: tuple[str, ...] = (
    POOL_SOLD_OUT,
    POOL_BACK_ON_SALE,
    HOLD_EXPIRED,
    WAITLIST_OFFERED,
    ORDER_CONFIRMED,
    ORDER_CANCELLED,
)

# The stored type of a waiting entry turned into a hold (the waitlist's own event, mapped by its stored name:
# its payload carries pool_id, the entry, request_id, reservation_id, quantity and expires_at).
WAITLIST_OFFERED_TYPE = "WaitlistOffered"


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    event_id: str  # "<stream_id>/<seq_nr>/<n>": stable across deliveries
    event_type: str
    stream_id: str
    seq_nr: int
    occurred_at: datetime
    data: dict[str, Any]

    def body(self) -> bytes:
        """The JSON body POSTed to the receiver (compact, keys sorted: the bytes that are signed)."""
        document = {
            "id": self.event_id,
            "type": self.event_type,
            "occurred_at": self.occurred_at.isoformat(),
            "data": self.data,
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":"), default=str).encode()


@dataclass(slots=True)
class PoolFold:
    exists: bool = False
    capacity: int = 0
    reserved: int = 0
    retired: bool = False
    zone: str = ""
    slot_start: str | None = None
    slot_end: str | None = None

    @property
    def remaining(self) -> int:
        return max(0, self.capacity - self.reserved)


@dataclass(slots=True)
class OrderFold:
    hold: bool = False
    was_taken: bool = False
    lines: list[list[Any]] = field(default_factory=list)  # [quantity, [[pool_id, reservation_id], ...]]
    taken: list[int] = field(default_factory=list)  # the attempt that served each line
    undo_reason: str | None = None


Fold = PoolFold | OrderFold


def new_fold(stream_id: str) -> Fold:
    return OrderFold() if is_order_stream(stream_id) else PoolFold()


def encode_fold(fold: Fold) -> bytes:
    fields = {name: getattr(fold, name) for name in fold.__slots__}
    return json.dumps(fields, separators=(",", ":")).encode()


def decode_fold(stream_id: str, state: bytes) -> Fold:
    fold = new_fold(stream_id)
    for name, value in json.loads(state).items():
        if name in fold.__slots__:
            setattr(fold, name, value)
    return fold


class EventMapper:
    """Folds one stored event into a stream's state and returns the webhook events it makes (every type;
    the delivery keeps those a webhook asked for)."""

    def __init__(self) -> None:
        self._codec = Codec()
        self._order_codec = OrderCodec()

    def map(self, stream_id: str, fold: Fold, stored: StoredEvent) -> list[WebhookEvent]:
        if is_schedule_stream(stream_id):  # an operator's configuration: its pools' own events say what changed
            return []
        if isinstance(fold, OrderFold):
            return self._order(stream_id, fold, stored)
        return self._pool(stream_id, fold, stored)

    # ------------------------------------------------------------------ pools

    def _pool(self, pool_id: str, fold: PoolFold, stored: StoredEvent) -> list[WebhookEvent]:
        made: list[tuple[str, dict[str, Any]]] = []
        on_sale_before = fold.exists and not fold.retired
        remaining_before = fold.remaining
        if stored.event_type == WAITLIST_OFFERED_TYPE:
            offer = json.loads(stored.payload)
            fold.reserved += int(offer.get("quantity", 0))  # the offer is a hold: it takes its units
            made.append((WAITLIST_OFFERED, {"pool_id": pool_id, **offer}))
        else:
            try:
                event = self._codec.decode_event(stored.event_type, stored.schema_version, stored.payload)
            except Exception:
                if stored.event_type in _KNOWN_POOL_TYPES:
                    raise  # a corrupt event of a known type: the stream waits (last_error says why)
                # A type this mapping does not know (a newer version's, that takes no capacity): nothing to send.
                log.debug("webhooks: %s/%d: %s carries nothing to send", pool_id, stored.seq_nr, stored.event_type)
                return []
            if isinstance(event, PoolConfigured):
                fold.exists, fold.capacity, fold.zone = True, event.capacity, event.zone
                fold.slot_start = _iso(event.slot_start)
                fold.slot_end = _iso(event.slot_end)
            elif isinstance(event, PoolReset):
                fold.capacity, fold.reserved, fold.zone = event.state.capacity, event.state.reserved, event.state.zone
                fold.slot_start, fold.slot_end = _iso(event.state.slot_start), _iso(event.state.slot_end)
            elif isinstance(event, CapacityReserved | CapacityHeld):
                fold.reserved += event.quantity
            elif isinstance(event, CapacityReleased):
                fold.reserved -= event.quantity
            elif isinstance(event, HoldsExpired):
                fold.reserved -= sum(event.quantities)
                for reservation_id, quantity in zip(event.reservation_ids, event.quantities, strict=True):
                    made.append(
                        (HOLD_EXPIRED, {"pool_id": pool_id, "reservation_id": reservation_id, "quantity": quantity})
                    )
            elif isinstance(event, PoolWasRetired):
                fold.retired = True
        if on_sale_before and not fold.retired:
            if remaining_before > 0 and fold.remaining == 0:
                made.append((POOL_SOLD_OUT, self._pool_data(pool_id, fold)))
            elif remaining_before == 0 and fold.remaining > 0:
                made.append((POOL_BACK_ON_SALE, self._pool_data(pool_id, fold)))
        return _numbered(pool_id, stored, made)

    @staticmethod
    def _pool_data(pool_id: str, fold: PoolFold) -> dict[str, Any]:
        return {
            "pool_id": pool_id,
            "zone": fold.zone,
            "slot_start": fold.slot_start,
            "slot_end": fold.slot_end,
            "capacity": fold.capacity,
            "remaining": fold.remaining,
        }

    # ------------------------------------------------------------------ orders

    def _order(self, stream_id: str, fold: OrderFold, stored: StoredEvent) -> list[WebhookEvent]:
        try:
            event = self._order_codec.decode_event(stored.event_type, stored.schema_version, stored.payload)
        except Exception:
            if stored.event_type in _KNOWN_ORDER_TYPES:
                raise
            return []
        made: list[tuple[str, dict[str, Any]]] = []
        if isinstance(event, OrderPlaced):
            fold.hold = event.hold_seconds is not None
            fold.lines = [
                [line.quantity, [[a.pool_id, a.reservation_id] for a in line.attempts]] for line in event.lines
            ]
        elif isinstance(event, OrderLinesTaken):
            fold.taken, fold.was_taken = list(event.attempts), True
            if not fold.hold:
                made.append((ORDER_CONFIRMED, self._order_data(stream_id, fold)))
        elif isinstance(event, OrderConfirmed):
            made.append((ORDER_CONFIRMED, self._order_data(stream_id, fold)))
        elif isinstance(event, OrderUndoing):
            fold.undo_reason = event.reason
        elif isinstance(event, OrderUndone) and fold.was_taken:
            made.append((ORDER_CANCELLED, {**self._order_data(stream_id, fold), "reason": fold.undo_reason}))
        return _numbered(stream_id, stored, made)

    @staticmethod
    def _order_data(stream_id: str, fold: OrderFold) -> dict[str, Any]:
        lines = []
        for (quantity, attempts), served in zip(fold.lines, fold.taken, strict=False):
            pool_id, reservation_id = attempts[served]
            lines.append({"pool_id": pool_id, "reservation_id": reservation_id, "quantity": quantity})
        return {"order_id": order_of_stream(stream_id), "lines": lines}


_POOL_CLASSES = (
    CapacityHeld,
    CapacityReleased,
    CapacityReserved,
    HoldsExpired,
    PoolConfigured,
    PoolReset,
    PoolWasRetired,
)
_KNOWN_POOL_TYPES = frozenset(cls.TYPE for cls in _POOL_CLASSES)
_KNOWN_ORDER_TYPES = frozenset(
    cls.TYPE for cls in (OrderPlaced, OrderLinesTaken, OrderConfirmed, OrderUndoing, OrderUndone)
)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _numbered(stream_id: str, stored: StoredEvent, made: list[tuple[str, dict[str, Any]]]) -> list[WebhookEvent]:
    return [
        WebhookEvent(f"{stream_id}/{stored.seq_nr}/{n}", kind, stream_id, stored.seq_nr, stored.recorded_at, data)
        for n, (kind, data) in enumerate(made)
    ]
