"""The embedded warehouse: a Parquet dataset, hive-partitioned by event date, on any pyarrow filesystem.

Layout under the root::

    event_date=2026-12-01/<owner>-<uuid>.parquet   the rows (readers see only these)
    _delivery/<owner>.json                         the delivery cursors, per owner (stream), as of a delta
    _delivery/<owner>.<n>.delta.json               the cursors that commit n moved (n after the base's)
    _staging/<owner>-<uuid>.parquet                files written but not yet committed
    _staging/<owner>-<commit>.intent.json          a commit in progress: files to move/delete, cursors

Files are immutable, so "rows and cursors in one transaction" is a redo log: data files are written to
``_staging``, then the intent is written atomically (that is the commit point), then applied (files moved
into their partitions, the commit's cursor delta written, intent removed). Whoever opens the sink next
finishes any intent left by a crash and deletes staged files that no intent names. pyarrow's dataset
discovery ignores ``_``-prefixed folders, so readers never see staged or half-committed files. Compaction merges one
owner's small files of a partition through the same log. A commit writes only the cursors it moved (every
order is a stream: a full cursor file per commit grew with every order ever placed); the full set is
written again once the deltas since it hold as many cursors as it does (or ``_MAX_DELTAS`` files), so the
cost per commit stays in proportion to what it delivered. During the instant between moving a compacted
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
        self._cursor_file_version: tuple[tuple[int, int] | None, bool] | None = None
        # The newest cursor delta (0: none since the base) and what the deltas since the base hold.
        self._delta_nr = 0
        self._deltas_since_base = 0
        self._cursors_since_base = 0

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
            moved = last_deliveries(fresh)
            delta_nr = self._delta_nr + 1
            self._commit({"moves": moves, "deletes": [], "deliveries": _encode_deliveries(moved), "delta": delta_nr})
            self._delivered.update(moved)
            self._delta_nr = delta_nr
            self._deltas_since_base += 1
            self._cursors_since_base += len(moved)
            self._needs_recovery = False
            if self._deltas_since_base >= _MAX_DELTAS or self._cursors_since_base >= max(
                _MIN_CURSORS_PER_BASE, len(self._delivered)
            ):
                self._write_base()

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

    def _cursor_file_identity(self) -> tuple[tuple[int, int] | None, bool]:
        """Changes with every commit of another writer: the base's identity (on a local disk its inode, as
        each base is a new file renamed into place; elsewhere its modification time), and whether the delta
        after the newest this writer knows exists."""
        return self._base_identity(), self._exists(self._delta_path(self._delta_nr + 1))

    def _base_identity(self) -> tuple[int, int] | None:
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

    def _delta_path(self, delta_nr: int) -> str:
        return f"{self._root}/_delivery/{self._owner}.{delta_nr:012d}.delta.json"

    def _delta_nrs(self) -> list[int]:
        prefix, suffix = f"{self._owner}.", ".delta.json"
        found = self._fs.get_file_info(pafs.FileSelector(f"{self._root}/_delivery", allow_not_found=True))
        names = [info.base_name for info in found if info.is_file]
        return sorted(
            int(middle)
            for name in names
            if name.startswith(prefix)
            and name.endswith(suffix)
            and (middle := name[len(prefix) : -len(suffix)]).isdigit()
        )

    def _write_base(self) -> None:
        """Every cursor, as of the newest delta, in one file; then the deltas it holds are deleted."""
        base = {"through": self._delta_nr, "deliveries": _encode_deliveries(self._delivered)}
        self._write_atomically(self._deliveries_path, json.dumps(base).encode())
        for delta_nr in self._delta_nrs():
            if delta_nr <= self._delta_nr:
                self._fs.delete_file(self._delta_path(delta_nr))
        self._deltas_since_base = self._cursors_since_base = 0
        self._cursor_file_version = self._cursor_file_identity()

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
        if intent["deliveries"] is not None and "delta" not in intent:  # left by a version before deltas
            self._write_atomically(self._deliveries_path, json.dumps(intent["deliveries"]).encode())
        elif intent["deliveries"] is not None:
            delta_nr = intent["delta"]
            self._write_atomically(self._delta_path(delta_nr), json.dumps(intent["deliveries"]).encode())
            self._cursor_file_version = self._base_identity(), self._exists(self._delta_path(delta_nr + 1))
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
        through, delivered = 0, dict[str, Delivery]()
        if self._exists(self._deliveries_path):
            through, delivered = _decode_base(json.loads(self._read(self._deliveries_path)))
        self._delta_nr, self._deltas_since_base, self._cursors_since_base = through, 0, 0
        for delta_nr in self._delta_nrs():
            if delta_nr <= through:  # held by the base already (a crash after writing it)
                self._fs.delete_file(self._delta_path(delta_nr))
                continue
            moved = _decode_deliveries(json.loads(self._read(self._delta_path(delta_nr))))
            delivered.update(moved)
            self._delta_nr = delta_nr
            self._deltas_since_base += 1
            self._cursors_since_base += len(moved)
        self._delivered = delivered
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


# Cursor deltas since the base at most: a restart reads each of them.
_MAX_DELTAS = 500
# The base is written again once the deltas hold this many cursors, or as many as the base, if more.
_MIN_CURSORS_PER_BASE = 10_000


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


def _decode_base(data: dict[str, Any]) -> tuple[int, dict[str, Delivery]]:
    """The base's delta number and cursors; a cursor file from before deltas is every cursor, as of none."""
    if isinstance(data.get("through"), int) and isinstance(data.get("deliveries"), dict):
        return data["through"], _decode_deliveries(data["deliveries"])
    return 0, _decode_deliveries(data)


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
