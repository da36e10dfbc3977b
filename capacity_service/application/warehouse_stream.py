"""The warehouse stream, without Ray: buffer, batch, flush, retry, and catch up from the journal.

Per pool the stream keeps a cursor: the last seq_nr it has accepted (delivered, or buffered to be) and the
pool's totals after it. Rows arriving fire-and-forget from pool writers are accepted only when they
continue that cursor exactly; anything else (a duplicate, a gap left by a lost message, or no room in the
bounded buffer) is not taken, and the pool is marked as lagging. Lagging pools, and every pool once per
``catch_up_interval_s``, are caught up by reading the journal after the cursor. So each pool's rows reach
the sink contiguously and in order, and the sink skips anything at or below its durable cursor: exactly
one row per event, whatever crashes, retries and replays happen. The rows of an event of several parts
(``HoldExpired``) travel together: taken together, flushed in one batch, or not at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from itertools import islice

from capacity_service.adapters.codec import Codec, OrderCodec, ScheduleCodec
from capacity_service.adapters.journal import Journal
from capacity_service.adapters.warehouse.rows import Delivery, WarehouseRow, next_rows, order_rows, schedule_rows
from capacity_service.adapters.warehouse.sink import WarehouseSink
from capacity_service.domain.ids import is_order_stream, is_schedule_stream
from capacity_service.settings import WarehouseSettings

log = logging.getLogger(__name__)

# The loop sleeps until the next thing is due (a flush, a catch-up, maintenance) or a row arrives; it
# wakes at most this often, and this often while pools lag behind.
_TICK_S = 0.05


class WarehouseStream:
    def __init__(
        self,
        settings: WarehouseSettings,
        open_sink: Callable[[], WarehouseSink],
        open_journal: Callable[[], Journal],
        owns: Callable[[str], bool] = lambda _pool_id: True,
    ) -> None:
        self._settings = settings
        self._open_sink = open_sink
        self._open_journal = open_journal
        self._owns = owns
        self._codec = Codec()
        self._order_codec = OrderCodec()
        self._schedule_codec = ScheduleCodec()
        self._sink: WarehouseSink | None = None
        self._journal: Journal | None = None
        self._cursors: dict[str, Delivery] | None = None  # None until loaded from the sink
        self._buffer: list[WarehouseRow] = []
        self._oldest_at = 0.0
        self._lagging: set[str] = set()
        # Pools whose catch-up failed (e.g. an event this version cannot decode) wait before the next try.
        self._retry_after: dict[str, float] = {}
        # Pools being caught up: live events' rows that arrive meanwhile wait here, then continue the cursor.
        self._held: dict[str, list[Sequence[WarehouseRow]]] = {}
        self._sink_healthy = True
        self._last_full_sweep = 0.0
        self._last_maintenance = time.monotonic()
        self._catching_up = asyncio.Lock()
        self._loading = asyncio.Lock()
        self._flushing = asyncio.Lock()  # one flush at a time: a batch leaves the buffer only once
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # something to do before the loop's planned wake-up
        self.stats = {
            "accepted": 0,
            "not_taken": 0,
            "flushed_rows": 0,
            "flushes": 0,
            "caught_up_rows": 0,
            "catch_up_failures": 0,
        }
        self.last_error: str | None = None

    # ------------------------------------------------------------------ the live path

    def offer(self, events: Iterable[Sequence[WarehouseRow]]) -> None:
        """Fire-and-forget hand-over of events' rows (``rows_of`` each); never blocks, never fails. Events
        not taken are caught up later."""
        cursors = self._cursors
        for rows in events:
            pool_id = rows[0].pool_id
            if cursors is None:
                self._not_taken(pool_id)
                continue
            held = self._held.get(pool_id)
            if held is not None:
                held.append(rows)
                continue
            self._accept(cursors, rows)

    def _accept(self, cursors: dict[str, Delivery], rows: Sequence[WarehouseRow]) -> bool:
        """Take the rows of one event, all or none."""
        first = rows[0]
        cursor = cursors.get(first.pool_id)
        last = cursor.seq_nr if cursor is not None else 0
        if first.seq_nr <= last:
            return True  # already accepted: a duplicate
        # An event bigger than the whole buffer is taken when the buffer is empty, or it could never be.
        no_room = self._buffer and len(self._buffer) + len(rows) > self._settings.max_buffered_rows
        if first.seq_nr != last + 1 or no_room:
            self._not_taken(first.pool_id)
            return False
        if not self._buffer:
            self._oldest_at = time.monotonic()
            self._wake.set()  # a flush is now due within flush_interval_s
        self._buffer.extend(rows)
        if len(self._buffer) >= self._settings.flush_rows:
            self._wake.set()
        cursors[first.pool_id] = Delivery.after(rows[-1])
        self.stats["accepted"] += len(rows)
        return True

    def _not_taken(self, pool_id: str) -> None:
        self.stats["not_taken"] += 1
        self._lagging.add(pool_id)
        self._wake.set()

    # ------------------------------------------------------------------ the loop

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        backoff = 0.0
        while True:
            try:
                if self._cursors is None:
                    await self._load_cursors()
                if self._flush_due():
                    await self.flush()
                if self._sink_healthy:
                    await self._catch_up_due()
                    await self._maintain_due()
                backoff = 0.0
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                backoff = min(max(backoff * 2, 0.1), self._settings.max_retry_backoff_s)
                log.warning("warehouse stream: %s; retrying in %.1f s", self.last_error, backoff)
            if backoff:
                await asyncio.sleep(backoff)
            else:
                await self._idle()

    async def _idle(self) -> None:
        """Sleep until the next flush, catch-up or maintenance is due, or until ``offer`` wakes us: an
        idle stream then wakes once per catch_up_interval_s, not every tick."""
        self._wake.clear()
        now = time.monotonic()
        settings = self._settings
        due = [
            self._last_full_sweep + settings.catch_up_interval_s,
            self._last_maintenance + settings.maintenance_interval_s,
        ]
        if self._buffer:
            due.append(now if self._flush_due() else self._oldest_at + settings.flush_interval_s)
        if self._cursors is None:
            due.append(now)
        # A lagging pool is caught up at once, unless its last catch-up failed (then at its retry time).
        due.extend(max(now, self._retry_after.get(pool_id, now)) for pool_id in self._lagging)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), max(min(due) - now, _TICK_S))

    async def _load_cursors(self) -> None:
        async with self._loading:  # once: loading again would accept rows already buffered a second time
            if self._cursors is not None:
                return
            try:
                sink = await self._sink_opened()
                delivered = await asyncio.to_thread(sink.deliveries)
            except Exception:
                self._sink_healthy = False  # a stream that started during an outage says so too
                raise
            self._sink_healthy = True
            self._cursors = {pool_id: d for pool_id, d in delivered.items() if self._owns(pool_id)}
            self._last_full_sweep = 0.0  # catch up everything right away

    def _flush_due(self) -> bool:
        if not self._buffer:
            return False
        age = time.monotonic() - self._oldest_at
        return len(self._buffer) >= self._settings.flush_rows or age >= self._settings.flush_interval_s

    async def flush(self) -> int:
        """Write what is buffered, batch by batch; returns the rows written. Raises when the sink fails
        (the rows stay buffered, and go again on the retry)."""
        async with self._flushing:
            return await self._flush()

    async def _flush(self) -> int:
        # Only what was buffered when the flush began: rows that arrive during its writes wait for their own
        # batch, or a steady trickle would be written as a file per few rows for as long as it lasts.
        written, due = 0, len(self._buffer)
        while written < due and self._buffer:
            batch = self._buffer[: self._batch_end(due - written)]
            sink = await self._sink_opened()
            try:
                await asyncio.to_thread(sink.write, batch)
            except Exception:
                self._sink_healthy = False
                raise
            del self._buffer[: len(batch)]
            self._oldest_at = time.monotonic()
            written += len(batch)
            self.stats["flushed_rows"] += len(batch)
            self.stats["flushes"] += 1
            if not self._sink_healthy:
                self._sink_healthy = True
                self._last_full_sweep = 0.0  # the sink is back: catch up at once
                log.info("warehouse stream: the sink accepts writes again")
        self.last_error = None
        return written

    def _batch_end(self, at_most: int) -> int:
        """Where the next batch ends: ``flush_rows`` rows (or ``at_most``), and the rest of the event the last
        one is part of (a sink's cursor counts whole events)."""
        buffer, end = self._buffer, min(len(self._buffer), self._settings.flush_rows, at_most)
        while end < len(buffer) and buffer[end].seq_nr == buffer[end - 1].seq_nr:
            end += 1  # the parts of one event are next to each other: the same seq_nr is the same pool's
        return end

    async def _catch_up_due(self) -> None:
        if time.monotonic() - self._last_full_sweep >= self._settings.catch_up_interval_s:
            self._last_full_sweep = time.monotonic()
            await self.catch_up(None)
        elif self._lagging:
            await self.catch_up(list(self._lagging))

    async def catch_up(self, pool_ids: Sequence[str] | None) -> int:
        """Read the journal after the cursor of ``pool_ids`` (None: every pool in the registry) into the
        buffer, as far as it has room; returns how many rows were taken."""
        async with self._catching_up:
            return await self._catch_up(pool_ids)

    async def _catch_up(self, pool_ids: Sequence[str] | None) -> int:
        if self._cursors is None:
            await self._load_cursors()
        journal = await self._journal_opened()
        if pool_ids is None:  # the pools whose journal head is beyond the cursor: one query, not one per pool
            heads = await asyncio.to_thread(journal.heads)
            pool_ids = [
                pool_id
                for pool_id, seq_nr in sorted(heads.items())
                if self._owns(pool_id) and seq_nr > self._delivered(pool_id)
            ]
        taken, failed = 0, 0
        for pool_id in pool_ids:
            room = self._settings.max_buffered_rows - len(self._buffer)
            if room <= 0:
                break
            if self._retry_after.get(pool_id, 0.0) > time.monotonic():
                continue
            try:
                taken += await self._catch_up_pool(journal, pool_id, room)
                self._retry_after.pop(pool_id, None)
            except Exception as exc:  # one unreadable pool must not hold up the others; it stays lagging
                self._retry_after[pool_id] = time.monotonic() + self._settings.catch_up_interval_s
                failed += 1
                self.last_error = f"catching up {pool_id}: {type(exc).__name__}: {exc}"
                log.warning("warehouse stream: %s", self.last_error)
        self.stats["caught_up_rows"] += taken
        self.stats["catch_up_failures"] += failed
        return taken

    async def _catch_up_pool(self, journal: Journal, pool_id: str, room: int) -> int:
        assert self._cursors is not None
        self._lagging.discard(pool_id)
        self._held[pool_id] = []
        try:
            before = self._cursors.get(pool_id) or Delivery(pool_id)
            rows = await asyncio.to_thread(self._journal_rows, journal, before, room)
        except Exception:
            self._lagging.add(pool_id)
            raise
        finally:
            held = self._held.pop(pool_id)
        taken = 0
        for event_rows in rows:
            if not self._accept(self._cursors, event_rows):
                return taken
            taken += len(event_rows)
        if len(rows) >= room:
            self._lagging.add(pool_id)  # more to read once the buffer has room
        # Live rows that arrived during the read continue the cursor (or, after a gap, wait for the next).
        for live_rows in held:
            if not self._accept(self._cursors, live_rows):
                break
        return taken

    def _delivered(self, pool_id: str) -> int:
        cursor = None if self._cursors is None else self._cursors.get(pool_id)
        return 0 if cursor is None else cursor.seq_nr

    def _journal_rows(self, journal: Journal, before: Delivery, limit: int) -> list[list[WarehouseRow]]:
        """The rows of up to ``limit`` events after ``before``, event by event."""
        events: list[list[WarehouseRow]] = []
        cursor = before
        # A schedule's events come through here only (no live hand-over).
        is_order, is_schedule = is_order_stream(before.pool_id), is_schedule_stream(before.pool_id)
        for stored in islice(journal.read(before.pool_id, before.seq_nr + 1), limit):
            if is_order:
                order_event = self._order_codec.decode_event(stored.event_type, stored.schema_version, stored.payload)
                rows = [order_rows(cursor, stored.seq_nr, order_event, stored.recorded_at)]
            elif is_schedule:
                decoded = self._schedule_codec.decode_event(stored.event_type, stored.schema_version, stored.payload)
                rows = [schedule_rows(cursor, stored.seq_nr, decoded, stored.recorded_at)]
            else:
                event = self._codec.decode_event(stored.event_type, stored.schema_version, stored.payload)
                rows = next_rows(cursor, stored.seq_nr, event, stored.recorded_at)
            events.append(rows)
            cursor = Delivery.after(rows[-1])
        return events

    async def _maintain_due(self) -> None:
        if time.monotonic() - self._last_maintenance >= self._settings.maintenance_interval_s:
            self._last_maintenance = time.monotonic()
            await asyncio.to_thread((await self._sink_opened()).maintain)

    # ------------------------------------------------------------------ resources and status

    async def _sink_opened(self) -> WarehouseSink:
        if self._sink is None:
            self._sink = await asyncio.to_thread(self._open_sink)
        return self._sink

    async def _journal_opened(self) -> Journal:
        if self._journal is None:
            self._journal = await asyncio.to_thread(self._open_journal)
        return self._journal

    @property
    def pools_lagging(self) -> int:
        """Pools whose next events the catch-up must read from the journal."""
        return len(self._lagging)

    def lag(self) -> tuple[int, float]:
        """(rows accepted and not in the sink yet, seconds since the oldest of them happened; 0 when none)."""
        if not self._buffer:
            return 0, 0.0
        oldest = self._buffer[0].occurred_at
        return len(self._buffer), max(0.0, (datetime.now(UTC) - oldest).total_seconds())

    def status(self) -> dict[str, object]:
        return {
            "loaded": self._cursors is not None,
            "buffered": len(self._buffer),
            "lagging": len(self._lagging),
            "sink_healthy": self._sink_healthy,
            "last_error": self.last_error,
            **self.stats,
        }

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for resource in (self._sink, self._journal):
            if resource is not None:
                resource.close()
