"""The warehouse stream without Ray, on a real SQLite journal and a real Parquet sink: lost and
duplicated hand-overs, a full buffer, and a failing sink all end in exactly one row per journal event."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from capacity_service.adapters.journal import Journal, NewEvent, open_journal
from capacity_service.adapters.warehouse.parquet import ParquetSink
from capacity_service.adapters.warehouse.rows import Delivery, WarehouseRow, rows_of
from capacity_service.adapters.warehouse.sink import SinkUnavailable
from capacity_service.application.order_writer import OrderWriter
from capacity_service.application.pool_writer import PoolWriter
from capacity_service.application.schedule_writer import ScheduleWriter
from capacity_service.application.warehouse_stream import WarehouseStream
from capacity_service.domain import ConfigurePool, Confirm, ExpireHolds, Release, Reserve, new_reservation_id
from capacity_service.domain.order import Attempt, OrderLine, PlaceOrder, RecordLinesTaken
from capacity_service.domain.schedule import ApplySchedule, BatchTally, FinishApply, RecordBatch, Template, ZoneTemplate
from capacity_service.settings import ParquetSinkSettings, SqlJournalSettings, WarehouseSettings


class GatedSink(ParquetSink):
    """A real Parquet sink whose writes can be held (a slow warehouse) or failed (an outage)."""

    def __init__(self, settings: ParquetSinkSettings) -> None:
        super().__init__(settings)
        self.open = threading.Event()
        self.open.set()
        self.failing = False

    def write(self, rows: Sequence[WarehouseRow]) -> None:
        self.open.wait()
        if self.failing:
            raise SinkUnavailable("warehouse down")
        super().write(rows)

    def deliveries(self) -> dict[str, Delivery]:
        if self.failing:
            raise SinkUnavailable("warehouse down")
        return super().deliveries()


@pytest.fixture
def journal_settings(tmp_path: Path) -> SqlJournalSettings:
    return SqlJournalSettings(url=f"sqlite:///{tmp_path / 'journal.db'}")


@pytest.fixture
def journal(journal_settings: SqlJournalSettings) -> Iterator[Journal]:
    with open_journal(journal_settings) as journal:
        yield journal


class Pools:
    """Pool writers on the real journal; returns the rows each write would hand to the stream."""

    def __init__(self, journal: Journal, count: int) -> None:
        self.writers = [PoolWriter(f"pool-{n}-{uuid.uuid4().hex[:6]}", journal) for n in range(count)]
        self.active: dict[str, list[str]] = {w.pool_id: [] for w in self.writers}
        for writer in self.writers:
            writer.start()

    def configure(self) -> list[list[WarehouseRow]]:
        return [row for w in self.writers for row in self._run(w, ConfigurePool(10_000, "north"))]

    def step(self, n: int) -> list[list[WarehouseRow]]:
        writer = self.writers[n % len(self.writers)]
        held = self.active[writer.pool_id]
        if n % 3 == 2 and held:
            return self._run(writer, Release(held.pop()))
        if n % 8 == 5 and held:
            return self._run(writer, Confirm(held[-1]))  # a plain reservation's confirm writes nothing
        reservation_id = new_reservation_id(writer.pool_id)
        held.append(reservation_id)
        hold_seconds = 600 if n % 4 == 1 else None  # holds and their confirms go to the warehouse too
        return self._run(writer, Reserve(1, f"req-{n}", reservation_id, hold_seconds))

    @staticmethod
    def _run(writer: PoolWriter, command: ConfigurePool | Reserve | Release | Confirm) -> list[list[WarehouseRow]]:
        """The rows of each event the command wrote, event by event (as the pool actors hand them over)."""
        return [rows_of(event) for event in writer.execute_batch([command]).persisted]


def journal_keys(journal: Journal) -> Counter[tuple[str, int]]:
    return Counter((pool_id, e.seq_nr) for pool_id in list(journal.pool_ids()) for e in journal.read(pool_id))


def sink_keys(sink: ParquetSink) -> Counter[tuple[str, int]]:
    return Counter((r["pool_id"], r["seq_nr"]) for r in sink.read_table().select(["pool_id", "seq_nr"]).to_pylist())


async def settle(stream: WarehouseStream, journal: Journal, sink: ParquetSink, timeout: float = 30) -> None:
    """Run catch-up and flushes until the warehouse holds every journal event."""
    expected = journal_keys(journal)
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        await stream.catch_up(None)
        await stream.flush()
        if set(sink_keys(sink)) == set(expected):
            return
    raise AssertionError(f"warehouse did not catch up: {stream.status()}")


def count(stream: WarehouseStream, key: str) -> int:
    """One of the stream's counters: status() is typed as a dict of objects, but its counts are ints."""
    value = stream.status()[key]
    assert isinstance(value, int)
    return value


def make_stream(
    settings: WarehouseSettings, sink: ParquetSink, journal_settings: SqlJournalSettings
) -> WarehouseStream:
    return WarehouseStream(settings, open_sink=lambda: sink, open_journal=lambda: open_journal(journal_settings))


def test_lost_duplicated_and_reordered_hand_overs_end_exactly_once(
    tmp_path: Path, journal: Journal, journal_settings: SqlJournalSettings
) -> None:
    async def scenario() -> None:
        sink = GatedSink(ParquetSinkSettings(path=str(tmp_path / "w")))
        stream = make_stream(WarehouseSettings(flush_rows=200), sink, journal_settings)
        await stream.catch_up([])  # loads the (empty) cursors
        pools = Pools(journal, 5)
        stream.offer(pools.configure())
        for n in range(600):
            rows = pools.step(n)
            if n % 7 == 0:
                continue  # lost on the way: a gap in that pool
            stream.offer(rows)
            if n % 5 == 0:
                stream.offer(rows)  # delivered twice
        assert count(stream, "lagging") > 0  # the gaps were noticed, not papered over
        await settle(stream, journal, sink)
        counts = sink_keys(sink)
        assert counts == journal_keys(journal)  # every event, each once
        assert set(counts.values()) == {1}
        # The states folded by the catch-up path equal the writers' own states.
        last = {r.pool_id: r for r in sorted(sink.rows(), key=lambda r: r.seq_nr)}
        for writer in pools.writers:
            assert (last[writer.pool_id].capacity, last[writer.pool_id].reserved) == (
                writer.state.capacity,
                writer.state.reserved,
            )

    asyncio.run(scenario())


def test_the_buffer_stays_bounded_under_a_burst_and_the_rest_comes_from_the_journal(
    tmp_path: Path, journal: Journal, journal_settings: SqlJournalSettings
) -> None:
    async def scenario() -> None:
        sink = GatedSink(ParquetSinkSettings(path=str(tmp_path / "w")))
        settings = WarehouseSettings(flush_rows=100, max_buffered_rows=300, flush_interval_s=0.01)
        stream = make_stream(settings, sink, journal_settings)
        await stream.catch_up([])
        sink.open.clear()  # the warehouse is slow: nothing drains
        pools = Pools(journal, 3)
        stream.offer(pools.configure())
        stream.start()
        high_water = 0
        for n in range(5000):
            stream.offer(pools.step(n))
            high_water = max(high_water, count(stream, "buffered"))
            if n % 500 == 0:
                await asyncio.sleep(0)
        assert high_water <= settings.max_buffered_rows
        assert count(stream, "not_taken") > 0
        sink.open.set()
        await settle(stream, journal, sink)
        assert sink_keys(sink) == journal_keys(journal)
        stream.close()

    asyncio.run(scenario())


def test_rows_that_arrive_during_a_flush_wait_for_the_next_batch_instead_of_a_write_each(
    tmp_path: Path, journal: Journal, journal_settings: SqlJournalSettings
) -> None:
    async def scenario() -> None:
        sink = GatedSink(ParquetSinkSettings(path=str(tmp_path / "w")))
        stream = make_stream(WarehouseSettings(), sink, journal_settings)
        await stream.catch_up([])
        pools = Pools(journal, 4)
        stream.offer(pools.configure())
        sink.open.clear()  # the first write takes a while: the service goes on meanwhile
        flushing = asyncio.ensure_future(stream.flush())
        await asyncio.sleep(0.05)
        for n in range(200):
            stream.offer(pools.step(n))
            await asyncio.sleep(0)
        sink.open.set()
        assert await flushing == 4  # the four configurations, in one write
        assert count(stream, "flushes") == 1 and count(stream, "buffered") > 0
        await stream.flush()  # the rows that came meanwhile: one batch
        assert count(stream, "flushes") == 2 and count(stream, "buffered") == 0
        assert sink_keys(sink) == journal_keys(journal)

    asyncio.run(scenario())


def test_a_failing_sink_keeps_rows_and_catches_up_when_it_returns(
    tmp_path: Path, journal: Journal, journal_settings: SqlJournalSettings
) -> None:
    async def scenario() -> None:
        sink = GatedSink(ParquetSinkSettings(path=str(tmp_path / "w")))
        stream = make_stream(WarehouseSettings(flush_rows=50), sink, journal_settings)
        await stream.catch_up([])
        pools = Pools(journal, 4)
        stream.offer(pools.configure())
        sink.failing = True
        for n in range(400):
            stream.offer(pools.step(n))
        with pytest.raises(SinkUnavailable):
            await stream.flush()
        assert stream.status()["sink_healthy"] is False and count(stream, "buffered") > 0
        sink.failing = False
        await settle(stream, journal, sink)
        assert sink_keys(sink) == journal_keys(journal)

    asyncio.run(scenario())


def test_a_stream_started_while_its_sink_is_down_says_so_and_delivers_once_it_is_back(
    tmp_path: Path, journal: Journal, journal_settings: SqlJournalSettings
) -> None:
    async def scenario() -> None:
        sink = GatedSink(ParquetSinkSettings(path=str(tmp_path / "w")))
        sink.failing = True
        pools = Pools(journal, 2)
        pools.configure()
        stream = make_stream(WarehouseSettings(), sink, journal_settings)
        with pytest.raises(SinkUnavailable):  # its cursors cannot even be read
            await stream.catch_up(None)
        assert stream.status()["sink_healthy"] is False
        sink.failing = False
        await settle(stream, journal, sink)
        assert stream.status()["sink_healthy"] is True

    asyncio.run(scenario())


def test_a_pool_that_cannot_be_read_does_not_hold_up_the_others(
    tmp_path: Path, journal: Journal, journal_settings: SqlJournalSettings
) -> None:
    async def scenario() -> None:
        bad = "aaa-undecodable"  # sorts first in the registry
        journal.append(bad, 0, journal.claim_epoch(bad), [NewEvent("FromANewerRelease", 9, b"{}")])
        sink = GatedSink(ParquetSinkSettings(path=str(tmp_path / "w")))
        stream = make_stream(WarehouseSettings(), sink, journal_settings)
        pools = Pools(journal, 3)
        pools.configure()
        for n in range(30):
            pools.step(n)  # nothing handed over: everything must come from the journal
        await stream.catch_up(None)
        await stream.flush()
        expected = Counter(key for key in journal_keys(journal) if key[0] != bad)
        assert sink_keys(sink) == expected
        assert stream.status()["catch_up_failures"] == 1 and stream.status()["lagging"] == 1

    asyncio.run(scenario())


def test_left_running_an_idle_stream_delivers_new_rows_and_fills_gaps_without_waiting_for_its_sweep(
    tmp_path: Path, journal: Journal, journal_settings: SqlJournalSettings
) -> None:
    """The loop sleeps while there is nothing to do, but a hand-over wakes it: new rows are flushed after
    flush_interval_s and a gap is caught up from the journal, long before the next periodic sweep."""

    async def scenario() -> None:
        sink = GatedSink(ParquetSinkSettings(path=str(tmp_path / "w")))
        settings = WarehouseSettings(flush_interval_s=0.2, catch_up_interval_s=600, maintenance_interval_s=600)
        stream = make_stream(settings, sink, journal_settings)
        stream.start()
        loop = asyncio.get_running_loop()

        async def until_in_sink(what: str) -> None:
            deadline = loop.time() + 60  # the sweep would come after 600 s
            while set(sink_keys(sink)) != set(journal_keys(journal)):
                assert loop.time() < deadline, f"{what}: {stream.status()}"
                await asyncio.sleep(0.05)

        await until_in_sink("the first sweep (an empty journal)")
        wake_ups = 0
        idle = stream._idle

        async def counted_idle() -> None:
            nonlocal wake_ups
            wake_ups += 1
            await idle()

        stream._idle = counted_idle  # type: ignore[method-assign]
        await asyncio.sleep(1.0)  # nothing buffered, nothing lagging: the loop sleeps (it ticked every 50 ms)
        assert wake_ups <= 2
        gapped = Pools(journal, 1)
        rows = gapped.configure() + gapped.step(0)
        stream.offer(rows[1:])  # its first row was lost: nothing can be taken
        await until_in_sink("a gap, caught up from the journal")
        await asyncio.sleep(0.5)
        fresh = Pools(journal, 2)
        stream.offer(fresh.configure())
        await until_in_sink("rows handed over to a sleeping stream")
        assert sink_keys(sink) == journal_keys(journal)
        stream.close()

    asyncio.run(scenario())


def test_the_rows_of_one_event_are_taken_and_flushed_together(
    tmp_path: Path, journal: Journal, journal_settings: SqlJournalSettings
) -> None:
    """An expiry of several holds is one event of several rows: a batch never ends inside it (a sink's
    cursor counts whole events), and when the buffer has no room for all of it, none of it is taken and
    the catch-up brings it whole."""

    class Recording(ParquetSink):
        def __init__(self, settings: ParquetSinkSettings) -> None:
            super().__init__(settings)
            self.batches: list[list[tuple[int, int]]] = []

        def write(self, rows: Sequence[WarehouseRow]) -> None:
            self.batches.append([(row.seq_nr, row.part) for row in rows])
            super().write(rows)

    now = [datetime(2026, 12, 3, tzinfo=UTC)]

    def holds_then_expiry(pool_id: str, holds: int) -> tuple[list[list[WarehouseRow]], list[list[WarehouseRow]]]:
        """The rows of each event of a new pool with ``holds`` holds, and then of their expiry."""
        writer = PoolWriter(pool_id, journal, clock=lambda: now[0])
        writer.start()
        placed = [rows_of(e) for e in writer.execute_batch([ConfigurePool(10, "z")]).persisted]
        reserves = [Reserve(1, f"{pool_id}-{n}", new_reservation_id(pool_id), 5) for n in range(holds)]
        placed += [rows_of(e) for e in writer.execute_batch(reserves).persisted]
        now[0] += timedelta(seconds=6)
        return placed, [rows_of(e) for e in writer.execute_batch([ExpireHolds()]).persisted]

    async def scenario() -> None:
        placed, expiry = holds_then_expiry("expiring", 3)
        events = placed + expiry
        assert [len(rows) for rows in events] == [1, 1, 1, 1, 3]

        sink = Recording(ParquetSinkSettings(path=str(tmp_path / "w")))
        stream = make_stream(WarehouseSettings(flush_rows=2, max_buffered_rows=8), sink, journal_settings)
        await stream.catch_up([])  # loads the (empty) cursors
        stream.offer(events)
        await stream.flush()
        assert sink.batches == [[(1, 0), (2, 0)], [(3, 0), (4, 0)], [(5, 1), (5, 2), (5, 3)]]

        assert stream.status()["lagging"] == 0
        first, expiry = holds_then_expiry("crowded", 7)
        stream.offer(first)  # 8 rows: the buffer is full
        stream.offer(expiry)
        assert stream.status()["lagging"] == 1  # not taken, not split
        await settle(stream, journal, sink)
        parts = [(r.seq_nr, r.part) for r in sink.rows() if r.pool_id == "crowded"]
        assert sorted(parts) == [(n, 0) for n in range(1, 9)] + [(9, p) for p in range(1, 8)]
        stream.close()

    asyncio.run(scenario())


def test_an_orders_events_reach_the_warehouse_once_each_from_the_journal(
    tmp_path: Path, journal: Journal, journal_settings: SqlJournalSettings
) -> None:
    async def scenario() -> None:
        sink = GatedSink(ParquetSinkSettings(path=str(tmp_path / "w")))
        stream = make_stream(WarehouseSettings(), sink, journal_settings)
        writer = OrderWriter("o1", journal)
        writer.start(journal.claim_epoch(writer.stream_id), recover=False)
        lines = tuple(
            OrderLine(q, (Attempt(p, new_reservation_id(p), f"order:o1:{i}:0"),))
            for i, (p, q) in enumerate([("a", 2), ("b", 1)])
        )
        deadline = datetime.now(UTC) + timedelta(seconds=10)
        for command in (PlaceOrder(lines, None, deadline, "d"), RecordLinesTaken((0, 0), None)):
            prepared = writer.prepare([command])
            assert prepared.append is not None
            writer.append_landed(prepared, journal.append(*prepared.append))
        await settle(stream, journal, sink)
        await settle(stream, journal, sink)  # a second sweep adds nothing
        rows = sink.read_table().to_pylist()
        assert [(r["pool_id"], r["seq_nr"], r["event_type"], r["quantity"]) for r in rows] == [
            ("order~o1", 1, "OrderPlaced", 3),
            ("order~o1", 2, "OrderLinesTaken", None),
        ]

    asyncio.run(scenario())


def test_an_orders_events_handed_over_live_reach_the_warehouse_once_each_without_a_catch_up(
    tmp_path: Path, journal: Journal, journal_settings: SqlJournalSettings
) -> None:
    async def scenario() -> None:
        sink = GatedSink(ParquetSinkSettings(path=str(tmp_path / "w")))
        stream = make_stream(WarehouseSettings(), sink, journal_settings)
        await stream.catch_up(None)  # the cursors are loaded: live rows are taken from here on
        writer = OrderWriter("o2", journal)
        writer.start(journal.claim_epoch(writer.stream_id), recover=False)
        lines = (OrderLine(1, (Attempt("a", new_reservation_id("a"), "order:o2:0:0"),)),)
        deadline = datetime.now(UTC) + timedelta(seconds=10)
        for command in (PlaceOrder(lines, None, deadline, "d"), RecordLinesTaken((0,), None)):
            prepared = writer.prepare([command])
            assert prepared.append is not None
            writer.append_landed(prepared, journal.append(*prepared.append))
            stream.offer(rows_of(event) for event in prepared.result.persisted)  # as the order's host does
        await stream.flush()
        assert count(stream, "caught_up_rows") == 0
        await settle(stream, journal, sink)  # a sweep of the journal adds nothing
        rows = sink.read_table().to_pylist()
        assert [(r["pool_id"], r["seq_nr"], r["event_type"], r["quantity"], r["remaining"]) for r in rows] == [
            ("order~o2", 1, "OrderPlaced", 1, 0),
            ("order~o2", 2, "OrderLinesTaken", None, 0),
        ]

    asyncio.run(scenario())


def test_a_schedules_events_reach_the_warehouse_once_each_from_the_journal(
    tmp_path: Path, journal: Journal, journal_settings: SqlJournalSettings
) -> None:
    async def scenario() -> None:
        sink = GatedSink(ParquetSinkSettings(path=str(tmp_path / "w")))
        stream = make_stream(WarehouseSettings(), sink, journal_settings)
        writer = ScheduleWriter("december", journal)
        writer.start(journal.claim_epoch(writer.stream_id), recover=False)
        template = Template((ZoneTemplate("north", 5),), ("08:00",), 60, date(2026, 12, 1), date(2026, 12, 3))
        now = datetime.now(UTC)
        for command in (
            ApplySchedule(template, 3, now),
            RecordBatch(1, BatchTally(0, 3, 3, 0, 0, 0, (), 12)),
            FinishApply(1, 0, (), now),
        ):
            prepared = writer.prepare([command])
            assert prepared.append is not None
            writer.append_landed(prepared, journal.append(*prepared.append))
        await settle(stream, journal, sink)
        rows = sink.read_table().to_pylist()
        assert [(r["pool_id"], r["seq_nr"], r["event_type"], r["quantity"]) for r in rows] == [
            ("schedule~december", 1, "ScheduleApplying", None),
            ("schedule~december", 2, "SchedulePoolsApplied", 3),
            ("schedule~december", 3, "ScheduleApplied", None),
        ]

    asyncio.run(scenario())
