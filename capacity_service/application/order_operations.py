"""The service layer's operations on orders (decision 0009), part of ``CapacityOperations``: checks what
the caller sends, names every line's attempts, sends the order's commands with their deadline, and turns
the order's answers into the public models and errors.

A bad order is refused before anything exists for it: no lines, too many, a pool named twice, a pool that
does not exist, is retired or paused, a window with no pool that fits: each a 4xx, and no stream is
created.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol, TypeVar

from capacity_service.application.checks import check_choice
from capacity_service.application.choosing import candidates
from capacity_service.application.order_writer import OrderOutcome
from capacity_service.domain import MAX_HOLD_SECONDS, InvalidId, PoolView, new_reservation_id
from capacity_service.domain.choice import SlotChoice
from capacity_service.domain.ids import check_order_id
from capacity_service.domain.order import (
    MAX_CANDIDATES,
    MAX_ORDER_LINES,
    Attempt,
    CancelOrder,
    ConfirmOrder,
    OrderCommand,
    OrderIdReused,
    OrderLine,
    OrderNotHeld,
    OrderStatus,
    OrderView,
    PlaceOrder,
    UnknownOrder,
)
from capacity_service.errors import (
    CapacityError,
    HoldExpired,
    InvalidRequest,
    OrderFailed,
    OrderIdConflict,
    OrderLineRefused,
    OrderNotFound,
)
from capacity_service.errors import OrderNotHeld as OrderNotHeldError
from capacity_service.models import Order, OrderLineRequest

if TYPE_CHECKING:
    from capacity_service.application.operations import AvailabilitySource

T = TypeVar("T")
# The request ids of orders' reserves begin so; a caller's own reserve may not use one (422), or the pool
# would answer an order's attempt with the caller's reservation.
ORDER_REQUEST_PREFIX = "order:"


class OrderGateway(Protocol):
    """Where orders' commands go, and the pools' views an order is checked against; errors as values."""

    async def execute_order(
        self, order_id: str, command: OrderCommand, deadline: float | None = None
    ) -> OrderOutcome | CapacityError: ...

    async def order_view(self, order_id: str) -> OrderView | CapacityError: ...

    async def view(self, pool_id: str) -> PoolView | CapacityError: ...


@dataclass(frozen=True, slots=True)
class PlannedLine:
    """A line as the order will try it: ``quantity`` units of ``pool_id``, or of the first of
    ``candidates`` (pool ids, best first: what choosing a slot found) that can serve them."""

    quantity: int
    pool_id: str | None = None
    candidates: tuple[str, ...] | None = None
    # What the caller asked for instead of a pool (the choice's terms): part of the order's identity.
    chosen_from: str | None = None


class OrderOperations:
    _gateway: OrderGateway
    _availability: AvailabilitySource
    _call_timeout_s: float

    async def place_order(
        self, lines: Sequence[OrderLineRequest], order_id: str | None = None, hold_seconds: int | None = None
    ) -> Order:
        """Take every line, or none: the order held (with ``hold_seconds``: confirm it before its holds
        expire) or confirmed at once. ``OrderLineRefused`` names the first line that could not be served;
        the same ``order_id`` again answers the same order and takes nothing twice."""
        for index, line in enumerate(lines):
            _check_line_request(index, line)
        # Only a chosen line asks for anything (its candidates, side by side with the others'): a named
        # line is planned as it is, without a task of its own.
        chosen = iter(await asyncio.gather(*(self._chosen(line.choose) for line in lines if line.choose is not None)))
        planned = [
            PlannedLine(line.quantity, pool_id=line.pool_id) if line.choose is None else next(chosen) for line in lines
        ]
        return await self.place_planned_order(planned, order_id, hold_seconds)

    async def _chosen(self, choice: SlotChoice) -> PlannedLine:
        """A chosen line with its candidates, best first (``choosing``)."""
        found = await candidates(self._availability, choice, MAX_CANDIDATES)
        asked = json.dumps([choice.zone, str(choice.slot_from), str(choice.slot_to), choice.prefer])
        return PlannedLine(choice.quantity, candidates=tuple(found), chosen_from=asked)

    async def place_planned_order(
        self, lines: Sequence[PlannedLine], order_id: str | None = None, hold_seconds: int | None = None
    ) -> Order:
        """``place_order`` of lines whose candidates are known (a chosen line's: ``choosing``)."""
        order_id = _checked_order_id(order_id or new_order_id())
        _check_lines(lines, hold_seconds)
        digest = _digest(lines, hold_seconds)
        refused = await self._first_unservable_line(order_id, lines)
        if refused is not None:
            existing = await self._gateway.order_view(order_id)  # a repeat of an order placed before stands
            if isinstance(existing, OrderView) and existing.exists:
                return await self._settled(order_id, self._place(order_id, lines, hold_seconds, digest))
            raise refused
        return await self._settled(order_id, self._place(order_id, lines, hold_seconds, digest))

    async def get_order(self, order_id: str) -> Order:
        view = raised(await self._gateway.order_view(_checked_order_id(order_id, OrderNotFound)))
        if not view.exists:
            raise OrderNotFound(order_id)
        return Order.of(view)

    async def confirm_order(self, order_id: str) -> Order:
        """Confirm every line's hold. ``HoldExpired`` when one expired first (the order is then cancelled,
        nothing of it stays taken); ``OrderNotHeld`` for an order that failed or was cancelled."""
        order_id = _checked_order_id(order_id, OrderNotFound)
        order = await self._settled(order_id, self._send(order_id, ConfirmOrder()))
        if order.status == "held":  # it was still being placed: now it is held, and confirmable
            order = await self._settled(order_id, self._send(order_id, ConfirmOrder()))
        if order.status == "cancelled" and order.reason == "hold_expired":
            raise HoldExpired(order_id)
        return order

    async def cancel_order(self, order_id: str) -> Order:
        """Give every line back (cancelling twice is fine)."""
        order_id = _checked_order_id(order_id, OrderNotFound)
        return await self._settled(order_id, self._send(order_id, CancelOrder()), failed_is_an_answer=True)

    # ------------------------------------------------------------------ the parts

    def _place(
        self, order_id: str, lines: Sequence[PlannedLine], hold_seconds: int | None, digest: str
    ) -> Awaitable[OrderOutcome | CapacityError]:
        named = tuple(
            OrderLine(
                line.quantity,
                tuple(
                    Attempt(pool_id, new_reservation_id(pool_id), _attempt_request_id(order_id, index, number))
                    for number, pool_id in enumerate(_pools_of(line))
                ),
                chosen=line.pool_id is None,
            )
            for index, line in enumerate(lines)
        )
        deadline = datetime.now(UTC) + timedelta(seconds=self._call_timeout_s)
        return self._send(order_id, PlaceOrder(named, hold_seconds, deadline, digest), deadline.timestamp())

    def _send(
        self, order_id: str, command: OrderCommand, deadline: float | None = None
    ) -> Awaitable[OrderOutcome | CapacityError]:
        deadline = deadline if deadline is not None else time.time() + self._call_timeout_s
        return self._gateway.execute_order(order_id, command, deadline)

    async def _settled(
        self,
        order_id: str,
        answer: Awaitable[OrderOutcome | CapacityError],
        failed_is_an_answer: bool = False,
    ) -> Order:
        outcome = raised(await answer)
        rejection = outcome.rejection
        if isinstance(rejection, UnknownOrder):
            raise OrderNotFound(order_id)
        if isinstance(rejection, OrderIdReused):
            raise OrderIdConflict(order_id)
        if isinstance(rejection, OrderNotHeld):
            raise OrderNotHeldError(order_id, rejection.status.value)
        view = outcome.view
        if view.status is OrderStatus.FAILED and not failed_is_an_answer:
            raise _failure(view)
        return Order.of(view)

    def _selling_view(self, pool_id: str) -> PoolView | None:
        """The pool's view if the local copy of the cache lists it as selling (no question needed)."""
        known = self._availability.known_view(pool_id)
        return known if known is not None and known.exists and not known.retired and not known.paused else None

    async def _first_unservable_line(self, order_id: str, lines: Sequence[PlannedLine]) -> OrderLineRefused | None:
        """The first named line whose pool cannot serve anything now (it does not exist, is retired or
        paused), or chosen line with no candidate: refused before the order exists."""
        named = [(index, line.pool_id) for index, line in enumerate(lines) if line.pool_id is not None]
        # A pool the local copy of the cache lists as selling needs no question; the others are asked.
        selling = [self._selling_view(pool_id) for _, pool_id in named]
        asked = iter(
            await asyncio.gather(
                *(
                    self._gateway.view(pool_id)
                    for (_, pool_id), view in zip(named, selling, strict=True)
                    if view is None
                )
            )
        )
        views = [view if view is not None else next(asked) for view in selling]
        found: dict[int, OrderLineRefused] = {}
        for (index, pool_id), view in zip(named, views, strict=True):
            view = raised(view)
            error = (
                "pool_not_found"
                if not view.exists
                else "pool_retired"
                if view.retired
                else "paused"
                if view.paused
                else None
            )
            if error is not None:
                found[index] = OrderLineRefused(order_id, index, pool_id, error)
        for index, line in enumerate(lines):
            if line.pool_id is None and not line.candidates:
                found[index] = OrderLineRefused(order_id, index, None, "no_capacity_in_window")
        return found[min(found)] if found else None


def new_order_id(clock: Callable[[], float] = time.time) -> str:
    """The id of an order placed without one: ``auto-`` and 32 hex digits, the time in milliseconds (12)
    then 80 random bits. Ids made later sort after earlier ones, so a new order's rows go at the end of
    the journal's indexes (its stream, its head, its dormancy mark) rather than anywhere in them: random
    ids cost SQLite a page rewritten per order and index, more the bigger the journal."""
    return f"auto-{int(clock() * 1000):012x}{secrets.token_hex(10)}"


def _pools_of(line: PlannedLine) -> tuple[str, ...]:
    if line.pool_id is not None:
        return (line.pool_id,)
    return tuple(line.candidates or ())[:MAX_CANDIDATES]


def _check_line_request(index: int, line: OrderLineRequest) -> None:
    """A line names a pool or a choice, not both; a choice must be one that can be made."""
    if line.choose is None:
        if line.pool_id is None:
            raise InvalidRequest(f"line {index}: give either pool_id or choose")
    elif line.pool_id is not None:
        raise InvalidRequest(f"line {index}: give either pool_id or choose, not both")
    else:
        check_choice(line.choose)


def _check_lines(lines: Sequence[PlannedLine], hold_seconds: int | None) -> None:
    if not 1 <= len(lines) <= MAX_ORDER_LINES:
        raise InvalidRequest(f"an order has 1..{MAX_ORDER_LINES} lines, not {len(lines)}")
    if hold_seconds is not None and not 1 <= hold_seconds <= MAX_HOLD_SECONDS:
        raise InvalidRequest(f"hold_seconds must be 1..{MAX_HOLD_SECONDS}")
    named = [line.pool_id for line in lines if line.pool_id is not None]
    if len(set(named)) < len(named):
        raise InvalidRequest("a pool is named by more than one line: give it one line with the sum")
    for index, line in enumerate(lines):
        if line.quantity < 1:
            raise InvalidRequest(f"line {index}: quantity must be >= 1")
        if (line.pool_id is None) == (line.candidates is None):
            raise InvalidRequest(f"line {index}: give either pool_id or choose")


def _digest(lines: Sequence[PlannedLine], hold_seconds: int | None) -> str:
    """What the order asks for, whatever pools a choice finds each time: a repeat must ask the same."""
    asked = [[line.quantity, line.pool_id, line.chosen_from] for line in lines]
    return hashlib.sha256(json.dumps([asked, hold_seconds]).encode()).hexdigest()[:32]


def _attempt_request_id(order_id: str, line: int, attempt: int) -> str:
    short = order_id if len(order_id) <= 96 else hashlib.sha256(order_id.encode()).hexdigest()[:32]
    return f"{ORDER_REQUEST_PREFIX}{short}:{line}:{attempt}"


def _checked_order_id(order_id: str, error: type[CapacityError] = InvalidRequest) -> str:
    try:
        return check_order_id(order_id)
    except InvalidId as exc:
        raise (OrderNotFound(order_id) if error is OrderNotFound else InvalidRequest(str(exc))) from exc


def _failure(view: OrderView) -> CapacityError:
    if view.undo_reason == "refused" and view.failed_line is not None:
        line = view.lines[view.failed_line]
        return OrderLineRefused(view.order_id, view.failed_line, line.pool_id, view.failed_error or "refused")
    return OrderFailed(view.order_id, view.undo_reason or "failed")


def raised(answer: T | CapacityError) -> T:
    """The answer, or its error (an answer that came back as a value) raised."""
    if isinstance(answer, CapacityError):
        raise answer
    return answer
