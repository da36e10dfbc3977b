"""Hosts the orders of one process beside its pools (decision 0009): a runner per order (the machinery pools
run on), the order's driver, which carries out on the pools what the order's events ask for, and the
callers waiting for an order to come to rest.

An order is driven after every durable write that leaves it with a step under way (placing, confirming,
undoing), and as soon as it is started: so an order whose host died is finished or undone by its next
host, which the watchdog starts (an order that holds units, or has a step under way, is live in the
journal's registry until it is confirmed, fails or is cancelled: then it is dormant).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import time
from datetime import UTC, datetime
from typing import Any, cast

from capacity_service.adapters.journal import FIRST_EPOCH, Journal, JournalError
from capacity_service.application import tracing
from capacity_service.application.group_commit import EpochClaims, fail
from capacity_service.application.hosting import SharedByRunners
from capacity_service.application.metrics import NO_METRICS, HostMetrics
from capacity_service.application.order_driver import DriverMemory, OrderDriver
from capacity_service.application.order_writer import OrderOutcome, OrderWriter
from capacity_service.application.publishing import EventPublisher, NullPublisher
from capacity_service.application.single_writer import BatchResult
from capacity_service.application.stream_runner import RunnerState, StreamRunner
from capacity_service.domain.ids import order_of_stream, order_stream_id
from capacity_service.domain.order import (
    RESTING,
    CancelOrder,
    ConfirmOrder,
    OrderCommand,
    OrderState,
    OrderStatus,
    OrderView,
    PlaceOrder,
    RecordLinesTaken,
    UnknownOrder,
    apply,
    decide,
    view_of_order,
)
from capacity_service.errors import CapacityError, OutcomeUnknown, Unavailable

log = logging.getLogger(__name__)

_Runner = StreamRunner[OrderWriter, OrderView]

# The commands a caller sends; the others come from the order's driver and timer.
_CALLERS_COMMANDS = (PlaceOrder, ConfirmOrder, CancelOrder)
# After a driver step that could not settle anything, the next waits this long.
_DRIVE_RETRY_S = 0.2


class OrderHost:
    def __init__(
        self,
        journal: Journal,
        shared: SharedByRunners,
        driver: OrderDriver,
        answer_grace_s: float,
        metrics: HostMetrics = NO_METRICS,
        events: EventPublisher | None = None,
    ) -> None:
        self._journal = journal
        self._events: EventPublisher = events or NullPublisher()
        self._metrics = metrics
        self._driver = driver
        self._answer_grace_s = answer_grace_s
        self._shared = dataclasses.replace(shared, after_durable=self._after_durable, handed_back=self._handed_back)
        self._claims = EpochClaims(journal)
        self._runners: dict[str, _Runner] = {}
        self._starting: dict[str, asyncio.Future[_Runner]] = {}
        self._driving: dict[str, asyncio.Task[None]] = {}
        self._memories: dict[str, DriverMemory] = {}
        self._resting: dict[str, list[asyncio.Future[OrderView]]] = {}

    @property
    def order_ids(self) -> list[str]:
        return list(self._runners)

    async def execute(self, order_id: str, command: OrderCommand, deadline: float | None = None) -> OrderOutcome:
        """Decide ``command``; a caller's command is answered once the order rests (held, confirmed, failed
        or cancelled), or ``OutcomeUnknown`` when it has not by ``deadline``: repeating the command with the
        same order id then answers it (it takes nothing twice)."""
        runner = await self._runner(order_id, creates=isinstance(command, PlaceOrder))
        if runner is None:
            return OrderOutcome(UnknownOrder(order_id), view_of_order(OrderState(order_id), 0))
        outcome: OrderOutcome = await self._submit(runner, command, deadline)
        if outcome.rejection is not None or not isinstance(command, _CALLERS_COMMANDS):
            return outcome
        view = await self._rested(runner, deadline)
        return OrderOutcome(None, view)

    async def execute_many(self, commands: list[tuple[str, Any, float | None, str | None]]) -> list[Any]:
        """``execute`` of several orders' commands, each answered on its own (a ``CapacityError`` as a value)."""

        async def one(order_id: str, command: OrderCommand, deadline: float | None, request_id: str | None) -> Any:
            token = tracing.current.set(request_id)
            try:
                return await self.execute(order_id, command, deadline)
            except CapacityError as exc:
                return exc
            finally:
                tracing.current.reset(token)

        return list(await asyncio.gather(*(one(order_of_stream(s), c, d, r) for s, c, d, r in commands)))

    async def view(self, order_id: str) -> OrderView:
        runner = await self._runner(order_id)
        if runner is None:
            return view_of_order(OrderState(order_id), 0)
        await runner.quiet()
        self._drive(runner)  # a step under way goes on (a no-op while it is driven, or at rest)
        return runner.writer.view()

    async def ensure_started_many(self, order_ids: list[str]) -> list[int | CapacityError]:
        """Start the orders that are not running (the watchdog's ping), each answered on its own."""

        async def one(order_id: str) -> int | CapacityError:
            try:
                runner = await self._runner(order_id)
            except CapacityError as exc:
                return exc
            return 0 if runner is None else runner.writer.seq_nr

        return list(await asyncio.gather(*(one(o) for o in order_ids)))

    def _submit(self, runner: _Runner, command: OrderCommand, deadline: float | None) -> asyncio.Future[Any]:
        if runner.state is RunnerState.HANDED_BACK:  # a caller held on to it: the order starts anew
            return asyncio.ensure_future(self.execute(runner.writer.order_id, command, deadline))
        return runner.submit(command, deadline, tracing.current.get())

    async def _rested(self, runner: _Runner, deadline: float | None) -> OrderView:
        status = runner.writer.state.status
        if status in RESTING:
            return runner.writer.view()
        waiter: asyncio.Future[OrderView] = asyncio.get_running_loop().create_future()
        self._resting.setdefault(runner.writer.order_id, []).append(waiter)
        self._drive(runner)
        wait = None if deadline is None else max(0.0, deadline + self._answer_grace_s - time.time())
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), wait)
        except TimeoutError:
            raise OutcomeUnknown(
                f"order {runner.writer.order_id!r} is still {status}; repeat with the same order_id"
            ) from None
        finally:
            waiters = self._resting.get(runner.writer.order_id, [])
            if waiter in waiters:
                waiters.remove(waiter)

    # ------------------------------------------------------------------ driving

    def _after_durable(self, writer: Any, result: BatchResult[Any, Any]) -> None:
        order_writer = cast(OrderWriter, writer)
        try:  # to the warehouse, as a pool's events go (else its catch-up reads them from the journal)
            self._events.publish_events(result.persisted)
        except Exception:  # fire-and-forget: publishing never fails a write
            log.exception("order %s: publishing failed", order_writer.order_id)
        status = order_writer.state.status
        runner = self._runners.get(order_writer.order_id)
        if status in RESTING:
            assert status is not None
            self._metrics.order_rested(status.value)
            if order_writer.order_id in self._resting:  # its callers were not answered with the lines taken
                self._answer_resting(order_writer.order_id, order_writer.view())
        elif runner is not None:
            self._drive(runner)

    def _drive(self, runner: _Runner) -> None:
        order_id = runner.writer.order_id
        if order_id not in self._driving and runner.writer.state.status not in RESTING:
            task = asyncio.ensure_future(self._drive_until_resting(runner))
            self._driving[order_id] = task
            task.add_done_callback(lambda _: self._driving.pop(order_id, None))

    async def _drive_until_resting(self, runner: _Runner) -> None:
        order_id = runner.writer.order_id
        memory = self._memories.setdefault(order_id, DriverMemory())
        try:
            while not self._shared.fence.fenced and runner.state is not RunnerState.HANDED_BACK:
                try:
                    await runner.quiet()
                except CapacityError as exc:  # the journal cannot be read now: the order waits, never stops
                    log.warning("order %s: cannot read it to drive it: %s", order_id, exc)
                    await asyncio.sleep(_DRIVE_RETRY_S)
                    continue
                state = runner.writer.state
                if state.status is None or state.status in RESTING:
                    return
                try:
                    command = await self._driver.step(state, memory)
                except Exception:  # a bug in a step must not stop the order for good: the next try asks again
                    log.exception("order %s: a step of its driver failed", order_id)
                    command = None
                if command is None:
                    await asyncio.sleep(_DRIVE_RETRY_S)
                    continue
                if isinstance(command, RecordLinesTaken):
                    self._answer_taken(runner, command)
                try:
                    await self._submit(runner, command, None)
                except CapacityError as exc:  # the journal failed: the step is done again
                    log.warning("order %s: recording a step failed: %s", order_id, exc)
                    await asyncio.sleep(_DRIVE_RETRY_S)
        finally:
            if runner.writer.state.status in RESTING or runner.state is RunnerState.HANDED_BACK:
                self._memories.pop(order_id, None)

    def _answer_taken(self, runner: _Runner, command: RecordLinesTaken) -> None:
        """Every line is taken: the callers waiting for the order hear it now, while ``OrderLinesTaken`` is
        being written. What they are told rests on durable facts only (``OrderPlaced`` and each pool's
        reservation): whoever records it, this writer or the next, records the same (decision 0009)."""
        waiters = self._resting.get(runner.writer.order_id)
        if not waiters:
            return
        state = copy.copy(runner.writer.state)  # ``apply`` replaces fields, never changes what they hold
        decision = decide(state, command, datetime.now(UTC))
        if not isinstance(decision, list) or not decision:
            return
        for event in decision:
            apply(state, event)
        view = view_of_order(state, runner.writer.seq_nr + len(decision))
        if view.status in RESTING:
            self._answer_resting(runner.writer.order_id, view)

    def _answer_resting(self, order_id: str, view: OrderView) -> None:
        """The callers waiting for the order to come to rest: ``view`` is their answer."""
        for waiter in self._resting.pop(order_id, []):
            if not waiter.done():
                waiter.set_result(view)

    def _handed_back(self, runner: StreamRunner[Any, Any]) -> None:
        order_id = cast(OrderWriter, runner.writer).order_id
        if self._runners.get(order_id) is runner:
            del self._runners[order_id]

    # ------------------------------------------------------------------ starting orders

    async def _runner(self, order_id: str, creates: bool = False) -> _Runner | None:
        """The running order, started (claiming its stream, recovering) if needed; None: it has no events
        and ``creates`` is false (nothing is claimed or written for it)."""
        if self._shared.fence.fenced:
            raise self._shared.fence.error()
        runner = self._runners.get(order_id)
        if runner is not None:
            return runner
        if order_id not in self._starting:
            if creates:  # as ``PoolHost._started_as_new``: the first append creates the stream
                writer = OrderWriter(order_id, self._journal)
                writer.start_new()
                runner = StreamRunner(writer, self._shared, keeps_durable_view=False)
                self._runners[order_id] = runner
                return runner
            if not await self._has_events(order_id):
                return self._runners.get(order_id)
            if (runner := self._runners.get(order_id)) is not None:
                return runner
            if order_id not in self._starting:
                self._starting[order_id] = asyncio.get_running_loop().create_future()
                self._shared.spawn(self._start(order_id))
        return await asyncio.shield(self._starting[order_id])

    async def _has_events(self, order_id: str) -> bool:
        try:
            return await asyncio.to_thread(self._journal.highest_seq_nr, order_stream_id(order_id)) > 0
        except JournalError as exc:
            raise Unavailable(f"journal unavailable: {exc}") from exc

    async def _start(self, order_id: str) -> None:
        starting = self._starting[order_id]
        writer = OrderWriter(order_id, self._journal)
        try:
            [epoch] = await self._claims.claim_many([writer.stream_id])
            if epoch == FIRST_EPOCH:  # a new order: nothing to read
                writer.start(epoch, recover=False)
            else:
                await asyncio.to_thread(writer.start, epoch, True)
        except JournalError as exc:
            del self._starting[order_id]
            fail(starting, Unavailable(f"cannot recover order {order_id!r}: {exc}"))
            return
        except Exception as exc:
            log.exception("order %s cannot be recovered", order_id)
            del self._starting[order_id]
            fail(starting, Unavailable(f"order {order_id!r} cannot be recovered: {type(exc).__name__}"))
            return
        runner: _Runner = StreamRunner(writer, self._shared, keeps_durable_view=False)
        self._runners[order_id] = runner
        del self._starting[order_id]
        starting.set_result(runner)
        runner.schedule_expiry()
        runner.hand_back_if_dormant()
        if writer.state.status is not None and writer.state.status is not OrderStatus.HELD:
            self._drive(runner)
