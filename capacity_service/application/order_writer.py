"""The single writer of one order's stream: recover, decide, persist, apply. The order's counterpart of
``PoolWriter``, run by the same runner (``stream_runner``); an order is a handful of events, so it is
recovered from them alone, with no snapshots."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from capacity_service.adapters.codec import OrderCodec
from capacity_service.adapters.journal import Journal, NewEvent
from capacity_service.application.single_writer import BatchResult, PreparedBatch, StreamWriter
from capacity_service.domain import PersistedEvent
from capacity_service.domain.ids import order_stream_id
from capacity_service.domain.order import (
    OrderCommand,
    OrderEvent,
    OrderRejection,
    OrderState,
    OrderStatus,
    OrderView,
    PlaceOrder,
    WakeOrder,
    apply,
    decide,
    view_of_order,
)
from capacity_service.domain.values import pickled_by_fields


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class OrderOutcome:
    """The answer to one order command: a rejection, or the order's view after it."""

    rejection: OrderRejection | None
    view: OrderView


class OrderWriter(StreamWriter[OrderState]):
    def __init__(
        self,
        order_id: str,
        journal: Journal,
        codec: OrderCodec | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__(journal, order_stream_id(order_id), OrderState(order_id), f"order {order_id}")
        self.order_id = order_id
        self._codec = codec or OrderCodec()
        self._clock = clock or (lambda: datetime.now(UTC))

    def _new_state(self) -> OrderState:
        return OrderState(self.order_id)

    @property
    def dormant(self) -> bool:
        return self._state.dormant

    def view(self) -> OrderView:
        return view_of_order(self._state, self._seq_nr)

    def start(self, epoch: int, recover: bool = True) -> None:
        """Take over the stream with ``epoch`` (claimed for this writer), then read it (unless it was just
        claimed for the first time, when it has no events)."""
        self._claimed(epoch)
        if recover:
            self.reload()

    def reload(self) -> None:
        self._hold.claim_if_needed()
        state, seq_nr = OrderState(self.order_id), 0
        for stored in self._journal.read(self._stream_id):
            event: OrderEvent = self._codec.decode_event(stored.event_type, stored.schema_version, stored.payload)
            apply(state, event)
            seq_nr = stored.seq_nr
        self._state, self._seq_nr = state, seq_nr

    def prepare(self, commands: Sequence[OrderCommand]) -> PreparedBatch[OrderOutcome, PersistedEvent]:
        """Decide each command against the state the ones before it left and apply the events tentatively;
        ``append`` is what must become durable before the outcomes are given."""
        self._ready_to_decide()
        now = self._clock()
        outcomes: list[OrderOutcome] = []
        persisted: list[PersistedEvent] = []
        pending: list[NewEvent] = []
        for command in commands:
            decision = decide(self._state, command, now)
            if not isinstance(decision, list):
                outcomes.append(OrderOutcome(decision, self.view()))
                continue
            for event in decision:
                apply(self._state, event)
                encoded = self._codec.encode_event(event)
                pending.append(NewEvent(encoded.event_type, encoded.schema_version, encoded.payload))
                persisted.append(PersistedEvent.of_order(self._stream_id, self._seq_nr + len(pending), event, now))
            outcomes.append(OrderOutcome(None, view_of_order(self._state, self._seq_nr + len(pending))))
        append = self._hold.append_request(self._seq_nr, pending, dormant=self.dormant)
        return PreparedBatch(BatchResult(outcomes, persisted), append)

    def repeats_known_request(self, command: Any) -> bool:
        """A placing the order knows already (the same id and digest): answering it decides nothing new."""
        return isinstance(command, PlaceOrder) and self._state.exists and command.digest == self._state.digest

    def next_expiry(self) -> datetime | None:
        """When a held order's holds expire (its timer undoes it then)."""
        return self._state.expires_at if self._state.status is OrderStatus.HELD else None

    def timer_command(self) -> WakeOrder:
        return WakeOrder()

    def take_snapshot_if_due(self) -> None:
        return None

    def store_snapshot(self, captured: Any) -> bool:
        return False
