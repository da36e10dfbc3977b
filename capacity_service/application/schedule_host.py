"""Hosts the schedules of one process beside its pools and orders (decision 0010): a runner per schedule (the
machinery pools and orders run on), and the schedule's driver, which configures the pools of the template
being applied, batch by batch, and records each batch in the schedule's stream.

A schedule that is applying is driven after every durable write and as soon as it is started, so an apply
cut off by a crash goes on from its last recorded batch on the schedule's next host (the watchdog starts it:
a schedule is never dormant). Each pool is configured by its own writer (``ConfigurePool``): a batch done
twice configures nothing twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from datetime import UTC, datetime
from typing import Any, Protocol, cast

from capacity_service.adapters.journal import FIRST_EPOCH, Journal, JournalError
from capacity_service.application import tracing
from capacity_service.application.group_commit import EpochClaims, fail
from capacity_service.application.hosting import SharedByRunners
from capacity_service.application.operations import error_of
from capacity_service.application.pool_writer import CommandOutcome
from capacity_service.application.schedule_writer import ScheduleOutcome, ScheduleWriter
from capacity_service.application.single_writer import BatchResult
from capacity_service.application.stream_runner import RunnerState, StreamRunner
from capacity_service.domain import ConfigurePool, PoolIsRetired
from capacity_service.domain.ids import schedule_of_stream, schedule_stream_id
from capacity_service.domain.schedule import (
    MAX_LISTED,
    ApplySchedule,
    BatchTally,
    FinishApply,
    PlannedPool,
    RecordBatch,
    Refusal,
    ScheduleCommand,
    ScheduleState,
    ScheduleStatus,
    ScheduleView,
    Template,
    UnknownSchedule,
    expand,
    left_out,
    view_of_schedule,
)
from capacity_service.errors import CapacityError, Unavailable

log = logging.getLogger(__name__)

_Runner = StreamRunner[ScheduleWriter, ScheduleView]

# Pools configured in one batch, and recorded in one event of the schedule: on SQLite one group commit.
SCHEDULE_BATCH = 500
# Batches under way at once: the next one's pools are configured while one is finished and recorded, so that
# the journal is never idle waiting for the slowest pool of a batch (on Cassandra, each pool is a Paxos round).
_BATCHES_UNDER_WAY = 2
# After a step that could not be done (a pool's host or the journal failing), the next waits this long at
# first, then twice as long each time, up to the longest.
_RETRY_S = 0.2
_LONGEST_RETRY_S = 2.0


class PoolConfigurer(Protocol):
    """Where the driver's configure commands go: many pools' at once, each answered on its own (a rejection
    in its outcome, or a ``CapacityError`` value when it could not be decided now)."""

    async def configure_many(
        self, commands: list[tuple[str, ConfigurePool]], deadline: float
    ) -> list[CommandOutcome | CapacityError]: ...


@dataclasses.dataclass
class _Plan:
    """A generation's pools, expanded once per host (an apply of 100,000 pools is a few hundred ms of it), and
    its batches under way, by the index of their first pool: each configured, with the ms it took, or None
    when a newer put replaced the generation."""

    generation: int
    pools: list[PlannedPool]
    under_way: dict[int, asyncio.Task[tuple[list[CommandOutcome], int] | None]] = dataclasses.field(
        default_factory=dict
    )

    def stop(self) -> None:
        for task in self.under_way.values():
            task.cancel()
        self.under_way.clear()


class ScheduleHost:
    def __init__(
        self,
        journal: Journal,
        shared: SharedByRunners,
        pools: PoolConfigurer,
        call_timeout_s: float,
        batch_size: int = SCHEDULE_BATCH,
    ) -> None:
        self._journal = journal
        self._pools = pools
        self._call_timeout_s = call_timeout_s
        self._batch_size = batch_size
        self._shared = dataclasses.replace(shared, after_durable=self._after_durable, handed_back=self._handed_back)
        self._claims = EpochClaims(journal)
        self._runners: dict[str, _Runner] = {}
        self._starting: dict[str, asyncio.Future[_Runner]] = {}
        self._driving: dict[str, asyncio.Task[None]] = {}
        self._waiting_on: dict[str, str] = {}  # why a schedule's apply waits, while it does

    @property
    def schedule_ids(self) -> list[str]:
        return list(self._runners)

    async def execute(
        self, schedule_id: str, command: ScheduleCommand, deadline: float | None = None
    ) -> ScheduleOutcome:
        runner = await self._runner(schedule_id, creates=isinstance(command, ApplySchedule))
        if runner is None:
            return ScheduleOutcome(UnknownSchedule(schedule_id), view_of_schedule(ScheduleState(schedule_id), 0))
        outcome: ScheduleOutcome = await self._submit(runner, command, deadline)
        return outcome

    async def execute_many(self, commands: list[tuple[str, Any, float | None, str | None]]) -> list[Any]:
        """``execute`` of several schedules' commands (by stream id), each answered on its own (a
        ``CapacityError`` as a value)."""

        async def one(stream_id: str, command: ScheduleCommand, deadline: float | None, request_id: str | None) -> Any:
            token = tracing.current.set(request_id)
            try:
                return await self.execute(schedule_of_stream(stream_id), command, deadline)
            except CapacityError as exc:
                return exc
            finally:
                tracing.current.reset(token)

        return list(await asyncio.gather(*(one(*command) for command in commands)))

    async def view(self, schedule_id: str) -> ScheduleView:
        runner = await self._runner(schedule_id)
        if runner is None:
            return view_of_schedule(ScheduleState(schedule_id), 0)
        await runner.quiet()
        self._drive(runner)  # an apply under way goes on (a no-op while it is driven)
        writer = runner.writer
        return view_of_schedule(writer.state, writer.seq_nr, self._waiting_on.get(schedule_id))

    async def ensure_started_many(self, schedule_ids: list[str]) -> list[int | CapacityError]:
        """Start the schedules that are not running (the watchdog's ping), each answered on its own."""

        async def one(schedule_id: str) -> int | CapacityError:
            try:
                runner = await self._runner(schedule_id)
            except CapacityError as exc:
                return exc
            return 0 if runner is None else runner.writer.seq_nr

        return list(await asyncio.gather(*(one(s) for s in schedule_ids)))

    def _submit(self, runner: _Runner, command: ScheduleCommand, deadline: float | None) -> asyncio.Future[Any]:
        if runner.state is RunnerState.HANDED_BACK:  # never, as schedules are never dormant; for safety
            return asyncio.ensure_future(self.execute(runner.writer.schedule_id, command, deadline))
        return runner.submit(command, deadline, tracing.current.get())

    # ------------------------------------------------------------------ driving

    def _after_durable(self, writer: Any, result: BatchResult[Any, Any]) -> None:
        schedule_writer = cast(ScheduleWriter, writer)
        runner = self._runners.get(schedule_writer.schedule_id)
        if runner is not None:
            self._drive(runner)

    def _drive(self, runner: _Runner) -> None:
        schedule_id = runner.writer.schedule_id
        driving = self._driving.get(schedule_id)
        if (driving is None or driving.done()) and runner.writer.state.status is ScheduleStatus.APPLYING:
            task = asyncio.ensure_future(self._drive_until_applied(runner))
            self._driving[schedule_id] = task
            task.add_done_callback(lambda done: self._driven(schedule_id, done))

    def _driven(self, schedule_id: str, task: asyncio.Task[None]) -> None:
        if self._driving.get(schedule_id) is task:
            del self._driving[schedule_id]

    async def _drive_until_applied(self, runner: _Runner) -> None:
        schedule_id = runner.writer.schedule_id
        plan: _Plan | None = None
        retry_s = _RETRY_S
        try:
            while not self._shared.fence.fenced and runner.state is not RunnerState.HANDED_BACK:
                try:
                    await runner.quiet()
                except CapacityError as exc:  # the journal cannot be read now: the apply waits, never stops
                    retry_s = await self._wait(schedule_id, f"the schedule cannot be read: {exc}", retry_s)
                    continue
                state = runner.writer.state
                if state.status is not ScheduleStatus.APPLYING or state.template is None:
                    self._waiting_on.pop(schedule_id, None)
                    return
                if plan is None or plan.generation != state.generation:
                    if plan is not None:
                        plan.stop()
                    plan = _Plan(state.generation, await asyncio.to_thread(expand, state.template))
                try:
                    command = await self._step(runner, state, plan)
                except Exception:  # a bug in a step must not stop the apply for good: the next try does it again
                    log.exception("schedule %s: a step of its apply failed", schedule_id)
                    command = None
                if command is None:  # the generation moved on, or the step must be tried again
                    continue
                try:
                    outcome: ScheduleOutcome = await self._submit(runner, command, None)
                except CapacityError as exc:  # the journal failed: the step is done again (idempotent)
                    why = f"recording the apply's progress failed: {exc}"
                    retry_s = await self._wait(schedule_id, why, retry_s)
                    continue
                if not outcome.events and runner.writer.state.generation == plan.generation:
                    # Not recorded, yet not replaced by a newer put: never loop hot on a step it refuses.
                    log.error("schedule %s: its apply's step %s was not recorded", schedule_id, type(command).__name__)
                    retry_s = await self._wait(schedule_id, "its apply's progress could not be recorded", retry_s)
                    continue
                self._waiting_on.pop(schedule_id, None)
                retry_s = _RETRY_S
        finally:
            if plan is not None:
                plan.stop()

    async def _step(self, runner: _Runner, state: ScheduleState, plan: _Plan) -> ScheduleCommand | None:
        """The next batch's pools configured, as the command that records them (the batch after it is under
        way meanwhile); or the apply's end."""
        template = state.template
        assert template is not None
        if state.done >= len(plan.pools):
            left = await asyncio.to_thread(left_out, state.previous_template, plan.pools)
            return FinishApply(plan.generation, len(left), tuple(left[:MAX_LISTED]), datetime.now(UTC))
        for first in [first for first in plan.under_way if first < state.done]:  # recorded already
            plan.under_way.pop(first).cancel()
        for k in range(_BATCHES_UNDER_WAY):
            first = state.done + k * self._batch_size
            if first < len(plan.pools) and first not in plan.under_way:
                batch = plan.pools[first : first + self._batch_size]
                task = asyncio.ensure_future(self._configure(runner, template, plan.generation, batch))
                task.add_done_callback(_consume)
                plan.under_way[first] = task
        configured = await plan.under_way.pop(state.done)
        if configured is None:
            return None
        answers, elapsed_ms = configured
        batch = plan.pools[state.done : state.done + self._batch_size]
        return RecordBatch(plan.generation, _tally(state.done, batch, answers, elapsed_ms, len(state.refusals)))

    async def _configure(
        self, runner: _Runner, template: Template, generation: int, batch: list[PlannedPool]
    ) -> tuple[list[CommandOutcome], int] | None:
        """Each pool of ``batch`` configured as ``template`` says, by its own writer, and the ms that took;
        those that could not be decided (their host or the journal failing) are sent again until they are.
        None: a newer put replaced ``generation`` meanwhile (its pools are configured by the newer apply)."""
        schedule_id = runner.writer.schedule_id
        began = time.perf_counter()
        decided: dict[int, CommandOutcome] = {}
        pending = list(range(len(batch)))
        retry_s = _RETRY_S
        while pending:
            commands = [(batch[i].pool_id, batch[i].command(template)) for i in pending]
            answers = await self._pools.configure_many(commands, time.time() + self._call_timeout_s)
            failed: list[tuple[int, CapacityError]] = []
            for i, answer in zip(pending, answers, strict=True):
                if isinstance(answer, CapacityError):
                    failed.append((i, answer))
                else:
                    decided[i] = answer
            pending = [i for i, _ in failed]
            if not pending:
                break
            if runner.writer.state.generation != generation or self._shared.fence.fenced:
                return None
            first_pool, first_error = batch[failed[0][0]].pool_id, failed[0][1]
            why = f"{len(pending)} pools not configured yet (pool {first_pool!r}: {first_error})"
            retry_s = await self._wait(schedule_id, why, retry_s)
        return [decided[i] for i in range(len(batch))], round((time.perf_counter() - began) * 1000)

    async def _wait(self, schedule_id: str, why: str, retry_s: float) -> float:
        """Says why the apply waits (in the schedule's view, and the log), waits; the next wait's length."""
        if self._waiting_on.get(schedule_id) != why:
            log.warning("schedule %s: waiting: %s", schedule_id, why)
        self._waiting_on[schedule_id] = why
        await asyncio.sleep(retry_s)
        return min(retry_s * 2, _LONGEST_RETRY_S)

    def _handed_back(self, runner: StreamRunner[Any, Any]) -> None:
        schedule_id = cast(ScheduleWriter, runner.writer).schedule_id
        if self._runners.get(schedule_id) is runner:
            del self._runners[schedule_id]

    # ------------------------------------------------------------------ starting schedules

    async def _runner(self, schedule_id: str, creates: bool = False) -> _Runner | None:
        """The running schedule, started (claiming its stream, recovering) if needed; None: it has no events
        and ``creates`` is false (nothing is claimed or written for it)."""
        if self._shared.fence.fenced:
            raise self._shared.fence.error()
        runner = self._runners.get(schedule_id)
        if runner is not None:
            return runner
        if schedule_id not in self._starting:
            if creates:  # as ``PoolHost._started_as_new``: the first append creates the stream
                writer = ScheduleWriter(schedule_id, self._journal)
                writer.start_new()
                runner = StreamRunner(writer, self._shared)
                self._runners[schedule_id] = runner
                return runner
            if not await self._has_events(schedule_id):
                return self._runners.get(schedule_id)
            if (runner := self._runners.get(schedule_id)) is not None:
                return runner
            if schedule_id not in self._starting:
                self._starting[schedule_id] = asyncio.get_running_loop().create_future()
                self._shared.spawn(self._start(schedule_id))
        return await asyncio.shield(self._starting[schedule_id])

    async def _has_events(self, schedule_id: str) -> bool:
        try:
            return await asyncio.to_thread(self._journal.highest_seq_nr, schedule_stream_id(schedule_id)) > 0
        except JournalError as exc:
            raise Unavailable(f"journal unavailable: {exc}") from exc

    async def _start(self, schedule_id: str) -> None:
        starting = self._starting[schedule_id]
        writer = ScheduleWriter(schedule_id, self._journal)
        try:
            [epoch] = await self._claims.claim_many([writer.stream_id])
            if epoch == FIRST_EPOCH:  # a new schedule: nothing to read
                writer.start(epoch, recover=False)
            else:
                await asyncio.to_thread(writer.start, epoch, True)
        except JournalError as exc:
            del self._starting[schedule_id]
            fail(starting, Unavailable(f"cannot recover schedule {schedule_id!r}: {exc}"))
            return
        except Exception as exc:
            log.exception("schedule %s cannot be recovered", schedule_id)
            del self._starting[schedule_id]
            fail(starting, Unavailable(f"schedule {schedule_id!r} cannot be recovered: {type(exc).__name__}"))
            return
        runner: _Runner = StreamRunner(writer, self._shared)
        self._runners[schedule_id] = runner
        del self._starting[schedule_id]
        starting.set_result(runner)
        self._drive(runner)


def _consume(task: asyncio.Task[Any]) -> None:
    """A batch's task that nobody awaits any more (its generation was replaced): its error is not news."""
    if not task.cancelled():
        task.exception()


def _tally(
    first: int, batch: list[PlannedPool], answers: list[CommandOutcome], elapsed_ms: int, listed: int
) -> BatchTally:
    """What each pool's answer says it became: created (its stream's first events), updated, unchanged,
    retired (left as it is), or refused (the first ``MAX_LISTED - listed`` of them named, with why)."""
    created = updated = unchanged = retired = refused = 0
    refusals: list[Refusal] = []
    for pool, answer in zip(batch, answers, strict=True):
        if isinstance(answer.rejection, PoolIsRetired):
            retired += 1
        elif answer.rejection is not None:
            refused += 1
            if listed + len(refusals) < MAX_LISTED:
                error = error_of(answer.rejection)
                refusals.append(Refusal(pool.pool_id, error.code, str(error)))
        elif not answer.events:
            unchanged += 1
        elif answer.view.version == len(answer.events):
            created += 1
        else:
            updated += 1
    return BatchTally(
        first, len(batch), created, updated, unchanged, refused, tuple(refusals), elapsed_ms, retired=retired
    )
