"""Hosts many pools inside one process, without Ray (the Ray actor is a shell): the registry of their
runners (``stream_runner``: a pool's queue, writes, timer and hand-back) and what the runners share.

Shared here: starting pools (claiming their writer epochs together, recovering with a bound on concurrent
recoveries; a pool with no events is started only by the command that creates it), the group commit of
their appends, a circuit breaker that makes a journal outage fail fast, publishing to the read side and the
warehouse (fire and forget), reads of durable state, and the operator's reset and check. A writer that
learns it is fenced (a newer incarnation of its pool exists) makes the whole host stop serving: this
process is a zombie.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, cast

from capacity_service.adapters.codec import Codec
from capacity_service.adapters.journal import FIRST_EPOCH, Journal, JournalError, JournalUnavailable
from capacity_service.application import tracing
from capacity_service.application.circuit_breaker import BreakerState, CircuitBreaker
from capacity_service.application.group_commit import DormantMarks, EpochClaims, GroupCommit, fail
from capacity_service.application.hosting import Fence, SharedByRunners
from capacity_service.application.metrics import NO_METRICS, HostMetrics, HostStats
from capacity_service.application.pool_history import PoolGlance, glance_of
from capacity_service.application.pool_writer import (
    CommandOutcome,
    PoolWriter,
    answer_of_absent_pool,
    view_of_absent_pool,
)
from capacity_service.application.publishing import EventPublisher, NullPublisher, ViewPublisher
from capacity_service.application.recovery import RecoveredPool, differences, recover_pools, replay_pool
from capacity_service.application.repeated_log import RepeatedFailureLog
from capacity_service.application.single_writer import BatchResult
from capacity_service.application.stream_runner import RunnerState, StreamRunner
from capacity_service.domain import (
    ConfigurePool,
    HoldsExpired,
    PersistedEvent,
    PoolCommand,
    PoolPaused,
    PoolResumed,
    PoolState,
    PoolView,
    PoolWasRetired,
    Reservation,
    ReservationStatus,
    ResetPool,
    WaitlistOffered,
    WaitlistPlace,
    place_of,
)
from capacity_service.errors import CapacityError, PoolNotFound, SeqNrOutOfRange, Unavailable
from capacity_service.settings import SnapshotSettings, WriteSideSettings

__all__ = ["AddressedCommand", "PoolHost"]

log = logging.getLogger(__name__)

# Pools recovered together (``recover_pools``): a few queries and one worker-thread call for all of them.
_RECOVERY_BATCH = 500

# Events an operator's command wrote: each gets a log line (naming the request, like every line of a write).
_OPERATORS_EVENTS = (PoolPaused, PoolResumed, PoolWasRetired)

_Runner = StreamRunner[PoolWriter, PoolView]

# A command for a pool, as callers hand them in batches: (pool id, command, deadline or None, the id of the
# request it answers or None).
AddressedCommand = tuple[str, PoolCommand, float | None, str | None]


class PoolHost:
    def __init__(
        self,
        journal: Journal,
        settings: WriteSideSettings | None = None,
        snapshots: SnapshotSettings | None = None,
        views: ViewPublisher | None = None,
        events: EventPublisher | None = None,
        on_fenced: Callable[[], None] | None = None,
        metrics: HostMetrics = NO_METRICS,
    ) -> None:
        self._journal = journal
        self._metrics = metrics
        self._settings = settings or WriteSideSettings()
        self._snapshots = snapshots or SnapshotSettings()
        self._views: ViewPublisher = views or NullPublisher()
        self._events: EventPublisher = events or NullPublisher()
        self._codec = Codec()
        self._runners: dict[str, _Runner] = {}
        self._starting: dict[str, asyncio.Future[_Runner]] = {}
        self._recoveries = asyncio.Semaphore(self._settings.max_concurrent_recoveries)
        self._claims = EpochClaims(journal)
        self.breaker = CircuitBreaker(self._settings.breaker_failure_threshold, self._settings.breaker_reset_s)
        self._fence = Fence(on_fenced)
        self._background: set[asyncio.Task[None]] = set()
        self._failures = RepeatedFailureLog(log)
        self._shared = SharedByRunners(
            journal=journal,
            group_commit=GroupCommit(journal, metrics),
            dormancy=DormantMarks(journal),
            breaker=self.breaker,
            settings=self._settings,
            fence=self._fence,
            failures=self._failures,
            spawn=self._spawn,
            after_durable=self._after_durable,
            handed_back=self._handed_back,
        )

    @property
    def shared(self) -> SharedByRunners:
        """What this host's runners share: a host of another kind of stream in this process shares it too."""
        return self._shared

    @property
    def events(self) -> EventPublisher:
        """Where this host's durable events go (the warehouse): the orders it hosts beside its pools too."""
        return self._events

    @property
    def fenced(self) -> bool:
        return self._fence.fenced

    @property
    def pool_ids(self) -> list[str]:
        return list(self._runners)

    def stats(self) -> HostStats:
        """The host's gauges. Counting pending holds walks every reservation: call it every few seconds."""
        held = ReservationStatus.HELD
        return HostStats(
            pools_hosted=len(self._runners),
            pools_recovering=len(self._starting),
            commands_queued=sum(runner.queued for runner in self._runners.values()),
            holds_pending=sum(
                sum(1 for r in runner.writer.state.reservations.values() if r.status is held)
                for runner in self._runners.values()
            ),
            breaker_open=self.breaker.state is not BreakerState.CLOSED,
        )

    def epoch_of(self, pool_id: str) -> int | None:
        runner = self._runners.get(pool_id)
        return None if runner is None else runner.writer.epoch

    # ------------------------------------------------------------------ commands

    async def execute(self, pool_id: str, command: PoolCommand, deadline: float | None = None) -> CommandOutcome:
        """Decide ``command`` and make it durable. Not decided at all (``Unavailable``: nothing taken) once
        ``deadline`` has passed; ``Overloaded`` when the pool's queue is full; ``OutcomeUnknown`` when the
        journal did not confirm the append."""
        runner = await self._runner(pool_id, creates=isinstance(command, ConfigurePool))
        if runner is None:
            return answer_of_absent_pool(pool_id, command)
        return await self._submit(runner, command, deadline, tracing.current.get())

    async def execute_many(self, commands: Sequence[AddressedCommand]) -> list[CommandOutcome | CapacityError]:
        """Several commands (of any pools) at once, each answered on its own: a ``CapacityError`` is an
        answer here, not raised. A command to a running pool costs no task of its own (as ``execute``
        would): batches from the router carry many."""
        replies = [
            self._submit(runner, command, deadline, request_id)
            if (runner := self._runners.get(pool_id)) is not None and not self.fenced
            else self._execute_traced(pool_id, command, deadline, request_id)  # starts the pool first
            for pool_id, command, deadline, request_id in commands
        ]
        answers = await asyncio.gather(*replies, return_exceptions=True)
        for answer in answers:
            if isinstance(answer, BaseException) and not isinstance(answer, CapacityError):
                raise answer
        return cast(list[CommandOutcome | CapacityError], answers)

    def _execute_traced(
        self, pool_id: str, command: PoolCommand, deadline: float | None, request_id: str | None
    ) -> asyncio.Future[CommandOutcome]:
        token = tracing.current.set(request_id)  # the task made here copies the context, with the id
        try:
            return asyncio.ensure_future(self.execute(pool_id, command, deadline))
        finally:
            tracing.current.reset(token)

    def _submit(
        self, runner: _Runner, command: PoolCommand, deadline: float | None, request_id: str | None
    ) -> asyncio.Future[CommandOutcome]:
        if runner.state is RunnerState.HANDED_BACK:  # a caller held on to it: the pool starts anew
            return self._execute_traced(runner.writer.stream_id, command, deadline, request_id)
        return runner.submit(command, deadline, request_id)

    def _after_durable(self, writer: PoolWriter, result: BatchResult[CommandOutcome, PersistedEvent]) -> None:
        """What follows a write that added events: publish them, count and log them."""
        try:
            self._views.publish_view(writer.view())
            self._events.publish_events(result.persisted)
        except Exception:  # fire-and-forget: publishing never fails a write
            log.exception("pool %s: publishing failed", writer.stream_id)
        expiries = [p.event for p in result.persisted if isinstance(p.event, HoldsExpired)]
        if expiries:
            self._metrics.holds_expired(sum(len(e.reservation_ids) for e in expiries))
        if offers := sum(1 for p in result.persisted if isinstance(p.event, WaitlistOffered)):
            self._metrics.waitlist_offered(offers)
        for operated in (p.event for p in result.persisted if isinstance(p.event, _OPERATORS_EVENTS)):
            log.info("pool %s: %s", writer.stream_id, operated)

    def _handed_back(self, runner: StreamRunner[Any, Any]) -> None:
        if self._runners.get(runner.writer.stream_id) is runner:
            del self._runners[runner.writer.stream_id]
        log.info("pool %s: retired with nothing held or active; no longer hosted", runner.writer.stream_id)

    # ------------------------------------------------------------------ reads (durable state only)

    async def view(self, pool_id: str) -> PoolView:
        if (durable := self.durable_view(pool_id)) is not None:
            return durable
        runner = await self._quiet_runner(pool_id)
        return view_of_absent_pool(pool_id) if runner is None else runner.writer.view()

    def durable_view(self, pool_id: str) -> PoolView | None:
        """The view of a running pool as of its last durable write, without waiting; None when the pool
        is not running here (or must reload first): ``view`` then starts or settles it."""
        runner = self._runners.get(pool_id)
        return None if runner is None or self.fenced else runner.durable_view

    def durable_versions(self, pool_ids: Sequence[str]) -> list[int | None]:
        """Each pool's version (seq_nr) as of its last durable write, without waiting; None for a pool
        whose view only ``view`` can give (not running here, or it must reload first)."""
        return [None if (view := self.durable_view(pool_id)) is None else view.version for pool_id in pool_ids]

    async def reservation(self, pool_id: str, reservation_id: str) -> Reservation | None:
        runner = await self._quiet_runner(pool_id)
        return None if runner is None else runner.writer.state.reservations.get(reservation_id)

    async def reservation_of_request(self, pool_id: str, request_id: str) -> Reservation | None:
        """The reservation the pool made for ``request_id``, if any (once what is in flight is decided)."""
        runner = await self._quiet_runner(pool_id)
        return None if runner is None else runner.writer.state.reservation_for_request(request_id)

    async def waitlist_place(self, pool_id: str, entry_id: str) -> WaitlistPlace | None:
        """A waitlist entry of the pool as it is (once what is in flight is decided); None: no such entry."""
        runner = await self._quiet_runner(pool_id)
        return None if runner is None else place_of(runner.writer.state, entry_id)

    async def reservations(
        self, pool_id: str, status: ReservationStatus | None = None, limit: int = 1_000
    ) -> list[Reservation]:
        """The pool's reservations (of ``status``, when given), at most ``limit``, in the order they were made."""
        runner = await self._quiet_runner(pool_id)
        if runner is None:
            return []
        reservations = runner.writer.state.reservations.values()
        found = (r for r in reservations if status is None or r.status is status)
        return list(itertools.islice(found, limit))

    async def glance(self, pool_id: str, limit: int) -> PoolGlance | None:
        """The pool as the operator's console shows it (its holds, newest reservations and entries waiting,
        at most ``limit`` each); None: the pool has no events."""
        runner = await self._quiet_runner(pool_id)
        return None if runner is None else glance_of(runner.writer.state, runner.writer.seq_nr, limit)

    async def _quiet_runner(self, pool_id: str) -> _Runner | None:
        """The pool's runner with nothing in flight and its state loaded; None: the pool has no events."""
        runner = await self._runner(pool_id)
        if runner is not None:
            await runner.quiet()
        return runner

    # ------------------------------------------------------------------ the operator's reset and check

    async def reset(self, pool_id: str, to_seq_nr: int) -> CommandOutcome:
        """Set the pool back to its state after event ``to_seq_nr`` (read from the journal), as one more
        event: history stays. Holds of that state are pending again (and expire at once if due)."""
        runner = await self._quiet_runner(pool_id)
        if runner is None:
            raise PoolNotFound(pool_id)
        seq_nr = runner.writer.seq_nr
        if not 1 <= to_seq_nr < seq_nr:
            raise SeqNrOutOfRange(f"to_seq_nr must be 1..{seq_nr - 1} (the pool is at {seq_nr})")
        try:
            target = await asyncio.to_thread(replay_pool, self._journal, self._codec, pool_id, to_seq_nr)
        except JournalError as exc:
            raise Unavailable(f"journal unavailable: {exc}") from exc
        return await self._submit(runner, ResetPool(to_seq_nr, target.state), None, tracing.current.get())

    async def check(self, pool_id: str) -> tuple[int, list[str]]:
        """Replay the pool from the journal, every event from the first, and compare with the live state:
        (the seq_nr compared at, the differences; none when they agree). The pool's writes wait meanwhile."""
        runner = await self._runner(pool_id)
        if runner is None:
            raise PoolNotFound(pool_id)
        writer = runner.writer
        async with runner.held():  # the state compared is the one replayed up to
            try:
                replayed = await asyncio.to_thread(replay_pool, self._journal, self._codec, pool_id)
            except JournalUnavailable as exc:
                raise Unavailable(f"journal unavailable: {exc}") from exc
            except Exception as exc:  # a corrupt stream, or events that do not apply: that is the finding
                return writer.seq_nr, [f"the journal does not replay: {type(exc).__name__}: {exc}"]
        found = differences(writer.state, replayed.state)
        if replayed.seq_nr != writer.seq_nr:
            found.insert(0, f"seq_nr: live {writer.seq_nr}, journal {replayed.seq_nr}")
        return writer.seq_nr, found

    # ------------------------------------------------------------------ starting pools

    async def ensure_started(self, pool_id: str) -> int:
        """Recover the pool if it is not running yet; returns its seq_nr (the watchdog's ping; 0 for a pool
        with no events, which is not started)."""
        runner = await self._quiet_runner(pool_id)
        return 0 if runner is None else runner.writer.seq_nr

    async def ensure_started_many(self, pool_ids: Sequence[str]) -> list[int | CapacityError]:
        """``ensure_started`` of registered pools (the watchdog's ping; the registry lists only pools with
        events): those not running start together, ``_RECOVERY_BATCH`` at a time, without asking the
        journal one by one whether they exist. Each answer on its own, a ``CapacityError`` as a value."""
        if not self.fenced:
            new = [p for p in dict.fromkeys(pool_ids) if p not in self._runners and p not in self._starting]
            for start in range(0, len(new), _RECOVERY_BATCH):
                self._begin_starting(new[start : start + _RECOVERY_BATCH])
        answers = await asyncio.gather(*(self.ensure_started(p) for p in pool_ids), return_exceptions=True)
        for answer in answers:
            if isinstance(answer, BaseException) and not isinstance(answer, CapacityError):
                raise answer
        return cast(list[int | CapacityError], answers)

    async def _runner(self, pool_id: str, creates: bool = False) -> _Runner | None:
        """The running pool, started (claiming its stream, recovering) if needed. A pool with no events is
        started only by a command that ``creates`` it: for anything else it is None, and nothing is
        claimed or written (a request for an unknown pool leaves no trace)."""
        if self.fenced:
            raise self._fence.error()
        runner = self._runners.get(pool_id)
        if runner is not None:
            return runner
        if not creates and pool_id not in self._starting and not await self._has_events(pool_id):
            return self._runners.get(pool_id)  # started meanwhile by a command that creates it, or None
        runner = self._runners.get(pool_id)
        if runner is not None:
            return runner
        if creates and pool_id not in self._starting:
            return self._started_as_new(pool_id)
        if pool_id not in self._starting:
            self._begin_starting([pool_id])
        return await asyncio.shield(self._starting[pool_id])

    def _started_as_new(self, pool_id: str) -> _Runner:
        """A pool a command creates starts as new, claiming nothing: its first append creates its stream
        (one durable write instead of a claim and an append); if it exists after all, the runner claims
        and reads it before deciding again (``StreamHold``)."""
        writer = PoolWriter(pool_id, self._journal, self._codec, self._snapshots)
        writer.start_new()
        runner: _Runner = StreamRunner(writer, self._shared)
        self._runners[pool_id] = runner
        return runner

    def _begin_starting(self, pool_ids: list[str]) -> None:
        for pool_id in pool_ids:
            self._starting[pool_id] = asyncio.get_running_loop().create_future()
        self._spawn(self._start(pool_ids))

    async def _has_events(self, pool_id: str) -> bool:
        if not self.breaker.allow():
            raise Unavailable("the journal is failing; not trying for a moment")
        try:
            seq_nr = await asyncio.to_thread(self._journal.highest_seq_nr, pool_id)
        except JournalError as exc:
            self.breaker.record_failure()
            raise Unavailable(f"journal unavailable: {exc}") from exc
        self.breaker.record_success()
        return seq_nr > 0

    async def _start(self, pool_ids: list[str]) -> None:
        """Start pools together: one claim of their epochs, then their state read after it in a few
        queries (``recover_pools``). Each answers through its future in ``_starting``."""
        try:
            if not self.breaker.allow():
                raise Unavailable("the journal is failing; not trying for a moment")
            epochs = await self._claims.claim_many(pool_ids)
            # A stream claimed for the first time has no events: nothing to read (a new pool).
            recovered: dict[str, RecoveredPool | JournalError] = {
                pool_id: RecoveredPool(PoolState(pool_id), 0, 0, 0)
                for pool_id, epoch in zip(pool_ids, epochs, strict=True)
                if epoch == FIRST_EPOCH
            }
            existing = [pool_id for pool_id in pool_ids if pool_id not in recovered]
            if existing:
                async with self._recoveries:
                    recovered.update(await asyncio.to_thread(recover_pools, self._journal, self._codec, existing))
            self.breaker.record_success()
        except JournalError as exc:
            self.breaker.record_failure()
            self._failures.warning(f"start:{type(exc).__name__}", "pools %s cannot be started: %s", pool_ids[:3], exc)
            for pool_id in pool_ids:
                self._started(pool_id, Unavailable(f"cannot recover pool {pool_id!r}: {exc}"))
        except Exception as exc:
            log.exception("pools %s cannot be recovered", pool_ids[:3])
            for pool_id in pool_ids:
                self._started(pool_id, Unavailable(f"pool {pool_id!r} cannot be recovered: {type(exc).__name__}"))
        else:
            for pool_id, epoch in zip(pool_ids, epochs, strict=True):
                state = recovered[pool_id]
                if isinstance(state, JournalError):
                    self._failures.error(
                        f"recover:{type(state).__name__}", "pool %s cannot be recovered: %s", pool_id, state
                    )
                    self._started(pool_id, Unavailable(f"pool {pool_id!r} cannot be recovered: {state}"))
                    continue
                writer = PoolWriter(pool_id, self._journal, self._codec, self._snapshots)
                writer.start(epoch, state)
                self._started(pool_id, StreamRunner(writer, self._shared))

    def _started(self, pool_id: str, outcome: _Runner | Unavailable) -> None:
        starting = self._starting.pop(pool_id)
        if isinstance(outcome, StreamRunner):
            self._runners[pool_id] = outcome
            starting.set_result(outcome)
            outcome.schedule_expiry()  # holds that expired while the pool was down go at once
            outcome.hand_back_if_dormant()
        else:
            fail(starting, outcome)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
