"""ONE contract for every warehouse sink. Each adapter's test class subclasses ``WarehouseSinkContract``
and provides ``sink_factory`` (a callable opening a new sink on the same store)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest

from capacity_service.adapters.warehouse import Delivery, WarehouseSink
from capacity_service.adapters.warehouse.rows import next_rows
from capacity_service.domain import HoldsExpired
from tests.support.warehouse_rows import history

SinkFactory = Callable[[], WarehouseSink]


class WarehouseSinkContract:
    @pytest.fixture
    def sink_factory(self) -> SinkFactory:
        raise NotImplementedError("each adapter's test class provides sink_factory")

    @pytest.fixture
    def sink(self, sink_factory: SinkFactory) -> Iterator[WarehouseSink]:
        sink = sink_factory()
        yield sink
        sink.close()

    def test_a_new_sink_is_empty(self, sink: WarehouseSink) -> None:
        assert sink.deliveries() == {}
        assert list(sink.rows()) == []

    def test_rows_come_back_as_written_with_each_pools_delivery(self, sink: WarehouseSink) -> None:
        a, b = history("pool-a", 7), history("pool-b", 4)
        sink.write(a[:5] + b)
        sink.write(a[5:])
        assert sorted(sink.rows(), key=lambda r: (r.pool_id, r.seq_nr)) == a + b
        assert sink.deliveries() == {"pool-a": Delivery.after(a[-1]), "pool-b": Delivery.after(b[-1])}

    def test_a_batch_written_twice_leaves_one_row_per_event(self, sink: WarehouseSink) -> None:
        rows = history("pool-a", 6)
        sink.write(rows)
        sink.write(rows)
        sink.write(rows[2:])
        counts = Counter((r.pool_id, r.seq_nr) for r in sink.rows())
        assert counts == Counter(("pool-a", n) for n in range(1, 7))
        assert sink.deliveries()["pool-a"].seq_nr == 6

    def test_the_rows_of_an_event_of_several_parts_are_kept_and_written_once(self, sink: WarehouseSink) -> None:
        rows = history("pool-a", 4)
        expiry = next_rows(
            Delivery.after(rows[-1]),
            5,
            HoldsExpired(("r-2", "r-4"), (2, 2)),
            rows[-1].occurred_at + timedelta(seconds=1),
        )
        sink.write(rows + expiry)
        sink.write(expiry)  # delivered again: skipped
        stored = sorted(sink.rows(), key=lambda r: (r.seq_nr, r.part))
        assert stored == rows + expiry
        assert [(r.event_id, r.reservation_id) for r in stored[-2:]] == [("pool-a/5/1", "r-2"), ("pool-a/5/2", "r-4")]
        assert sink.deliveries()["pool-a"] == Delivery.after(expiry[-1])

    def test_an_overlapping_batch_adds_only_the_new_rows(self, sink: WarehouseSink) -> None:
        rows = history("pool-a", 10)
        sink.write(rows[:5])
        sink.write(rows[3:])
        assert [r.seq_nr for r in sorted(sink.rows(), key=lambda r: r.seq_nr)] == list(range(1, 11))
        assert sink.deliveries()["pool-a"] == Delivery.after(rows[-1])

    def test_deliveries_survive_reopening(self, sink: WarehouseSink, sink_factory: SinkFactory) -> None:
        rows = history("pool-a", 3)
        sink.write(rows)
        sink.close()
        with sink_factory() as reopened:
            assert reopened.deliveries() == {"pool-a": Delivery.after(rows[-1])}
            reopened.write(rows)
            assert len(list(reopened.rows())) == 3

    def test_rows_keep_nulls_slots_and_utc_timestamps(self, sink: WarehouseSink) -> None:
        rows = history("pool:with/odd.chars-1", 3)
        sink.write(rows)
        back = sorted(sink.rows(), key=lambda r: r.seq_nr)
        assert back == rows
        assert back[0].quantity is None and back[0].reservation_id is None
        assert back[2].request_id is None and back[2].event_type == "CapacityReleased"
        assert all(r.occurred_at.utcoffset() == timedelta(0) for r in back)
