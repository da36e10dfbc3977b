"""The Parquet sink: the contract, and its redo log under crashes (files are immutable, so the commit of
rows and cursors together is an intent written atomically, applied idempotently)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from capacity_service.adapters.warehouse.parquet import ParquetSink
from capacity_service.settings import ParquetSinkSettings
from tests.support.warehouse_rows import history
from tests.warehouse_contract import SinkFactory, WarehouseSinkContract


class TestParquetSink(WarehouseSinkContract):
    @pytest.fixture
    def sink_factory(self, tmp_path: Path) -> SinkFactory:
        return lambda: ParquetSink(ParquetSinkSettings(path=str(tmp_path / "warehouse")))


def _files(root: Path) -> list[str]:
    """Data, staged and cursor files (not the owner's lock file)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.suffix != ".lock")


def test_rows_are_partitioned_by_event_date_and_readable_by_any_parquet_reader(tmp_path: Path) -> None:
    root = tmp_path / "warehouse"
    with ParquetSink(ParquetSinkSettings(path=str(root))) as sink:
        sink.write(history("pool-a", 8))  # crosses midnight
    partitions = sorted(p.name for p in root.iterdir() if p.name.startswith("event_date="))
    assert partitions == ["event_date=2026-12-01", "event_date=2026-12-02"]
    table = ds.dataset(root, format="parquet", partitioning="hive").to_table()  # a plain reader
    assert table.num_rows == 8
    assert not any(p.startswith("_staging/") for p in _files(root))


def test_a_crash_before_the_commit_point_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = ParquetSinkSettings(path=str(tmp_path / "w"))
    sink = ParquetSink(settings)
    rows = history("pool-a", 5)

    def crash(*_args: object) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(sink, "_commit", crash)  # data files staged, intent never written
    with pytest.raises(Exception, match="power cut"):
        sink.write(rows)
    monkeypatch.undo()
    reopened = ParquetSink(settings)
    assert reopened.deliveries() == {}
    assert list(reopened.rows()) == []
    assert _files(tmp_path / "w") == []  # staged files of the failed commit were removed
    reopened.write(rows)
    assert len(list(reopened.rows())) == 5


def test_a_crash_after_the_commit_point_is_finished_by_the_next_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = ParquetSinkSettings(path=str(tmp_path / "w"))
    sink = ParquetSink(settings)
    rows = history("pool-a", 8)

    def crash(*_args: object) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(sink, "_apply", crash)  # intent written, nothing moved yet
    with pytest.raises(Exception, match="power cut"):
        sink.write(rows)
    monkeypatch.undo()
    reopened = ParquetSink(settings)
    assert reopened.deliveries()["pool-a"].seq_nr == 8
    reopened.write(rows)  # the stream's replay after the crash: no duplicates
    assert Counter(r.seq_nr for r in reopened.rows()) == Counter(range(1, 9))


def test_the_same_sink_retries_a_failed_commit_without_duplicates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = ParquetSink(ParquetSinkSettings(path=str(tmp_path / "w")))
    rows = history("pool-a", 4)
    real_apply = sink._apply
    calls = {"n": 0}

    def apply_then_fail(path: str, intent: dict[str, object]) -> None:
        calls["n"] += 1
        real_apply(path, intent)
        if calls["n"] == 1:
            raise OSError("the answer was lost")  # committed, but the caller cannot know

    monkeypatch.setattr(sink, "_apply", apply_then_fail)
    with pytest.raises(Exception, match="answer was lost"):
        sink.write(rows)
    sink.write(rows)
    assert Counter(r.seq_nr for r in sink.rows()) == Counter(range(1, 5))


def test_compaction_merges_small_files_and_keeps_every_row_once(tmp_path: Path) -> None:
    root = tmp_path / "w"
    sink = ParquetSink(ParquetSinkSettings(path=str(root), compact_min_files=4))
    rows = [row for n in range(6) for row in history(f"pool-{n}", 2)]  # one partition (2026-12-02 00:00)
    for row in rows:
        sink.write([row])
    files_before = [f for f in _files(root) if f.endswith(".parquet")]
    replaced = sink.compact()
    files_after = [f for f in _files(root) if f.endswith(".parquet")]
    assert replaced == len(files_before) and len(files_after) < len(files_before)
    assert len(files_after) == len({f.split("/")[0] for f in files_before})  # one file per partition
    assert Counter((r.pool_id, r.seq_nr) for r in sink.rows()) == Counter((r.pool_id, r.seq_nr) for r in rows)
    assert ds.dataset(root, format="parquet", partitioning="hive").to_table().num_rows == len(rows)


def test_a_reader_of_the_rows_never_touches_a_commit_in_flight(tmp_path: Path) -> None:
    settings = ParquetSinkSettings(path=str(tmp_path / "w"))
    writer = ParquetSink(settings)
    writer.write(history("pool-a", 2))
    staged = tmp_path / "w" / "_staging" / "stream-0-inflight.parquet"  # the writer is mid-commit
    staged.write_bytes(b"not yet committed")
    reader = ParquetSink(settings)  # same owner, e.g. a test or a tool looking at the rows
    assert len(list(reader.rows())) == 2
    assert staged.exists()


def test_a_zombie_incarnation_with_stale_cursors_adds_no_duplicates(tmp_path: Path) -> None:
    settings = ParquetSinkSettings(path=str(tmp_path / "w"))
    zombie, current = ParquetSink(settings), ParquetSink(settings)
    rows = history("pool-a", 6)
    assert zombie.deliveries() == {}  # the zombie loaded its cursors, then froze
    current.write(rows[:4])
    zombie.write(rows)  # it wakes up and writes what it had buffered
    assert Counter(r.seq_nr for r in current.rows()) == Counter(range(1, 7))
    current.write(rows)
    assert Counter(r.seq_nr for r in current.rows()) == Counter(range(1, 7))


def test_a_commit_whose_files_vanished_is_an_error_not_a_silent_skip(tmp_path: Path) -> None:
    sink = ParquetSink(ParquetSinkSettings(path=str(tmp_path / "w")))
    sink.deliveries()
    gone = str(tmp_path / "w" / "_staging" / "stream-0-gone.parquet")
    with pytest.raises(FileNotFoundError):
        sink._apply("unused", {"moves": [[gone, gone + ".final"]], "deletes": [], "deliveries": None})


def test_files_written_before_events_had_parts_read_as_part_zero_and_compact(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from capacity_service.adapters.warehouse.parquet import FILE_SCHEMA, rows_to_table

    root = tmp_path / "warehouse"
    rows = history("pool-a", 3)  # all on 2026-12-01
    old_columns = [name for name in FILE_SCHEMA.names if name != "part"]
    (root / "event_date=2026-12-01").mkdir(parents=True)
    for n, row in enumerate(rows):  # small files of the old shape, as an earlier version left them
        pq.write_table(rows_to_table([row], old_columns), root / "event_date=2026-12-01" / f"stream-0-old{n}.parquet")
    settings = ParquetSinkSettings(path=str(root), compact_min_files=2)
    with ParquetSink(settings) as sink:
        assert sorted(sink.rows(), key=lambda r: r.seq_nr) == rows
        assert sink.compact() == 3
        assert sorted(sink.rows(), key=lambda r: r.seq_nr) == rows
