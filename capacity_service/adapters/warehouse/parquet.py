"""The embedded warehouse: a Parquet dataset, hive-partitioned by event date, on any pyarrow filesystem.

Layout under the root::

    event_date=2026-12-01/<owner>-<uuid>.parquet   the rows (readers see only these)
    _delivery/<owner>.json                         each pool's delivery cursor, per owner (stream)
    _staging/<owner>-<uuid>.parquet                files written but not yet committed
    _staging/<owner>-<commit>.intent.json          a commit in progress: files to move/delete, cursors

Files are immutable, so "rows and cursors in one transaction" is a redo log: data files are written to
``_staging``, then the intent is written atomically (that is the commit point), then applied (files moved
into their partitions, cursors replaced, intent removed). Whoever opens the sink next finishes any intent
left by a crash and deletes staged files that no intent names. pyarrow's dataset discovery ignores
``_``-prefixed folders, so readers never see staged or half-committed files. Compaction merges one
owner's small files of a partition through the same log. During the instant between moving a compacted
file in and deleting the files it replaces, a reader of the folder may see both (``rows`` dedups).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from capacity_service.adapters.warehouse.rows import COLUMNS, Delivery, WarehouseRow
from capacity_service.adapters.warehouse.sink import SinkUnavailable, WarehouseSink, last_deliveries, undelivered
from capacity_service.settings import ParquetSinkSettings

_TS = pa.timestamp("us", tz="UTC")
ARROW_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("pool_id", pa.string()),
        ("seq_nr", pa.int64()),
        ("part", pa.int32()),  # null in files written before events had parts: read as 0
        ("event_type", pa.string()),
        ("event_version", pa.int32()),
        ("quantity", pa.int64()),
        ("reservation_id", pa.string()),
        ("request_id", pa.string()),
        ("capacity", pa.int64()),
        ("reserved", pa.int64()),
        ("remaining", pa.int64()),
        ("zone", pa.string()),
        ("slot_start", _TS),
        ("slot_end", _TS),
        ("occurred_at", _TS),
        ("event_date", pa.date32()),
    ]
)
assert tuple(ARROW_SCHEMA.names) == COLUMNS
# The partition column lives in the folder name, not in the files.
FILE_SCHEMA = ARROW_SCHEMA.remove(ARROW_SCHEMA.get_field_index("event_date"))
PARTITIONING = ds.partitioning(pa.schema([("event_date", pa.date32())]), flavor="hive")


def rows_to_table(rows: Sequence[WarehouseRow], columns: Sequence[str] = COLUMNS) -> pa.Table:
    """Rows as an Arrow table of ``ARROW_SCHEMA`` (or those ``columns`` of it). Rows are tuples: one ``zip``
    turns them into columns in C."""
    transposed = list(zip(*rows, strict=True)) if rows else [() for _ in COLUMNS]
    arrays = []
    for name in columns:
        values, kind = transposed[COLUMNS.index(name)], ARROW_SCHEMA.field(name).type
        arrays.append(_repeating(values, kind) if name in _REPEATING else pa.array(values, type=kind))
    return pa.Table.from_arrays(arrays, schema=pa.schema([ARROW_SCHEMA.field(name) for name in columns]))


# Converting an aware datetime is slow in Python; these repeat (a pool's slot; one timestamp per group-commit
# batch), so each distinct value is converted once.
_REPEATING = frozenset({"slot_start", "slot_end", "occurred_at"})


def _repeating(values: Sequence[object], kind: pa.DataType) -> pa.Array:
    distinct = list(dict.fromkeys(values))
    position = {value: i for i, value in enumerate(distinct)}
    indices = list(map(position.__getitem__, values))  # C loops only
    return pa.array(distinct, type=kind).take(pa.array(indices, type=pa.int32()))


def table_to_rows(table: pa.Table) -> Iterator[WarehouseRow]:
    table = table.set_column(COLUMNS.index("part"), "part", table.column("part").fill_null(0))
    columns = [table.column(name).to_pylist() for name in COLUMNS]
    for values in zip(*columns, strict=True):
        yield WarehouseRow(*values)


class ParquetSink(WarehouseSink):
    def __init__(self, settings: ParquetSinkSettings, owner: str = "stream-0") -> None:
        self._settings = settings
        self._owner = owner
        self._fs, self._root = _filesystem(settings.path)
        self._local = isinstance(self._fs, pafs.LocalFileSystem)
        self._lock = threading.Lock()
        self._delivered: dict[str, Delivery] = {}
        # Recovery runs on the first write (or read of the cursors), never for a mere reader of the rows:
        # recovering deletes staged files, which must only ever happen while holding the owner's lock.
        self._needs_recovery = True
        self._cursor_file_version: tuple[int, int] | None = None

    # ------------------------------------------------------------------ port

    def deliveries(self) -> dict[str, Delivery]:
        with self._owner_lock():
            return dict(self._delivered)

    def write(self, rows: Sequence[WarehouseRow]) -> None:
        with self._owner_lock():
            fresh = undelivered(rows, self._delivered)
            if not fresh:
                return
            self._needs_recovery = True  # until this commit is applied completely
            by_date: dict[date, list[WarehouseRow]] = defaultdict(list)
            for row in fresh:
                by_date[row.event_date].append(row)
            moves = [self._stage(rows_of_day, _partition(day)) for day, rows_of_day in sorted(by_date.items())]
            delivered = {**self._delivered, **last_deliveries(fresh)}
            self._commit({"moves": moves, "deletes": [], "deliveries": _encode_deliveries(delivered)})
            self._delivered = delivered
            self._needs_recovery = False

    def rows(self) -> Iterator[WarehouseRow]:
        with _translated():
            table = self.read_table()
        seen: set[tuple[str, int, int]] = set()
        for row in table_to_rows(table):
            if (key := (row.pool_id, row.seq_nr, row.part)) not in seen:  # see the module doc on compaction
                seen.add(key)
                yield row

    # ------------------------------------------------------------------ reading and compaction

    def read_table(self, columns: Sequence[str] | None = None) -> pa.Table:
        """The whole dataset as readers see it (what a query engine pointed at the folder reads)."""
        self._fs.create_dir(self._root, recursive=True)
        dataset = ds.dataset(
            self._root, schema=ARROW_SCHEMA, format="parquet", filesystem=self._fs, partitioning=PARTITIONING
        )
        return dataset.to_table(columns=None if columns is None else list(columns))

    def maintain(self) -> None:
        self.compact()

    def compact(self) -> int:
        """Merge this owner's small files of each partition holding at least ``compact_min_files`` of them
        into one; returns how many files were replaced."""
        replaced = 0
        with self._owner_lock():
            for partition in self._partitions():
                mine = [  # small files only: memory stays bounded, and big files are not rewritten again
                    info.path
                    for info in self._fs.get_file_info(pafs.FileSelector(partition))
                    if info.is_file
                    and info.base_name.startswith(f"{self._owner}-")
                    and (info.size or 0) < self._settings.compact_small_file_bytes
                ]
                if len(mine) < self._settings.compact_min_files:
                    continue
                table = pa.concat_tables(pq.read_table(path, filesystem=self._fs, schema=FILE_SCHEMA) for path in mine)
                table = table.sort_by([("pool_id", "ascending"), ("seq_nr", "ascending"), ("part", "ascending")])
                staged = f"{self._staging}/{self._owner}-{uuid.uuid4().hex}.parquet"
                pq.write_table(table, staged, filesystem=self._fs, compression="zstd")
                self._sync(staged)
                final = f"{partition}/{Path(staged).name}"
                self._needs_recovery = True
                self._commit({"moves": [[staged, final]], "deletes": mine, "deliveries": None})
                self._needs_recovery = False
                replaced += len(mine)
        return replaced

    # ------------------------------------------------------------------ the redo log

    @contextlib.contextmanager
    def _owner_lock(self) -> Iterator[None]:
        """This owner's files are changed by one writer at a time: a thread lock, and on a local disk an
        flock, which also shuts out a zombie incarnation of the stream in another process. Whoever takes
        the lock and finds the cursor file changed by someone else recovers first (a zombie in between
        may have committed)."""
        with self._lock, _translated():
            lock_file = None
            if self._local:
                Path(self._root, "_delivery").mkdir(parents=True, exist_ok=True)
                lock_file = open(Path(self._root, "_delivery", f"{self._owner}.lock"), "a+b")  # noqa: SIM115
                fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
            try:
                if self._needs_recovery or self._cursor_file_changed():
                    self._recover()
                yield
            finally:
                if lock_file is not None:
                    lock_file.close()  # releases the flock

    def _cursor_file_changed(self) -> bool:
        return self._cursor_file_identity() != self._cursor_file_version

    def _cursor_file_identity(self) -> tuple[int, int] | None:
        """Changes with every commit: on a local disk the inode (each commit renames a new file into place),
        elsewhere the modification time."""
        if self._local:
            try:
                found = os.stat(self._deliveries_path)
            except FileNotFoundError:
                return None
            return found.st_ino, found.st_mtime_ns
        info = self._fs.get_file_info(self._deliveries_path)
        return None if info.type == pafs.FileType.NotFound else (0, info.mtime_ns or 0)

    @property
    def _staging(self) -> str:
        return f"{self._root}/_staging"

    @property
    def _deliveries_path(self) -> str:
        return f"{self._root}/_delivery/{self._owner}.json"

    def _stage(self, rows: list[WarehouseRow], partition: str) -> list[str]:
        table = rows_to_table(rows, FILE_SCHEMA.names)
        name = f"{self._owner}-{uuid.uuid4().hex}.parquet"
        staged = f"{self._staging}/{name}"
        pq.write_table(table, staged, filesystem=self._fs, compression="zstd")
        self._sync(staged)
        return [staged, f"{self._root}/{partition}/{name}"]

    def _commit(self, intent: dict[str, Any]) -> None:
        path = f"{self._staging}/{self._owner}-{uuid.uuid4().hex}.intent.json"
        self._write_atomically(path, json.dumps(intent).encode())
        self._apply(path, intent)

    def _apply(self, path: str, intent: dict[str, Any]) -> None:
        """Idempotent: a crash anywhere in here is finished by the next ``_recover``."""
        for staged, final in intent["moves"]:
            if self._exists(staged):
                self._fs.create_dir(final.rsplit("/", 1)[0], recursive=True)
                self._fs.move(staged, final)
            elif not self._exists(final):  # never skip silently: the cursors would pass rows never stored
                raise FileNotFoundError(f"committed file {staged} is neither staged nor in place")
        for old in intent["deletes"]:
            if self._exists(old):
                self._fs.delete_file(old)
        if intent["deliveries"] is not None:
            self._write_atomically(self._deliveries_path, json.dumps(intent["deliveries"]).encode())
            self._cursor_file_version = self._cursor_file_identity()
        self._fs.delete_file(path)

    def _recover(self) -> None:
        self._fs.create_dir(self._staging, recursive=True)
        staged = self._fs.get_file_info(pafs.FileSelector(self._staging))
        mine = sorted((info for info in staged if info.base_name.startswith(f"{self._owner}-")), key=_mtime)
        for info in mine:  # finish commits in the order they were made
            if info.base_name.endswith(".intent.json"):
                self._apply(info.path, json.loads(self._read(info.path)))
        for info in mine:  # staged files that no intent names were never committed; temp files of a crash
            if not info.base_name.endswith(".intent.json") and self._exists(info.path):
                self._fs.delete_file(info.path)
        self._delivered = (
            _decode_deliveries(json.loads(self._read(self._deliveries_path)))
            if self._exists(self._deliveries_path)
            else {}
        )
        self._cursor_file_version = self._cursor_file_identity()
        self._needs_recovery = False

    def _partitions(self) -> list[str]:
        return [
            info.path
            for info in self._fs.get_file_info(pafs.FileSelector(self._root))
            if info.type == pafs.FileType.Directory and info.base_name.startswith("event_date=")
        ]

    def _write_atomically(self, path: str, data: bytes) -> None:
        self._fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        tmp = f"{self._staging}/{self._owner}-{uuid.uuid4().hex}.tmp"
        with self._fs.open_output_stream(tmp) as out:
            out.write(data)
        self._sync(tmp)
        self._fs.move(tmp, path)
        self._sync(path.rsplit("/", 1)[0])

    def _sync(self, path: str) -> None:
        """On a local disk, make ``path`` (a file or a folder's entries) durable before the commit goes on:
        after a power cut an intent must never point at an empty file. Object stores are durable on close."""
        if self._local:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _read(self, path: str) -> bytes:
        with self._fs.open_input_stream(path) as stream:
            return bytes(stream.read())

    def _exists(self, path: str) -> bool:
        return bool(self._fs.get_file_info(path).type != pafs.FileType.NotFound)


def _filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    if "://" in path:
        fs, root = pafs.FileSystem.from_uri(path)
        return fs, root.rstrip("/")
    return pafs.LocalFileSystem(), str(Path(path).resolve())


def _partition(day: date) -> str:
    return f"event_date={day.isoformat()}"


def _mtime(info: pafs.FileInfo) -> float:
    return float(info.mtime_ns or 0)


def _encode_deliveries(deliveries: dict[str, Delivery]) -> dict[str, list[Any]]:
    return {
        pool_id: [d.seq_nr, d.capacity, d.reserved, d.zone, _iso(d.slot_start), _iso(d.slot_end)]
        for pool_id, d in deliveries.items()
    }


def _decode_deliveries(data: dict[str, list[Any]]) -> dict[str, Delivery]:
    return {
        pool_id: Delivery(pool_id, seq_nr, capacity, reserved, zone, _dt(start), _dt(end))
        for pool_id, (seq_nr, capacity, reserved, zone, start, end) in data.items()
    }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """Filesystem and Arrow errors become ``SinkUnavailable``."""
    try:
        yield
    except (OSError, pa.ArrowException) as exc:
        raise SinkUnavailable(f"parquet warehouse: {type(exc).__name__}: {exc}") from exc
