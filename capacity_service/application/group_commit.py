"""The journal calls that the streams of one host share: appends committed together (group commit), and
writer epochs claimed together. Each stream keeps at most one append in flight (its runner waits for the
answer), so sharing a call never reorders a stream's events."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from typing import Any

from capacity_service.adapters.journal import AppendRequest, Journal, JournalError, JournalUnavailable
from capacity_service.application.metrics import HostMetrics

log = logging.getLogger(__name__)

# Calls claiming writer epochs under way at once (``EpochClaims``).
_CLAIMS_UNDER_WAY = 4
# Turns of the event loop a group commit waits before its journal call, so that the appends on their way
# join it: a stream's next append is a few turns behind the answer to its last (an order's driver, its
# pools' reserves), and a commit per turn was an fsync per turn. A turn with nothing to commit costs
# microseconds; a commit on SQLite (FULL) costs a millisecond of CPU, mostly its fsync.
_GATHER_TURNS = 4


async def _gather_what_is_on_its_way() -> None:
    for _ in range(_GATHER_TURNS):
        await asyncio.sleep(0)


class GroupCommit:
    """Appends that arrive while one ``append_many`` runs, or within ``_GATHER_TURNS`` turns of the event
    loop after the first of them, go together in the next. A journal whose streams share nothing
    (``append_soon``) takes each append at once instead, so no stream's append waits for another's."""

    def __init__(self, journal: Journal, metrics: HostMetrics) -> None:
        self._journal = journal
        self._metrics = metrics
        self._waiting: list[tuple[AppendRequest, asyncio.Future[int | JournalError]]] = []
        self._running = False
        self._task: asyncio.Task[None] | None = None

    async def commit(self, request: AppendRequest) -> int | JournalError:
        """The new highest seq_nr of the stream, or the journal's error (a value, not raised)."""
        started = self._journal.append_soon(request)
        if started is not None:
            return await self._append_alone(request, started)
        answer: asyncio.Future[int | JournalError] = asyncio.get_running_loop().create_future()
        self._waiting.append((request, answer))
        if not self._running:
            self._running = True
            self._task = asyncio.ensure_future(self._run())
        return await answer

    async def _append_alone(
        self, request: AppendRequest, started: concurrent.futures.Future[int]
    ) -> int | JournalError:
        began = time.perf_counter()
        result: int | JournalError
        try:
            result = await asyncio.wrap_future(started)
        except JournalError as exc:
            result = exc
        except Exception as exc:  # a bug must not pass for a refusal: the outcome is unknown
            log.exception("append of stream %s failed unexpectedly", request.pool_id)
            result = JournalUnavailable(f"{type(exc).__name__}: {exc}")
        self._metrics.appended(time.perf_counter() - began, 1, int(isinstance(result, JournalError)))
        return result

    async def _run(self) -> None:
        try:
            await _gather_what_is_on_its_way()
            while self._waiting:
                batch, self._waiting = self._waiting, []
                requests = [request for request, _ in batch]
                started = time.perf_counter()
                try:
                    # Inline when the journal can answer at once: handing a local file's append to a
                    # worker thread costs a busy event loop more than the append itself.
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


class EpochClaims:
    """Writer epochs claimed for many streams in few journal calls: streams that start while claims run (a
    cold start, the watchdog reviving a host's pools, a burst of new pools) are claimed together in the
    next, with up to ``_CLAIMS_UNDER_WAY`` calls under way (each takes as long as its slowest claim)."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self._waiting: list[tuple[str, asyncio.Future[int]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def claim_many(self, stream_ids: list[str]) -> list[int]:
        answers = [asyncio.get_running_loop().create_future() for _ in stream_ids]
        self._waiting.extend(zip(stream_ids, answers, strict=True))
        if len(self._tasks) < _CLAIMS_UNDER_WAY:
            task = asyncio.ensure_future(self._run())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return list(await asyncio.gather(*answers))

    async def _run(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                epochs = await asyncio.to_thread(self._journal.claim_epochs, [stream_id for stream_id, _ in batch])
            except Exception as exc:  # every waiter gets the error (a bug too: none may wait forever)
                for _, answer in batch:
                    fail(answer, exc)
                continue
            for (_, answer), epoch in zip(batch, epochs, strict=True):
                if not answer.done():
                    answer.set_result(epoch)


class DormantMarks:
    """Streams recorded as dormant (``Journal.mark_dormant_many``) in few journal calls: those handed back
    while one call runs go together in the next (a confirmed order is one, each, at the rate orders come)."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self._waiting: list[tuple[str, asyncio.Future[None]]] = []
        self._running = False
        self._task: asyncio.Task[None] | None = None

    async def mark(self, stream_id: str) -> None:
        """Raises the journal's error when the mark could not be written."""
        answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((stream_id, answer))
        if not self._running:
            self._running = True
            self._task = asyncio.ensure_future(self._run())
        await answer

    async def _run(self) -> None:
        try:
            await _gather_what_is_on_its_way()
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    await asyncio.to_thread(self._journal.mark_dormant_many, [stream_id for stream_id, _ in batch])
                except Exception as exc:  # every waiter gets the error
                    for _, answer in batch:
                        fail(answer, exc)
                    continue
                for _, answer in batch:
                    if not answer.done():
                        answer.set_result(None)
        finally:
            self._running = False


def fail(future: asyncio.Future[Any], error: BaseException) -> None:
    """Answer ``future`` with ``error`` unless its caller has an answer already."""
    if not future.done():
        future.set_exception(error)
