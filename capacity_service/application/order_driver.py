"""Carries an order out on its pools (decision 0009): takes its lines, confirms them, or gives them back,
as its status asks, and says which command records the result in the order's stream.

Every command it sends a pool is idempotent: a reserve carries the attempt's request id and reservation id
fixed in ``OrderPlaced``, and confirms and releases name the reservation. So a step cut off by a crash is
simply done again by the order's next writer. A reserve carries the order's deadline, and a pool never
decides a reserve after its deadline: once that has passed (with a margin for clocks and answers in
flight), a reservation id a pool does not know will never be taken, and undoing it is done.

The caller of an order is answered as soon as every line is taken, before ``OrderLinesTaken`` is
written (decision 0009): the facts the answer rests on, ``OrderPlaced`` and each pool's reservation, are
durable already. So a placing cut off after the deadline is never undone on a guess: its lines are looked
up in their pools once no pool can decide them any more, and the order is taken if all are there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from capacity_service.application.operations import error_of
from capacity_service.application.pool_writer import CommandOutcome
from capacity_service.domain import (
    Confirm,
    PoolCommand,
    Release,
    Reservation,
    ReservationStatus,
    Reserve,
    UnknownPool,
    UnknownReservation,
)
from capacity_service.domain.order import (
    BeginUndo,
    OrderCommand,
    OrderLine,
    OrderState,
    OrderStatus,
    RecordConfirmed,
    RecordLinesTaken,
    RecordUndone,
)
from capacity_service.errors import CapacityError, PoolNotFound

NO_CAPACITY_IN_WINDOW = "no_capacity_in_window"


class CommandSender(Protocol):
    """Where a driver's commands to pools go, and where it looks up a reservation; errors come back as values."""

    async def execute(
        self, pool_id: str, command: PoolCommand, deadline: float | None = None
    ) -> CommandOutcome | CapacityError: ...

    async def reservation(self, pool_id: str, reservation_id: str) -> Reservation | CapacityError | None: ...


@dataclass
class DriverMemory:
    """What a driver learned about an order's attempts while it runs (lost with its process, which only
    makes the next writer ask the pools again): (line, attempt) -> taken or definitely not taken."""

    known: dict[tuple[int, int], bool] = field(default_factory=dict)


@dataclass(frozen=True)
class _Taken:
    attempt: int
    expires_at: datetime | None


@dataclass(frozen=True)
class _Refused:
    error: str


class _NotYet:
    """The pools could not be asked now (unavailable, overloaded, outcome unknown): try again later."""


_NOT_YET = _NotYet()


class OrderDriver:
    """``step(state, memory)`` does on the pools what the order's status asks and returns the command that
    records it; None: nothing could be settled now (the host tries again a little later), or nothing to do.
    ``late_s``: the margin after an order's deadline beyond which no pool decides one of its reserves."""

    def __init__(
        self,
        gateway: CommandSender,
        late_s: float,
        retry_s: float = 0.05,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._gateway = gateway
        self._late_s = late_s
        self._retry_s = retry_s
        self._clock = clock

    async def step(self, state: OrderState, memory: DriverMemory) -> OrderCommand | None:
        if state.status is OrderStatus.PLACING:
            return await self._take_lines(state, memory)
        if state.status is OrderStatus.CONFIRMING:
            return await self._confirm_lines(state)
        if state.status is OrderStatus.UNDOING:
            return await self._give_lines_back(state, memory)
        return None

    # ------------------------------------------------------------------ placing

    async def _take_lines(self, state: OrderState, memory: DriverMemory) -> OrderCommand | None:
        assert state.deadline is not None
        deadline = state.deadline.timestamp()
        if self._clock() > deadline:
            return await self._settle_late_placing(state, memory)
        results = await asyncio.gather(
            *(self._take(index, line, state.hold_seconds, deadline, memory) for index, line in enumerate(state.lines))
        )
        refused = [(index, r) for index, r in enumerate(results) if isinstance(r, _Refused)]
        if refused:
            index, first = refused[0]
            return BeginUndo("refused", index, first.error)
        taken = [r for r in results if isinstance(r, _Taken)]
        if len(taken) < len(results):  # some outcome stayed unknown until the deadline: looked up after it
            return None
        return _lines_taken(taken)

    async def _settle_late_placing(self, state: OrderState, memory: DriverMemory) -> OrderCommand | None:
        """A placing whose deadline passed before it was recorded (its host died, or a pool did not answer):
        once no pool can decide its reserves any more, each line's attempts are looked up in their pools.
        All lines there: the order is taken (its caller may have been told so); else it is undone."""
        assert state.deadline is not None
        settled_after = state.deadline.timestamp() + self._late_s
        if (wait := settled_after - self._clock()) > 0:
            await asyncio.sleep(min(wait, 1.0))
            return None
        found = await asyncio.gather(*(self._look_up(index, line, memory) for index, line in enumerate(state.lines)))
        if any(f is _NOT_YET for f in found):
            return None  # a pool could not be asked: asked again later, never undone on a guess
        taken = [f for f in found if isinstance(f, _Taken)]
        return _lines_taken(taken) if len(taken) == len(found) else BeginUndo("deadline")

    async def _look_up(self, index: int, line: OrderLine, memory: DriverMemory) -> _Taken | _NotYet | None:
        """The line's attempt its pool took, None if none was taken (and none will be: the deadline is past)."""
        for number, attempt in enumerate(line.attempts):
            if memory.known.get((index, number)) is False:
                continue
            found = await self._gateway.reservation(attempt.pool_id, attempt.reservation_id)
            if isinstance(found, CapacityError) and not isinstance(found, PoolNotFound):
                return _NOT_YET
            if isinstance(found, Reservation) and found.status is not ReservationStatus.RELEASED:
                memory.known[(index, number)] = True
                return _Taken(number, found.expires_at)
            memory.known[(index, number)] = False
        return None

    async def _take(
        self, index: int, line: OrderLine, hold_seconds: int | None, deadline: float, memory: DriverMemory
    ) -> _Taken | _Refused | _NotYet:
        error = "insufficient_capacity"
        for number, attempt in enumerate(line.attempts):
            if memory.known.get((index, number)) is False:
                continue
            command = Reserve(line.quantity, attempt.request_id, attempt.reservation_id, hold_seconds)
            while True:
                answer = await self._gateway.execute(attempt.pool_id, command, deadline)
                if isinstance(answer, CommandOutcome):
                    break
                if self._clock() + self._retry_s > deadline:  # unknown or not taken: the undo settles which
                    return _NOT_YET
                await asyncio.sleep(self._retry_s)
            if answer.rejection is None:
                memory.known[(index, number)] = True
                for later in range(number + 1, len(line.attempts)):  # never sent
                    memory.known[(index, later)] = False
                reservation = answer.reservation
                return _Taken(number, None if reservation is None else reservation.expires_at)
            memory.known[(index, number)] = False
            error = error_of(answer.rejection).code
        return _Refused(NO_CAPACITY_IN_WINDOW if line.chosen else error)

    # ------------------------------------------------------------------ confirming

    async def _confirm_lines(self, state: OrderState) -> OrderCommand | None:
        assert state.taken is not None
        answers = await asyncio.gather(
            *(
                self._gateway.execute(line.attempts[attempt].pool_id, Confirm(line.attempts[attempt].reservation_id))
                for line, attempt in zip(state.lines, state.taken, strict=True)
            )
        )
        for index, answer in enumerate(answers):
            if isinstance(answer, CommandOutcome) and answer.rejection is not None:
                return BeginUndo("hold_expired", index, error_of(answer.rejection).code)
        if any(isinstance(answer, CapacityError) for answer in answers):
            return None  # confirms are idempotent: the next step asks again
        return RecordConfirmed()

    # ------------------------------------------------------------------ undoing

    async def _give_lines_back(self, state: OrderState, memory: DriverMemory) -> OrderCommand | None:
        assert state.deadline is not None
        settled_after = state.deadline.timestamp() + self._late_s
        pending = [
            (index, number, attempt)
            for index, line in enumerate(state.lines)
            for number, attempt in enumerate(line.attempts)
            if memory.known.get((index, number)) is not False
        ]
        answers = await asyncio.gather(
            *(self._gateway.execute(attempt.pool_id, Release(attempt.reservation_id)) for _, _, attempt in pending)
        )
        done = True
        for (index, number, _), answer in zip(pending, answers, strict=True):
            if isinstance(answer, CapacityError):
                done = False
            elif answer.rejection is None or isinstance(answer.rejection, UnknownPool):
                memory.known[(index, number)] = False  # given back, or never there
            elif isinstance(answer.rejection, UnknownReservation) and self._clock() > settled_after:
                memory.known[(index, number)] = False  # never taken, and no pool will take it any more
            else:  # not known yet while a reserve may still be decided, or the pool is paused
                done = False
        if done:
            return RecordUndone()
        wait = settled_after - self._clock()
        if wait > 0:
            await asyncio.sleep(min(wait, 1.0))
        return None


def _lines_taken(taken: list[_Taken]) -> RecordLinesTaken:
    expiries = [t.expires_at for t in taken if t.expires_at is not None]
    return RecordLinesTaken(tuple(t.attempt for t in taken), min(expiries) if expiries else None)
