"""A stream's life in its host (a pool's, or an order's): the queue of commands, the drain that writes them
batch by batch, the hand-off to the host's group commit, its timer (a pool's earliest hold expiry, a held
order's), the view as of its last durable write, and its hand-back once it will never change by itself.

Per stream, commands are handled strictly one batch at a time with group commit: while an append is in
flight, arriving commands queue up; when it completes they are decided in order and written together in
the next. Every caller is answered only after its events are durable.

The runner needs from its writer only what ``SingleWriter`` names, so a second kind of single-writer
stream runs on the same machinery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic, TypeVar, cast

from capacity_service.adapters.journal import JournalError, JournalUnavailable, StreamExists, WriterFenced
from capacity_service.application import tracing
from capacity_service.application.group_commit import fail
from capacity_service.application.hosting import SharedByRunners
from capacity_service.application.single_writer import BatchResult, SingleWriter
from capacity_service.errors import CapacityError, OutcomeUnknown, Overloaded, Unavailable

log = logging.getLogger(__name__)

# After a wake-up that did not expire the hold it was for (the journal failed), the next one waits this long.
_EXPIRY_RETRY_S = 1.0
# Request ids named in one log line at most; a batch can hold hundreds.
_MAX_IDS_LOGGED = 10


W = TypeVar("W", bound=SingleWriter)
V = TypeVar("V")  # what the writer's view is


class RunnerState(Enum):
    IDLE = "idle"  # nothing in flight: a command starts a write at once
    BUSY = "busy"  # a write, a reload or an operator's check holds the stream; commands queue
    HANDING_BACK = "handing back"  # retired for good, being recorded as dormant; commands queue
    HANDED_BACK = "handed back"  # no longer hosted here: the host starts the stream anew for a command


@dataclass
class _Pending:
    command: Any
    reply: asyncio.Future[Any]
    # Wall-clock time (``time.time()``) after which the command must not be decided; None: no limit.
    deadline: float | None = None
    # The id of the request it answers (``tracing``), named in the log lines written about it.
    request_id: str | None = None


class StreamRunner(Generic[W, V]):
    def __init__(self, writer: W, shared: SharedByRunners, keeps_durable_view: bool = True) -> None:
        """``keeps_durable_view``: build the writer's view after every durable write, for reads that must
        not wait (a pool's); without it ``durable_view`` stays None, and reads wait for a quiet moment."""
        self.writer = writer
        self._shared = shared
        self._keeps_durable_view = keeps_durable_view
        self._queue: list[_Pending] = []
        self._state = RunnerState.IDLE
        self._quiet = asyncio.Event()  # set in IDLE and HANDED_BACK: nothing holds the stream
        self._quiet.set()
        # The view as of the last durable write, served without waiting for an in-flight one.
        self.durable_view: V | None = None
        self._storing_snapshot = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None  # the expiry the timer is set for (epoch seconds)
        self._last_woken_for: float | None = None  # due again after its wake-up means the journal failed
        self._refresh_durable_view()

    @property
    def state(self) -> RunnerState:
        return self._state

    @property
    def queued(self) -> int:
        return len(self._queue)

    def _enter(self, state: RunnerState) -> None:
        self._state = state
        if state in (RunnerState.IDLE, RunnerState.HANDED_BACK):
            self._quiet.set()
        else:
            self._quiet.clear()

    def _refresh_durable_view(self) -> None:
        if self._keeps_durable_view:
            self.durable_view = None if self.writer.needs_reload else cast(V, self.writer.view())

    # ------------------------------------------------------------------ commands

    def submit(self, command: Any, deadline: float | None, request_id: str | None = None) -> asyncio.Future[Any]:
        """Queue ``command``; the future answers once its events are durable (or it was refused). Not for a
        runner HANDED_BACK: the host starts the stream anew instead."""
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if len(self._queue) >= self._shared.settings.max_queued_per_pool:
            reply.set_exception(
                Overloaded(f"pool {self.writer.stream_id!r} has {len(self._queue)} commands waiting; nothing was taken")
            )
            return reply
        self._queue.append(_Pending(command, reply, deadline, request_id))
        self._drain_if_idle()
        return reply

    def _drain_if_idle(self) -> None:
        if self._queue and self._state is RunnerState.IDLE:
            self._enter(RunnerState.BUSY)
            self._shared.spawn(self._drain())

    async def _drain(self) -> None:
        """Write queued commands batch by batch until the queue is empty."""
        try:
            while self._queue and not self._shared.fence.fenced:
                batch = self._queue[: self._shared.settings.max_batch]
                del self._queue[: len(batch)]
                token = tracing.current.set(_request_ids_of(batch))  # log lines of this write name them
                try:
                    await self._write(batch)
                finally:
                    tracing.current.reset(token)
            for pending in self._queue:  # only left when fenced
                fail(pending.reply, self._shared.fence.error())
            self._queue.clear()
        finally:
            self._become_idle()

    def _become_idle(self) -> None:
        self._enter(RunnerState.IDLE)
        self.schedule_expiry()
        self.hand_back_if_dormant()
        self._drain_if_idle()

    async def _write(self, batch: list[_Pending]) -> None:
        shared, writer = self._shared, self.writer
        if not shared.breaker.allow():
            for pending in batch:
                fail(pending.reply, Unavailable("the journal is failing; not trying for a moment"))
            return
        if writer.needs_reload:  # the state must be known before deciding (and before refusing late ones)
            try:
                await asyncio.to_thread(writer.reload)
            except WriterFenced:  # renewing the epoch after an unknown outcome found a newer writer
                self._fenced(batch, after_writing=False)
                return
            except JournalError as exc:
                shared.breaker.record_failure()
                for pending in batch:
                    fail(pending.reply, Unavailable(f"journal unavailable: {exc}"))
                return
            self._refresh_durable_view()
        batch = self._refuse_late(batch)
        if not batch:
            return
        try:
            result = await self._decide_and_append([p.command for p in batch])
        except WriterFenced as exc:
            self._fenced(batch, after_writing=exc.outcome_unknown)
            return
        except JournalError as exc:
            self._refresh_durable_view()
            shared.breaker.record_failure()
            shared.failures.warning(
                f"write:{type(exc).__name__}", "pool %s: journal write failed: %s", writer.stream_id, exc
            )
            # A refused conditional append wrote nothing; any other failure may have written it.
            error: CapacityError = (
                OutcomeUnknown(f"the journal did not confirm the write ({exc}); repeat with the same request_id")
                if isinstance(exc, JournalUnavailable)
                else Unavailable(f"journal unavailable: {exc}")
            )
            for pending in batch:
                fail(pending.reply, error)
            return
        except Exception as exc:  # a bug: answer the callers, and keep only durable state
            log.exception("pool %s: writing a batch failed unexpectedly", writer.stream_id)
            with contextlib.suppress(JournalError):
                await asyncio.to_thread(writer.reload)
            self._refresh_durable_view()
            for pending in batch:
                fail(pending.reply, Unavailable(f"internal error: {type(exc).__name__}"))
            return
        shared.breaker.record_success()
        self._refresh_durable_view()
        for pending, outcome in zip(batch, result.outcomes, strict=True):
            if not pending.reply.done():
                pending.reply.set_result(outcome)
        if result.persisted:
            shared.after_durable(writer, result)
            self._snapshot_if_due()

    def _fenced(self, batch: list[_Pending], after_writing: bool) -> None:
        """A newer writer exists: the whole host stops, and the batch's callers are told so."""
        self._shared.fence.close()
        for pending in batch:
            fail(pending.reply, self._shared.fence.error(after_writing=after_writing))

    async def _decide_and_append(self, commands: list[Any]) -> BatchResult[Any, Any]:
        """Decide and apply tentatively here, then hand the append to the host's group commit. A stream
        only believed new (``StreamHold``) is claimed and read before any answer that its first append
        does not prove: when that append finds it exists, or when the batch writes nothing."""
        prepared = self.writer.prepare(commands)
        if prepared.append is None:
            if self.writer.believed_new:
                await asyncio.to_thread(self.writer.take_over)
                return await self._decide_and_append(commands)
            return prepared.result
        outcome = await self._shared.group_commit.commit(prepared.append)
        if isinstance(outcome, StreamExists):  # nothing was written: decide again against what exists
            await asyncio.to_thread(self.writer.take_over)
            return await self._decide_and_append(commands)
        if isinstance(outcome, JournalError):
            await asyncio.to_thread(self.writer.append_failed, prepared, outcome)  # returns only if it landed
        else:
            self.writer.append_landed(prepared, outcome)
        return prepared.result

    def _refuse_late(self, batch: list[_Pending]) -> list[_Pending]:
        """Answer the commands whose deadline has passed, without deciding them: their callers have stopped
        waiting and answered 503 or 504, so deciding now could take capacity nobody knows about. A repeat of
        a request the stream knows is answered as usual (that decides nothing new): it is how a caller
        settles an unknown outcome."""
        now = time.time()
        kept: list[_Pending] = []
        for pending in batch:
            if (
                pending.deadline is not None
                and now > pending.deadline
                and not self.writer.repeats_known_request(pending.command)
            ):
                fail(
                    pending.reply,
                    Unavailable(
                        f"pool {self.writer.stream_id!r}: the deadline passed before the command "
                        "could be decided; nothing was taken"
                    ),
                )
            else:
                kept.append(pending)
        return kept

    def _snapshot_if_due(self) -> None:
        # Right now the state holds only durable events (the next batch is not decided yet): the moment to
        # copy it for a snapshot; encoding and storing overlap the writes.
        if not self._storing_snapshot and (captured := self.writer.take_snapshot_if_due()) is not None:
            self._storing_snapshot = True
            self._shared.spawn(self._store_snapshot(captured))

    async def _store_snapshot(self, captured: object) -> None:
        try:
            await asyncio.to_thread(self.writer.store_snapshot, captured)
        finally:
            self._storing_snapshot = False

    # ------------------------------------------------------------------ quiet moments (reads, admin)

    async def quiet(self) -> None:
        """Return once nothing holds the stream and its state is loaded: a read then never shows an event
        that is not durable yet. A reload holds the stream as a write does: a write deciding meanwhile would
        decide against the state the reload is about to replace, and the journal would accept it."""
        while True:
            await self._quiet.wait()
            if not self.writer.needs_reload or self._state is RunnerState.HANDED_BACK:
                return
            self._enter(RunnerState.BUSY)
            try:
                await asyncio.to_thread(self.writer.reload)
            except JournalError as exc:
                raise Unavailable(f"journal unavailable: {exc}") from exc
            finally:
                self._refresh_durable_view()
                self._become_idle()

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """Hold the stream like a write does (commands queue meanwhile), with its state loaded."""
        await self.quiet()
        if self._state is RunnerState.HANDED_BACK:  # nothing writes to it any more
            yield
            return
        self._enter(RunnerState.BUSY)
        try:
            yield
        finally:
            self._become_idle()

    # ------------------------------------------------------------------ hold expiry

    def schedule_expiry(self) -> None:
        """Set the timer for the stream's earliest expiry (once per change of it, not per write)."""
        if self._shared.fence.fenced or self._state is RunnerState.HANDED_BACK:
            return
        if self.writer.needs_reload:  # a failed write left the state unknown: try again in a while
            when = time.time() + _EXPIRY_RETRY_S
        elif (earliest := self.writer.next_expiry()) is not None:
            when = earliest.timestamp()
        else:
            return
        if self._timer is not None and self._timer_at is not None and self._timer_at <= when:
            return
        self._cancel_timer()
        delay = max(0.0, when - time.time())
        if when == self._last_woken_for:  # the last wake-up did not expire it (the journal failed): no loop
            delay = max(delay, _EXPIRY_RETRY_S)
        self._timer_at = when
        self._timer = asyncio.get_running_loop().call_later(delay, self._wake)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, None

    def _wake(self) -> None:
        """The earliest expiry is due: the writer's timer command (deciding nothing by itself) goes through
        the queue, and the writer expires what is due before it (``PoolWriter.prepare``)."""
        self._last_woken_for, self._timer, self._timer_at = self._timer_at, None, None
        if not self._shared.fence.fenced and self._state is not RunnerState.HANDED_BACK:
            # Refused only when the queue is full: its drain expires what is due before each batch anyway.
            self.submit(self.writer.timer_command(), None).add_done_callback(_ignore_answer)

    # ------------------------------------------------------------------ hand-back (retirement)

    def hand_back_if_dormant(self) -> None:
        """A stream that will never change by itself again (a pool retired with nothing held or active) is
        recorded as dormant (the watchdog and the caches then leave it out) and no longer hosted."""
        if self._state is RunnerState.IDLE and self.writer.dormant and not self._shared.fence.fenced:
            if self.writer.dormancy_recorded:  # its last append marked it: nothing to write, nor to wait for
                self._handed_back()
                return
            self._enter(RunnerState.HANDING_BACK)
            self._shared.spawn(self._hand_back())

    async def _hand_back(self) -> None:
        stream_id = self.writer.stream_id
        try:
            await self._shared.dormancy.mark(stream_id)
        except JournalError as exc:  # tried again after its next write or recovery
            log.warning("pool %s: cannot record it as dormant, still hosting it: %s", stream_id, exc)
            self._enter(RunnerState.IDLE)
            self._drain_if_idle()
            return
        if self._queue:  # commands came meanwhile: they are answered here, the hand-back waits for the next
            self._enter(RunnerState.IDLE)
            self._drain_if_idle()
            return
        self._handed_back()

    def _handed_back(self) -> None:
        self._enter(RunnerState.HANDED_BACK)
        self._cancel_timer()
        self._shared.handed_back(self)  # its host says why in its log, if it is worth saying


def _request_ids_of(batch: list[_Pending]) -> str | None:
    ids = list(dict.fromkeys(p.request_id for p in batch if p.request_id is not None))
    if not ids:
        return None
    more = f" (+{len(ids) - _MAX_IDS_LOGGED} more)" if len(ids) > _MAX_IDS_LOGGED else ""
    return ",".join(ids[:_MAX_IDS_LOGGED]) + more


def _ignore_answer(reply: asyncio.Future[Any]) -> None:
    if not reply.cancelled():
        reply.exception()  # retrieved: a failed wake-up is retried by the timer, not reported
