"""The single writer of one order's stream: recover, decide, persist, apply. The order's counterpart of
``PoolWriter``, run by the same runner (``stream_runner``); an order is a handful of events, so it is
recovered from them alone, with no snapshots."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from capacity_service.adapters.codec import OrderCodec
from capacity_service.adapters.journal import (
    Journal,
    JournalError,
    NewEvent,
    WriterFenced,
)
from capacity_service.application.single_writer import BatchResult, PreparedBatch, StreamHold, landed_after_all
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

log = logging.getLogger(__name__)


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class OrderOutcome:
    """The answer to one order command: a rejection, or the order's view after it."""

    rejection: OrderRejection | None
    view: OrderView


class OrderWriter:
    def __init__(
        self,
        order_id: str,
        journal: Journal,
        codec: OrderCodec | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.order_id = order_id
        self._stream_id = order_stream_id(order_id)
        self._journal = journal
        self._codec = codec or OrderCodec()
        self._clock = clock or (lambda: datetime.now(UTC))
        self._state = OrderState(order_id)
        self._seq_nr = 0
        self._hold = StreamHold(journal, self._stream_id)
        self.fenced = False

    @property
    def stream_id(self) -> str:
        return self._stream_id

    @property
    def state(self) -> OrderState:
        return self._state

    @property
    def seq_nr(self) -> int:
        return self._seq_nr

    @property
    def needs_reload(self) -> bool:
        return self._seq_nr < 0

    @property
    def dormancy_recorded(self) -> bool:
        return self._hold.dormancy_recorded

    @property
    def dormant(self) -> bool:
        return self._state.dormant

    def view(self) -> OrderView:
        return view_of_order(self._state, self._seq_nr)

    @property
    def epoch(self) -> int:
        return self._hold.epoch

    @property
    def believed_new(self) -> bool:
        """Started as a new order without a claim: its first append creates the stream (``StreamHold``)."""
        return self._hold.creating

    def start(self, epoch: int, recover: bool = True) -> None:
        """Take over the stream with ``epoch`` (claimed for this writer), then read it (unless it was just
        claimed for the first time, when it has no events)."""
        self._hold.claimed(epoch)
        self.fenced = False
        if recover:
            self.reload()

    def start_new(self) -> None:
        """Start as an order that does not exist yet, claiming nothing (``PoolWriter.start_new``)."""
        self._hold.believe_new()
        self.fenced = False
        self._state, self._seq_nr = OrderState(self.order_id), 0

    def take_over(self) -> None:
        """The order exists after all: claim its stream and read it (or, if the journal fails, read it before
        the next decision)."""
        self._hold.take_over()
        self._discard_tentative_state()

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
        if self.fenced:
            raise WriterFenced(self._stream_id, self.epoch, None)
        if self.needs_reload:
            self.reload()
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

    def append_landed(self, prepared: PreparedBatch[Any, Any], new_seq_nr: int) -> None:
        self._hold.landed(prepared.append)
        self._seq_nr = new_seq_nr

    def append_failed(self, prepared: PreparedBatch[Any, Any], error: JournalError) -> None:
        """As ``PoolWriter.append_failed``: throw the tentative state away; return normally only if the
        stream shows the append landed after all."""
        if isinstance(error, WriterFenced):
            self.fenced = True
        created = self._hold.failed()  # then the reload claims first, and only a later claim's read counts
        self._discard_tentative_state()
        if not created and landed_after_all(prepared, error, self._seq_nr):
            log.info("order %s: append reported a failure but is in the journal", self.order_id)
            return
        raise error

    def _discard_tentative_state(self) -> None:
        try:
            self.reload()
        except JournalError:  # read before the next decision
            self._state, self._seq_nr = OrderState(self.order_id), -1

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
