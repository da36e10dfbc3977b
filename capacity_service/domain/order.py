"""An order: one checkout across several pools, all or nothing (decision 0009).

An order is a stream of its own with a single writer, like a pool. Its events record what it intends
and what became of it; taking, confirming and giving back its lines' units is done on the pools by the
order's driver (``application/order_driver.py``), whose results come back as the order's next commands.
Every line's attempts are named before anything is taken (``OrderPlaced``: pool, reservation id, request
id), so whatever crashes when, the driver can finish or undo the order from its events alone, and every
command it repeats on a pool is idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import ClassVar

from capacity_service.domain.values import pickled_by_fields

# Lines of one order at most, and candidate pools of a chosen line at most.
MAX_ORDER_LINES = 20
MAX_CANDIDATES = 10


class OrderStatus(StrEnum):
    PLACING = "placing"  # its lines are being taken
    HELD = "held"  # every line is held: confirm or cancel it, or its holds expire
    CONFIRMING = "confirming"  # every line's hold is being confirmed
    CONFIRMED = "confirmed"  # every line is active
    UNDOING = "undoing"  # its lines are being given back
    FAILED = "failed"  # undone before it was held or confirmed: nothing of it is taken
    CANCELLED = "cancelled"  # undone after it was held or confirmed


# The statuses an order rests in (its driver has nothing to do); the others are steps under way.
RESTING = frozenset({OrderStatus.HELD, OrderStatus.CONFIRMED, OrderStatus.FAILED, OrderStatus.CANCELLED})
# The statuses an order never leaves by itself: it is then dormant unless it still holds units.
FINAL = frozenset({OrderStatus.FAILED, OrderStatus.CANCELLED})


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Attempt:
    """One way to serve a line: this pool, with this reservation id and request id (both fixed before
    anything is taken, so repeating the attempt never takes twice)."""

    pool_id: str
    reservation_id: str
    request_id: str


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class OrderLine:
    """``quantity`` units from the first of ``attempts`` that can serve them; a line naming its pool has
    one attempt, a chosen line one per candidate pool, best first."""

    quantity: int
    attempts: tuple[Attempt, ...]
    chosen: bool = False


# ------------------------------------------------------------------ commands


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class PlaceOrder:
    """Place the order (idempotent on its id: ``digest`` says what was asked, so that a repeat asking for
    other lines is told apart). ``deadline``: after it no line is taken any more, and the order is undone
    unless every line was taken."""

    lines: tuple[OrderLine, ...]
    hold_seconds: int | None
    deadline: datetime
    digest: str


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class RecordLinesTaken:
    """The driver took every line: ``attempts[i]`` is the index of the attempt that served line ``i``;
    ``expires_at``: when the earliest of their holds expires (None: taken active)."""

    attempts: tuple[int, ...]
    expires_at: datetime | None


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class BeginUndo:
    """Give every line back: ``reason`` is one of ``refused`` (``line`` could not be served: ``error``
    is the error code), ``deadline``, ``cancelled``, ``hold_expired``."""

    reason: str
    line: int | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class RecordUndone:
    """The driver gave every line back (or learned it was never taken)."""


@dataclass(frozen=True, slots=True)
class ConfirmOrder:
    """Confirm every line's hold (idempotent)."""


@dataclass(frozen=True, slots=True)
class RecordConfirmed:
    """The driver confirmed every line's hold."""


@dataclass(frozen=True, slots=True)
class CancelOrder:
    """Give every line back (idempotent): the order is then cancelled (failed if it never was held)."""


@dataclass(frozen=True, slots=True)
class WakeOrder:
    """The order's timer: its holds' expiry has come (``decide`` undoes a held order then)."""


OrderCommand = (
    PlaceOrder | RecordLinesTaken | BeginUndo | RecordUndone | ConfirmOrder | RecordConfirmed | CancelOrder | WakeOrder
)

# ------------------------------------------------------------------ events


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class OrderPlaced:
    TYPE: ClassVar[str] = "OrderPlaced"
    VERSION: ClassVar[int] = 1

    lines: tuple[OrderLine, ...]
    hold_seconds: int | None
    deadline: datetime
    digest: str


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class OrderLinesTaken:
    TYPE: ClassVar[str] = "OrderLinesTaken"
    VERSION: ClassVar[int] = 1

    attempts: tuple[int, ...]
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class OrderConfirming:
    TYPE: ClassVar[str] = "OrderConfirming"
    VERSION: ClassVar[int] = 1


@dataclass(frozen=True, slots=True)
class OrderConfirmed:
    TYPE: ClassVar[str] = "OrderConfirmed"
    VERSION: ClassVar[int] = 1


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class OrderUndoing:
    TYPE: ClassVar[str] = "OrderUndoing"
    VERSION: ClassVar[int] = 1

    reason: str
    line: int | None
    error: str | None


@dataclass(frozen=True, slots=True)
class OrderUndone:
    TYPE: ClassVar[str] = "OrderUndone"
    VERSION: ClassVar[int] = 1


OrderEvent = OrderPlaced | OrderLinesTaken | OrderConfirming | OrderConfirmed | OrderUndoing | OrderUndone

# ------------------------------------------------------------------ rejections


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class UnknownOrder:
    order_id: str


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class OrderIdReused:
    """The order id was placed before with other lines or another hold."""

    order_id: str


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class OrderNotHeld:
    """A confirm of an order that is not held (it failed, or was cancelled)."""

    order_id: str
    status: OrderStatus


OrderRejection = UnknownOrder | OrderIdReused | OrderNotHeld

# ------------------------------------------------------------------ state


@dataclass(slots=True)
class OrderState:
    order_id: str
    status: OrderStatus | None = None  # None: never placed
    lines: tuple[OrderLine, ...] = ()
    hold_seconds: int | None = None
    deadline: datetime | None = None
    digest: str = ""
    taken: tuple[int, ...] | None = None  # the attempt that served each line, once all were taken
    expires_at: datetime | None = None
    undo_reason: str | None = None
    failed_line: int | None = None
    failed_error: str | None = None
    was_taken: bool = False  # every line was taken once (so undoing it cancels rather than fails it)

    @property
    def exists(self) -> bool:
        return self.status is not None

    @property
    def dormant(self) -> bool:
        """Nothing under way and nothing that changes by itself: failed, cancelled, or confirmed (a cancel
        of a confirmed order starts it again)."""
        return self.status in FINAL or self.status is OrderStatus.CONFIRMED


def decide(state: OrderState, command: OrderCommand, now: datetime) -> list[OrderEvent] | OrderRejection:
    """The events ``command`` produces against ``state``, or why it is rejected; an empty list: nothing to
    do (an idempotent repeat, or a driver's report that came too late to matter)."""
    status = state.status
    if isinstance(command, PlaceOrder):
        if status is None:
            return [OrderPlaced(command.lines, command.hold_seconds, command.deadline, command.digest)]
        return [] if command.digest == state.digest else OrderIdReused(state.order_id)
    if status is None:
        return UnknownOrder(state.order_id)
    if isinstance(command, RecordLinesTaken):
        return [OrderLinesTaken(command.attempts, command.expires_at)] if status is OrderStatus.PLACING else []
    if isinstance(command, BeginUndo):
        undoable = status not in FINAL and status is not OrderStatus.UNDOING
        return [OrderUndoing(command.reason, command.line, command.error)] if undoable else []
    if isinstance(command, RecordUndone):
        return [OrderUndone()] if status is OrderStatus.UNDOING else []
    if isinstance(command, ConfirmOrder):
        if status is OrderStatus.HELD:
            return [OrderConfirming()]
        if status in (OrderStatus.PLACING, OrderStatus.CONFIRMING, OrderStatus.CONFIRMED):
            return []  # under way or done: the caller waits for it to rest
        return OrderNotHeld(state.order_id, status)
    if isinstance(command, RecordConfirmed):
        return [OrderConfirmed()] if status is OrderStatus.CONFIRMING else []
    if isinstance(command, CancelOrder):
        return [] if status in FINAL or status is OrderStatus.UNDOING else [OrderUndoing("cancelled", None, None)]
    # WakeOrder: a held order whose holds expired is undone (its units are back on sale already).
    expired = status is OrderStatus.HELD and state.expires_at is not None and state.expires_at <= now
    return [OrderUndoing("hold_expired", None, None)] if expired else []


def apply(state: OrderState, event: OrderEvent) -> OrderState:
    """Evolve ``state`` by one event, in place; returns it for convenience."""
    if isinstance(event, OrderPlaced):
        state.status = OrderStatus.PLACING
        state.lines, state.hold_seconds, state.deadline, state.digest = (
            event.lines,
            event.hold_seconds,
            event.deadline,
            event.digest,
        )
    elif isinstance(event, OrderLinesTaken):
        state.taken, state.expires_at, state.was_taken = event.attempts, event.expires_at, True
        state.status = OrderStatus.HELD if state.hold_seconds is not None else OrderStatus.CONFIRMED
    elif isinstance(event, OrderConfirming):
        state.status = OrderStatus.CONFIRMING
    elif isinstance(event, OrderConfirmed):
        state.status, state.expires_at = OrderStatus.CONFIRMED, None
    elif isinstance(event, OrderUndoing):
        state.status = OrderStatus.UNDOING
        state.undo_reason, state.failed_line, state.failed_error = event.reason, event.line, event.error
    else:
        state.status = OrderStatus.CANCELLED if state.was_taken else OrderStatus.FAILED
    return state


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class OrderLineView:
    pool_id: str | None  # the pool that served it; None while it is not (or no longer) taken
    quantity: int
    reservation_id: str | None


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class OrderView:
    """What callers see of an order; ``version`` is its stream's seq_nr."""

    order_id: str
    exists: bool
    status: OrderStatus | None
    lines: tuple[OrderLineView, ...]
    hold_seconds: int | None
    expires_at: datetime | None
    undo_reason: str | None
    failed_line: int | None
    failed_error: str | None
    version: int


def view_of_order(state: OrderState, version: int) -> OrderView:
    lines = []
    for index, line in enumerate(state.lines):
        served = line.attempts[state.taken[index]] if state.taken is not None and state.was_taken else None
        if served is not None:
            lines.append(OrderLineView(served.pool_id, line.quantity, served.reservation_id))
        else:  # a named line still names its pool
            lines.append(OrderLineView(None if line.chosen else line.attempts[0].pool_id, line.quantity, None))
    return OrderView(
        state.order_id,
        state.exists,
        state.status,
        tuple(lines),
        state.hold_seconds,
        state.expires_at,
        state.undo_reason,
        state.failed_line,
        state.failed_error,
        version,
    )
