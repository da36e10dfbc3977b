"""Hosts the writers of one or many pools inside one process, without Ray (the Ray actor is a shell).

Per pool, commands are handled strictly one batch at a time with group commit: while a journal write is
in flight, arriving commands queue up; when it completes they are decided in order and written together
in the next append. Every caller is answered only after its events are durable. Journal calls run in a
worker thread so the event loop keeps accepting commands meanwhile; only an append the journal can make
at once (``append_many_now``: a SQLite file no one else is writing) runs inline, as that is cheaper.

Holds expire on the pool's own timer: the host wakes a pool when its earliest hold is due, and the
writer expires whatever is due before deciding anything else, in the same group commit as commands.

Around that: lazy start with a bound on concurrent recoveries, a circuit breaker that makes a journal
outage fail fast, snapshots off the reply path, and fire-and-forget publishing to the read side and the
warehouse. A writer that learns it is fenced (a newer incarnation of its pool exists) makes the whole
host stop serving: this process is a zombie.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from capacity_service.adapters.codec import Codec
from capacity_service.adapters.journal import (
    FIRST_EPOCH,
    AppendRequest,
    Journal,
    JournalError,
    JournalUnavailable,
    WriterFenced,
)
from capacity_service.application import tracing
from capacity_service.application.circuit_breaker import BreakerState, CircuitBreaker
from capacity_service.application.metrics import NO_METRICS, HostMetrics, HostStats
from capacity_service.application.pool_writer import (
    BatchResult,
    CapturedSnapshot,
    CommandOutcome,
    PoolWriter,
    answer_of_absent_pool,
    view_of_absent_pool,
)
from capacity_service.application.publishing import EventPublisher, NullPublisher, ViewPublisher
from capacity_service.application.recovery import RecoveredPool, differences, recover_pools, replay_pool
from capacity_service.application.repeated_log import RepeatedFailureLog
from capacity_service.domain import (
    ConfigurePool,
    ExpireHolds,
    HoldExpired,
    PoolCommand,
    PoolPaused,
    PoolResumed,
    PoolRetired,
    PoolState,
    PoolView,
    Reservation,
    ReservationStatus,
    Reserve,
    ResetPool,
)
from capacity_service.errors import (
    CapacityError,
    OutcomeUnknown,
    Overloaded,
    PoolNotFound,
    SeqNrOutOfRange,
    Unavailable,
)
from capacity_service.settings import SnapshotSettings, WriteSideSettings

log = logging.getLogger(__name__)

# Pools recovered together (``recover_pools``): a few queries and one worker-thread call for all of them.
_RECOVERY_BATCH = 500

# Calls claiming writer epochs under way at once (``_Claims``).
_CLAIMS_UNDER_WAY = 4

# After a wake-up that did not expire the hold it was for (the journal failed), the next one waits this long.
_EXPIRY_RETRY_S = 1.0


@dataclass
class _Pending:
    command: PoolCommand
    reply: asyncio.Future[CommandOutcome]
    # Wall-clock time (``time.time()``) after which the command must not be decided; None: no limit.
    deadline: float | None = None
    # The id of the request it answers (``tracing``), named in the log lines written about it.
    request_id: str | None = None


# A command for a pool, as callers hand them in batches: (pool id, command, deadline or None, the id of the
# request it answers or None).
AddressedCommand = tuple[str, PoolCommand, float | None, str | None]


@dataclass
class _PoolSlot:
    writer: PoolWriter
    queue: list[_Pending] = field(default_factory=list)
    # Set while no journal call of this pool is in flight (the writer's state is settled).
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    # The view as of the last durable write, served without waiting for an in-flight one.
    durable_view: PoolView | None = None
    # A snapshot is being stored (one at a time per pool).
    storing_snapshot: bool = False
    # The timer that wakes the pool to expire its earliest hold, and that hold's expiry (epoch seconds).
    wake: asyncio.TimerHandle | None = None
    wake_at: float | None = None
    # The expiry the last wake-up was for: due again afterwards means it failed, and the next waits.
    woken_for: float | None = None
    # Retired with nothing held or active: being handed back (``unhosting``), then no longer hosted here
    # (``unhosted``: a command that still reaches this slot starts the pool anew).
    unhosting: bool = False
    unhosted: bool = False

    def __post_init__(self) -> None:
        self.idle.set()
        self.settle()

    def settle(self) -> None:
        self.durable_view = None if self.writer.needs_reload else self.writer.view()


class HostFenced(Unavailable):
    """This host was fenced by a newer incarnation and serves nothing any more."""


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
        self._on_fenced = on_fenced
        self._codec = Codec()
        self._slots: dict[str, _PoolSlot] = {}
        self._starting: dict[str, asyncio.Future[_PoolSlot]] = {}
        self._recoveries = asyncio.Semaphore(self._settings.max_concurrent_recoveries)
        self._committer = _Committer(journal, metrics)
        self._claims = _Claims(journal)
        self.breaker = CircuitBreaker(self._settings.breaker_failure_threshold, self._settings.breaker_reset_s)
        self.fenced = False
        self._background: set[asyncio.Task[None]] = set()
        self._failures = RepeatedFailureLog(log)

    @property
    def pool_ids(self) -> list[str]:
        return list(self._slots)

    def stats(self) -> HostStats:
        """The host's gauges. Counting pending holds walks every reservation: call it every few seconds."""
        held = ReservationStatus.HELD
        return HostStats(
            pools_hosted=len(self._slots),
            pools_recovering=len(self._starting),
            commands_queued=sum(len(slot.queue) for slot in self._slots.values()),
            holds_pending=sum(
                sum(1 for r in slot.writer.state.reservations.values() if r.status is held)
                for slot in self._slots.values()
            ),
            breaker_open=self.breaker.state is not BreakerState.CLOSED,
        )

    # ------------------------------------------------------------------ commands

    async def execute(self, pool_id: str, command: PoolCommand, deadline: float | None = None) -> CommandOutcome:
        """Decide ``command`` and make it durable. Not decided at all (``Unavailable``: nothing taken) once
        ``deadline`` has passed; ``Overloaded`` when the pool's queue is full; ``OutcomeUnknown`` when the
        journal did not confirm the append."""
        slot = await self._slot(pool_id, creates=isinstance(command, ConfigurePool))
        if slot is None:
            return answer_of_absent_pool(pool_id, command)
        return await self._enqueue(slot, command, deadline, tracing.current.get())

    async def execute_many(self, commands: Sequence[AddressedCommand]) -> list[CommandOutcome | CapacityError]:
        """Several commands (of any pools) at once, each answered on its own: a ``CapacityError`` is an
        answer here, not raised. A command to a running pool costs no task of its own (as ``execute``
        would): batches from the router carry many, and the tasks were a tenth of this process's work."""
        replies = [
            self._enqueue(slot, command, deadline, request_id)
            if (slot := self._slots.get(pool_id)) is not None and not self.fenced
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

    def _enqueue(
        self, slot: _PoolSlot, command: PoolCommand, deadline: float | None, request_id: str | None = None
    ) -> asyncio.Future[CommandOutcome]:
        if slot.unhosted:
            return self._execute_traced(slot.writer.pool_id, command, deadline, request_id)
        reply: asyncio.Future[CommandOutcome] = asyncio.get_running_loop().create_future()
        if len(slot.queue) >= self._settings.max_queued_per_pool:
            reply.set_exception(
                Overloaded(f"pool {slot.writer.pool_id!r} has {len(slot.queue)} commands waiting; nothing was taken")
            )
            return reply
        slot.queue.append(_Pending(command, reply, deadline, request_id))
        self._drain_if_idle(slot)
        return reply

    def _drain_if_idle(self, slot: _PoolSlot) -> None:
        """Start writing the slot's queued commands, unless a write (or reload) holds the slot already."""
        if slot.queue and slot.idle.is_set():
            slot.idle.clear()
            self._spawn(self._drain(slot))

    async def _drain(self, slot: _PoolSlot) -> None:
        """Write queued commands batch by batch until the queue is empty."""
        try:
            while slot.queue and not self.fenced:
                batch = slot.queue[: self._settings.max_batch]
                del slot.queue[: len(batch)]
                token = tracing.current.set(_request_ids_of(batch))  # log lines of this write name them
                try:
                    await self._write(slot, batch)
                finally:
                    tracing.current.reset(token)
            for pending in slot.queue:  # only left when fenced
                _fail(pending.reply, HostFenced("this pool moved to a newer incarnation; retry"))
            slot.queue.clear()
        finally:
            slot.idle.set()
            self._schedule_expiry(slot)
            self._unhost_if_dormant(slot)

    # ------------------------------------------------------------------ hold expiry

    def _schedule_expiry(self, slot: _PoolSlot) -> None:
        """Set the pool's timer for its earliest hold (once per change of that hold, not per write)."""
        if self.fenced:
            return
        if slot.writer.needs_reload:  # a failed write left the state unknown: try again in a while
            when = time.time() + _EXPIRY_RETRY_S
        elif (earliest := slot.writer.next_expiry()) is not None:
            when = earliest.timestamp()
        else:
            return
        if slot.wake is not None and slot.wake_at is not None and slot.wake_at <= when:
            return
        if slot.wake is not None:
            slot.wake.cancel()
        delay = max(0.0, when - time.time())
        if when == slot.woken_for:  # the last wake-up did not expire it (the journal failed): not in a loop
            delay = max(delay, _EXPIRY_RETRY_S)
        slot.wake_at = when
        slot.wake = asyncio.get_running_loop().call_later(delay, self._wake, slot)

    def _wake(self, slot: _PoolSlot) -> None:
        """The pool's earliest hold is due: a command that decides nothing goes through the queue, and the
        writer expires what is due before it (``PoolWriter.prepare``)."""
        slot.woken_for, slot.wake, slot.wake_at = slot.wake_at, None, None
        if not self.fenced:
            # Refused only when the queue is full: its drain expires what is due before each batch anyway.
            self._enqueue(slot, ExpireHolds(), None).add_done_callback(_ignore_answer)

    # ------------------------------------------------------------------ retirement

    def _unhost_if_dormant(self, slot: _PoolSlot) -> None:
        """A retired pool with nothing held or active will never change by itself again: record it as
        dormant (the watchdog and the caches then leave it out) and stop hosting it."""
        if slot.writer.state.dormant and not slot.unhosting and not slot.unhosted and not self.fenced:
            slot.unhosting = True
            self._spawn(self._unhost(slot))

    async def _unhost(self, slot: _PoolSlot) -> None:
        pool_id = slot.writer.pool_id
        try:
            await asyncio.to_thread(self._journal.mark_dormant, pool_id)
        except JournalError as exc:  # tried again after its next write or recovery
            log.warning("pool %s: cannot record it as dormant, still hosting it: %s", pool_id, exc)
            slot.unhosting = False
            return
        slot.unhosting = False
        if self._slots.get(pool_id) is slot and slot.idle.is_set() and not slot.queue:
            del self._slots[pool_id]
            slot.unhosted = True
            if slot.wake is not None:
                slot.wake.cancel()
            log.info("pool %s: retired with nothing held or active; no longer hosted", pool_id)

    async def _write(self, slot: _PoolSlot, batch: list[_Pending]) -> None:
        if not self.breaker.allow():
            for pending in batch:
                _fail(pending.reply, Unavailable("the journal is failing; not trying for a moment"))
            return
        if slot.writer.needs_reload:  # the state must be known before deciding (and before refusing late ones)
            try:
                await asyncio.to_thread(slot.writer.reload)
            except JournalError as exc:
                self.breaker.record_failure()
                for pending in batch:
                    _fail(pending.reply, Unavailable(f"journal unavailable: {exc}"))
                return
            slot.settle()
        batch = _refuse_late(slot.writer, batch)
        if not batch:
            return
        try:
            result = await self._write_batch(slot.writer, [p.command for p in batch])
        except WriterFenced:
            self._become_fenced()
            for pending in batch:
                _fail(pending.reply, HostFenced("this pool moved to a newer incarnation; retry"))
            return
        except JournalError as exc:
            slot.settle()
            self.breaker.record_failure()
            self._failures.warning(
                f"write:{type(exc).__name__}", "pool %s: journal write failed: %s", slot.writer.pool_id, exc
            )
            # A refused conditional append wrote nothing; any other failure may have written it.
            error: CapacityError = (
                OutcomeUnknown(f"the journal did not confirm the write ({exc}); repeat with the same request_id")
                if isinstance(exc, JournalUnavailable)
                else Unavailable(f"journal unavailable: {exc}")
            )
            for pending in batch:
                _fail(pending.reply, error)
            return
        except Exception as exc:  # a bug: answer the callers, and keep only durable state
            log.exception("pool %s: writing a batch failed unexpectedly", slot.writer.pool_id)
            with contextlib.suppress(JournalError):
                await asyncio.to_thread(slot.writer.reload)
            slot.settle()
            for pending in batch:
                _fail(pending.reply, Unavailable(f"internal error: {type(exc).__name__}"))
            return
        self.breaker.record_success()
        slot.settle()
        for pending, outcome in zip(batch, result.outcomes, strict=True):
            if not pending.reply.done():
                pending.reply.set_result(outcome)
        if result.persisted:
            self._after_durable(slot, result)

    def _after_durable(self, slot: _PoolSlot, result: BatchResult) -> None:
        """What follows a write that added events: publish them, count and log them, snapshot when due."""
        self._publish(slot, result)
        expiries = [p.event for p in result.persisted if isinstance(p.event, HoldExpired)]
        if expiries:
            self._metrics.holds_expired(sum(len(e.reservation_ids) for e in expiries))
        for operated in (p.event for p in result.persisted if isinstance(p.event, _OPERATORS_EVENTS)):
            log.info("pool %s: %s", slot.writer.pool_id, operated)
        # Right now the state holds only durable events (the next batch is not decided yet): the moment to
        # copy it for a snapshot (a C-speed copy); encoding and storing overlap the writes.
        if not slot.storing_snapshot and (captured := slot.writer.take_snapshot_if_due()) is not None:
            slot.storing_snapshot = True
            self._spawn(self._store_snapshot(slot, captured))

    async def _write_batch(self, writer: PoolWriter, commands: list[PoolCommand]) -> BatchResult:
        """Decide and apply tentatively here, then hand the append to the host's committer, which writes
        the appends of all pools that are ready at that moment together (one transaction on SQL)."""
        prepared = writer.prepare(commands)
        if prepared.append is None:
            return prepared.result
        outcome = await self._committer.commit(prepared.append)
        if isinstance(outcome, JournalError):
            await asyncio.to_thread(writer.settle_failure, prepared, outcome)  # returns only if it landed
        else:
            writer.settle_success(prepared, outcome)
        return prepared.result

    def _publish(self, slot: _PoolSlot, result: BatchResult) -> None:
        try:
            self._views.publish_view(slot.writer.view())
            self._events.publish_events(result.persisted)
        except Exception:  # fire-and-forget: publishing never fails a write
            log.exception("pool %s: publishing failed", slot.writer.pool_id)

    async def _store_snapshot(self, slot: _PoolSlot, captured: CapturedSnapshot) -> None:
        try:
            await asyncio.to_thread(slot.writer.store_snapshot, captured)
        finally:
            slot.storing_snapshot = False

    # ------------------------------------------------------------------ reads (durable state only)

    async def view(self, pool_id: str) -> PoolView:
        slot = self._slots.get(pool_id)
        if slot is not None and slot.durable_view is not None and not self.fenced:
            return slot.durable_view
        settled = await self._settled_slot(pool_id)
        return view_of_absent_pool(pool_id) if settled is None else settled.writer.view()

    def durable_view(self, pool_id: str) -> PoolView | None:
        """The view of a running pool as of its last durable write, without waiting; None when the pool
        is not running here (or must reload first): ``view`` then starts or settles it."""
        slot = self._slots.get(pool_id)
        return None if slot is None or self.fenced else slot.durable_view

    def durable_versions(self, pool_ids: Sequence[str]) -> list[int | None]:
        """Each pool's version (seq_nr) as of its last durable write, without waiting; None for a pool
        whose view only ``view`` can give (not running here, or it must reload first)."""
        return [None if (view := self.durable_view(pool_id)) is None else view.version for pool_id in pool_ids]

    async def reservation(self, pool_id: str, reservation_id: str) -> Reservation | None:
        slot = await self._settled_slot(pool_id)
        return None if slot is None else slot.writer.state.reservations.get(reservation_id)

    async def reservations(
        self, pool_id: str, status: ReservationStatus | None = None, limit: int = 1_000
    ) -> list[Reservation]:
        """The pool's reservations (of ``status``, when given), at most ``limit``, in the order they were made."""
        slot = await self._settled_slot(pool_id)
        if slot is None:
            return []
        found = (r for r in slot.writer.state.reservations.values() if status is None or r.status is status)
        return list(itertools.islice(found, limit))

    async def reset(self, pool_id: str, to_seq_nr: int) -> CommandOutcome:
        """Set the pool back to its state after event ``to_seq_nr`` (read from the journal), as one more
        event: history stays. Holds of that state are pending again (and expire at once if due)."""
        slot = await self._settled_slot(pool_id)
        if slot is None:
            raise PoolNotFound(pool_id)
        if not 1 <= to_seq_nr < slot.writer.seq_nr:
            raise SeqNrOutOfRange(
                f"to_seq_nr must be 1..{slot.writer.seq_nr - 1} (the pool is at {slot.writer.seq_nr})"
            )
        try:
            target = await asyncio.to_thread(replay_pool, self._journal, self._codec, pool_id, to_seq_nr)
        except JournalError as exc:
            raise Unavailable(f"journal unavailable: {exc}") from exc
        return await self._enqueue(slot, ResetPool(to_seq_nr, target.state), None, tracing.current.get())

    async def check(self, pool_id: str) -> tuple[int, list[str]]:
        """Replay the pool from the journal, every event from the first, and compare with the live state:
        (the seq_nr compared at, the differences; none when they agree). The pool's writes wait meanwhile."""
        slot = await self._settled_slot(pool_id)
        if slot is None:
            raise PoolNotFound(pool_id)
        slot.idle.clear()  # held like a write, so the state compared is the one replayed up to
        try:
            replayed = await asyncio.to_thread(replay_pool, self._journal, self._codec, pool_id)
        except JournalUnavailable as exc:
            raise Unavailable(f"journal unavailable: {exc}") from exc
        except Exception as exc:  # a corrupt stream, or events that do not apply: that is the finding
            return slot.writer.seq_nr, [f"the journal does not replay: {type(exc).__name__}: {exc}"]
        finally:
            slot.idle.set()
            self._drain_if_idle(slot)
        found = differences(slot.writer.state, replayed.state)
        if replayed.seq_nr != slot.writer.seq_nr:
            found.insert(0, f"seq_nr: live {slot.writer.seq_nr}, journal {replayed.seq_nr}")
        return slot.writer.seq_nr, found

    async def ensure_started(self, pool_id: str) -> int:
        """Recover the pool if it is not running yet; returns its seq_nr (the watchdog's ping; 0 for a pool
        with no events, which is not started)."""
        slot = await self._settled_slot(pool_id)
        return 0 if slot is None else slot.writer.seq_nr

    async def ensure_started_many(self, pool_ids: Sequence[str]) -> list[int | CapacityError]:
        """``ensure_started`` of registered pools (the watchdog's ping; the registry lists only pools with
        events): those not running start together, ``_RECOVERY_BATCH`` at a time, without asking the
        journal one by one whether they exist. Each answer on its own, a ``CapacityError`` as a value."""
        if not self.fenced:
            new = [p for p in dict.fromkeys(pool_ids) if p not in self._slots and p not in self._starting]
            for start in range(0, len(new), _RECOVERY_BATCH):
                self._begin_starting(new[start : start + _RECOVERY_BATCH])
        answers = await asyncio.gather(*(self.ensure_started(p) for p in pool_ids), return_exceptions=True)
        for answer in answers:
            if isinstance(answer, BaseException) and not isinstance(answer, CapacityError):
                raise answer
        return cast(list[int | CapacityError], answers)

    async def _settled_slot(self, pool_id: str) -> _PoolSlot | None:
        """The slot with no write in flight (a read then never shows an event that is not durable yet) and
        its state loaded. A reload holds the slot as a write does: a write deciding meanwhile would decide
        against the state the reload is about to replace, and the journal would accept it. None: the pool
        has no events (and is not started)."""
        slot = await self._slot(pool_id)
        if slot is None:
            return None
        while True:
            while not slot.idle.is_set():
                await slot.idle.wait()
            if not slot.writer.needs_reload:
                return slot
            slot.idle.clear()
            try:
                await self._guarded_reload(slot)
            finally:
                slot.idle.set()
                self._drain_if_idle(slot)  # commands that came in meanwhile

    async def _guarded_reload(self, slot: _PoolSlot) -> None:
        try:
            await asyncio.to_thread(slot.writer.reload)
        except JournalError as exc:
            raise Unavailable(f"journal unavailable: {exc}") from exc
        slot.settle()
        self._schedule_expiry(slot)

    # ------------------------------------------------------------------ lifecycle

    async def _slot(self, pool_id: str, creates: bool = False) -> _PoolSlot | None:
        """The running pool, started (claiming its stream, recovering) if needed. A pool with no events is
        started only by a command that ``creates`` it: for anything else it is None, and nothing is
        claimed or written (a request for an unknown pool leaves no trace)."""
        if self.fenced:
            raise HostFenced("this pool moved to a newer incarnation; retry")
        slot = self._slots.get(pool_id)
        if slot is not None:
            return slot
        if not creates and pool_id not in self._starting and not await self._has_events(pool_id):
            return self._slots.get(pool_id)  # started meanwhile by a command that creates it, or None
        slot = self._slots.get(pool_id)
        if slot is not None:
            return slot
        if pool_id not in self._starting:
            self._begin_starting([pool_id])
        return await asyncio.shield(self._starting[pool_id])

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
                self._started(pool_id, _PoolSlot(writer))

    def _started(self, pool_id: str, outcome: _PoolSlot | Unavailable) -> None:
        starting = self._starting.pop(pool_id)
        if isinstance(outcome, _PoolSlot):
            self._slots[pool_id] = outcome
            starting.set_result(outcome)
            self._schedule_expiry(outcome)  # holds that expired while the pool was down go at once
            self._unhost_if_dormant(outcome)
        else:
            _fail(starting, outcome)

    def _become_fenced(self) -> None:
        if not self.fenced:
            self.fenced = True
            log.error("fenced: a newer incarnation of a pool hosted here exists; this host stops serving")
            if self._on_fenced is not None:
                self._on_fenced()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def epoch_of(self, pool_id: str) -> int | None:
        slot = self._slots.get(pool_id)
        return None if slot is None else slot.writer.epoch


class _Claims:
    """Writer epochs claimed for many pools in few journal calls: pools that start while claims run (a
    cold start, the watchdog reviving a host's pools, a burst of new pools) are claimed together in the
    next, with up to ``_CLAIMS_UNDER_WAY`` calls under way (each takes its slowest claim's time: on
    Cassandra a Paxos round per pool)."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self._waiting: list[tuple[str, asyncio.Future[int]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def claim_many(self, pool_ids: list[str]) -> list[int]:
        answers = [asyncio.get_running_loop().create_future() for _ in pool_ids]
        self._waiting.extend(zip(pool_ids, answers, strict=True))
        if len(self._tasks) < _CLAIMS_UNDER_WAY:
            task = asyncio.ensure_future(self._run())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return list(await asyncio.gather(*answers))

    async def _run(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                epochs = await asyncio.to_thread(self._journal.claim_epochs, [pool_id for pool_id, _ in batch])
            except Exception as exc:  # every waiter gets the error (a bug too: none may wait forever)
                for _, answer in batch:
                    _fail(answer, exc)
                continue
            for (_, answer), epoch in zip(batch, epochs, strict=True):
                if not answer.done():
                    answer.set_result(epoch)


class _Committer:
    """Group commit across pools: appends that arrive while one ``append_many`` runs go together in the
    next. A journal whose pools share nothing (``append_soon``) takes each append at once instead, so no
    pool's append waits for another's. Per pool there is at most one append in flight (its drain loop
    waits), so order is kept."""

    def __init__(self, journal: Journal, metrics: HostMetrics) -> None:
        self._journal = journal
        self._metrics = metrics
        self._waiting: list[tuple[AppendRequest, asyncio.Future[int | JournalError]]] = []
        self._running = False
        self._task: asyncio.Task[None] | None = None

    async def commit(self, request: AppendRequest) -> int | JournalError:
        started = self._journal.append_soon(request)
        if started is not None:  # a store whose pools share nothing: each append on its own, at once
            return await self._settle_alone(request, started)
        answer: asyncio.Future[int | JournalError] = asyncio.get_running_loop().create_future()
        self._waiting.append((request, answer))
        if not self._running:
            self._running = True
            self._task = asyncio.ensure_future(self._run())
        return await answer

    async def _settle_alone(
        self, request: AppendRequest, started: concurrent.futures.Future[int]
    ) -> int | JournalError:
        began = time.perf_counter()
        result: int | JournalError
        try:
            result = await asyncio.wrap_future(started)
        except JournalError as exc:
            result = exc
        except Exception as exc:  # a bug must not pass for a refusal: the outcome is unknown
            log.exception("append of pool %s failed unexpectedly", request.pool_id)
            result = JournalUnavailable(f"{type(exc).__name__}: {exc}")
        self._metrics.appended(time.perf_counter() - began, 1, int(isinstance(result, JournalError)))
        return result

    async def _run(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                requests = [request for request, _ in batch]
                started = time.perf_counter()
                try:
                    # Inline when the journal can answer at once (a local file nobody else is writing):
                    # the hand-over to a worker thread cost more than the append on a busy loop.
                    now = self._journal.append_many_now(requests)
                    results = now if now is not None else await asyncio.to_thread(self._journal.append_many, requests)
                except JournalError as exc:
                    results = [exc] * len(batch)
                except Exception as exc:  # a bug must not leave callers waiting forever
                    log.exception("append_many failed unexpectedly")
                    results = [JournalUnavailable(f"{type(exc).__name__}: {exc}")] * len(batch)
                failures = sum(isinstance(result, JournalError) for result in results)
                self._metrics.appended(time.perf_counter() - started, len(batch), failures)
                for (_, answer), result in zip(batch, results, strict=True):
                    if not answer.done():
                        answer.set_result(result)
        finally:
            self._running = False


def _refuse_late(writer: PoolWriter, batch: list[_Pending]) -> list[_Pending]:
    """Answer the commands whose deadline has passed, without deciding them: their callers have stopped
    waiting and answered 503 or 504, so deciding now could take capacity nobody knows about. A reserve
    whose request id the pool knows already is answered as usual (that decides nothing new): it is how a
    caller settles an unknown outcome."""
    now = time.time()
    kept: list[_Pending] = []
    for pending in batch:
        command = pending.command
        if (
            pending.deadline is not None
            and now > pending.deadline
            and not (isinstance(command, Reserve) and writer.state.reservation_for_request(command.request_id))
        ):
            _fail(
                pending.reply,
                Unavailable(
                    f"pool {writer.pool_id!r}: the deadline passed before the command "
                    "could be decided; nothing was taken"
                ),
            )
        else:
            kept.append(pending)
    return kept


# Events an operator's command wrote: each gets a log line (naming the request, like every line of a write).
_OPERATORS_EVENTS = (PoolPaused, PoolResumed, PoolRetired)
# Request ids named in one log line at most; a batch can hold hundreds.
_MAX_IDS_LOGGED = 10


def _request_ids_of(batch: list[_Pending]) -> str | None:
    ids = list(dict.fromkeys(p.request_id for p in batch if p.request_id is not None))
    if not ids:
        return None
    more = f" (+{len(ids) - _MAX_IDS_LOGGED} more)" if len(ids) > _MAX_IDS_LOGGED else ""
    return ",".join(ids[:_MAX_IDS_LOGGED]) + more


def _ignore_answer(reply: asyncio.Future[CommandOutcome]) -> None:
    if not reply.cancelled():
        reply.exception()  # retrieved: a failed wake-up is retried by the timer, not reported


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
