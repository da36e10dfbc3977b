"""The Parquet sink: the contract, and its redo log under crashes (files are immutable, so the commit of
rows and cursors together is an intent written atomically, applied idempotently)."""

from __future__ import annotations

import json
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


def _deltas(root: Path) -> list[Path]:
    return sorted((root / "_delivery").glob("stream-0.*.delta.json"))


def test_a_commit_writes_only_the_cursors_it_moved_and_a_reopened_sink_has_them_all(tmp_path: Path) -> None:
    """Every order is a stream of its own: were each commit to write every cursor, its cost would grow with
    every order ever placed."""
    root = tmp_path / "w"
    sink = ParquetSink(ParquetSinkSettings(path=str(root)))
    for n in range(30):
        sink.write(history(f"order~{n}", 2))
    newest = json.loads(_deltas(root)[-1].read_text())
    assert list(newest) == ["order~29"]  # the newest commit's delta: its own stream's cursor, no other
    reopened = ParquetSink(ParquetSinkSettings(path=str(root)))
    assert {p: d.seq_nr for p, d in reopened.deliveries().items()} == {f"order~{n}": 2 for n in range(30)}
    reopened.write(history("order~3", 2))  # already delivered: nothing twice
    assert Counter(r.pool_id for r in reopened.rows()) == Counter({f"order~{n}": 2 for n in range(30)})


def test_the_cursors_are_written_whole_again_once_the_deltas_hold_as_many(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from capacity_service.adapters.warehouse import parquet

    monkeypatch.setattr(parquet, "_MIN_CURSORS_PER_BASE", 4)
    root = tmp_path / "w"
    sink = ParquetSink(ParquetSinkSettings(path=str(root)))
    for n in range(3):
        sink.write(history(f"pool-{n}", 1))
    assert len(_deltas(root)) == 3 and not (root / "_delivery" / "stream-0.json").exists()
    sink.write(history("pool-3", 1))  # 4 cursors in deltas, as many as there are: the base, and no delta
    base = json.loads((root / "_delivery" / "stream-0.json").read_text())
    assert base["through"] == 4 and sorted(base["deliveries"]) == [f"pool-{n}" for n in range(4)]
    assert _deltas(root) == []
    sink.write(history("pool-0", 3))  # after the base: a delta again, and a reopened sink reads both
    reopened = ParquetSink(ParquetSinkSettings(path=str(root)))
    assert {p: d.seq_nr for p, d in reopened.deliveries().items()} == {
        "pool-0": 3,
        "pool-1": 1,
        "pool-2": 1,
        "pool-3": 1,
    }


def test_deltas_a_crash_left_beside_the_base_that_holds_them_are_read_once_and_deleted(tmp_path: Path) -> None:
    root = tmp_path / "w"
    sink = ParquetSink(ParquetSinkSettings(path=str(root)))
    sink.write(history("pool-a", 2))
    kept = _deltas(root)[0].read_bytes()
    sink._write_base()  # the base through delta 1; then the power fails before delta 1 is deleted:
    (root / "_delivery" / "stream-0.000000000001.delta.json").write_bytes(kept)
    reopened = ParquetSink(ParquetSinkSettings(path=str(root)))
    assert reopened.deliveries()["pool-a"].seq_nr == 2 and _deltas(root) == []
    reopened.write(history("pool-b", 1))
    assert [p.name for p in _deltas(root)] == ["stream-0.000000000002.delta.json"]


def test_a_cursor_file_and_an_intent_from_before_deltas_are_read(tmp_path: Path) -> None:
    root = tmp_path / "w"
    sink = ParquetSink(ParquetSinkSettings(path=str(root)))
    sink.write(history("pool-a", 2))
    sink._write_base()
    whole = json.loads((root / "_delivery" / "stream-0.json").read_text())["deliveries"]
    (root / "_delivery" / "stream-0.json").write_text(json.dumps(whole))  # the old shape: every cursor, no more
    moved = {**whole, "pool-b": [1, *whole["pool-a"][1:]]}
    intent = {"moves": [], "deletes": [], "deliveries": moved}  # an old intent left by a crash
    (root / "_staging" / "stream-0-old.intent.json").write_text(json.dumps(intent))
    reopened = ParquetSink(ParquetSinkSettings(path=str(root)))
    assert {p: d.seq_nr for p, d in reopened.deliveries().items()} == {"pool-a": 2, "pool-b": 1}
