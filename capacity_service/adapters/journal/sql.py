"""SQL journal through SQLAlchemy Core. SQLite is the embedded default; PostgreSQL is supported.

Each stream has a head row (epoch, seq_nr). An append is one transaction: a conditional UPDATE of the
head (``WHERE epoch = :mine AND seq_nr = :expected``) followed by the event INSERTs. PostgreSQL's row lock
and SQLite's ``BEGIN IMMEDIATE`` write lock serialize racing writers: exactly one sees its condition hold.
"""

from __future__ import annotations

import contextlib
import fcntl
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    Row,
    String,
    Table,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from capacity_service.adapters.journal.port import (
    AppendRequest,
    Journal,
    JournalError,
    JournalUnavailable,
    NewEvent,
    SequenceConflict,
    SnapshotRecord,
    StoredEvent,
    StreamExists,
    append_refusal,
    creation_refusal,
)
from capacity_service.settings import SqlJournalSettings

metadata = MetaData()

events_table = Table(
    "journal_events",
    metadata,
    Column("pool_id", String(128), primary_key=True),
    Column("seq_nr", BigInteger, primary_key=True, autoincrement=False),
    Column("event_type", String(64), nullable=False),
    Column("schema_version", Integer, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("writer_epoch", BigInteger, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
)

# One row per stream: the newest claimed writer epoch and the highest seq_nr. seq_nr > 0 = registered.
heads_table = Table(
    "journal_heads",
    metadata,
    Column("pool_id", String(128), primary_key=True),
    Column("epoch", BigInteger, nullable=False),
    Column("seq_nr", BigInteger, nullable=False),
)

# Pools that need no hosting any more (retired, nothing held or active): see ``Journal.mark_dormant``.
dormant_table = Table(
    "journal_dormant_pools",
    metadata,
    Column("pool_id", String(128), primary_key=True),
)

snapshots_table = Table(
    "journal_snapshots",
    metadata,
    Column("pool_id", String(128), primary_key=True),
    Column("seq_nr", BigInteger, primary_key=True, autoincrement=False),
    Column("schema_version", Integer, nullable=False),
    Column("payload", LargeBinary, nullable=False),
)


# Pools per head query of a batch append (bound parameters per statement stay well under SQLite's limit).
_MAX_IDS_PER_QUERY = 500


def _event_row(pool_id: str, seq_nr: int, event: NewEvent, epoch: int, now: datetime) -> dict[str, Any]:
    return {
        "pool_id": pool_id,
        "seq_nr": seq_nr,
        "event_type": event.event_type,
        "schema_version": event.schema_version,
        "payload": event.payload,
        "writer_epoch": epoch,
        "recorded_at": now,
    }


def _stored_event(row: Row[Any]) -> StoredEvent:
    return StoredEvent(
        row.pool_id,
        row.seq_nr,
        row.event_type,
        row.schema_version,
        bytes(row.payload),
        row.writer_epoch,
        _as_utc(row.recorded_at),
    )


def _chunks(pool_ids: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(pool_ids), _MAX_IDS_PER_QUERY):
        yield pool_ids[start : start + _MAX_IDS_PER_QUERY]


class SqlJournal(Journal):
    def __init__(self, settings: SqlJournalSettings) -> None:
        self._settings = settings
        self._engine = _create_engine(settings)
        self._dialect = self._engine.dialect.name
        self._write_lock: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
        database = self._engine.url.database
        if self._dialect == "sqlite" and database and database != ":memory:":
            self._write_lock = _SqliteWriterQueue(Path(database).with_suffix(".writer-lock"))
        if self._dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported SQL journal backend {self._dialect!r}: use sqlite or postgresql")
        self._batch = _BatchAppend(self._engine)
        with self._translated_errors():
            metadata.create_all(self._engine)

    @property
    def engine(self) -> Engine:
        return self._engine

    def claim_epoch(self, pool_id: str) -> int:
        return self.claim_epochs([pool_id])[0]

    def claim_epochs(self, pool_ids: Sequence[str]) -> list[int]:
        """Three statements per few hundred pools, in one transaction: create the missing heads at epoch 0,
        bump every head's epoch, read them back. A racing claim waits for this one's row locks
        (PostgreSQL; SQLite: the write lock) and then bumps again, so no two claims share an epoch; a pool
        named twice here is claimed once. Batched because a cold start claims every pool at once."""
        insert_missing = (postgresql.insert if self._dialect == "postgresql" else sqlite.insert)(heads_table)
        epochs: dict[str, int] = {}
        with self._translated_errors(), self._write_lock, self._engine.begin() as conn:
            for chunk in _chunks(list(dict.fromkeys(pool_ids))):
                these = heads_table.c.pool_id.in_(chunk)
                conn.execute(
                    insert_missing.values(
                        [{"pool_id": pool_id, "epoch": 0, "seq_nr": 0} for pool_id in chunk]
                    ).on_conflict_do_nothing(index_elements=[heads_table.c.pool_id])
                )
                conn.execute(update(heads_table).where(these).values(epoch=heads_table.c.epoch + 1))
                for pool_id, epoch in conn.execute(select(heads_table.c.pool_id, heads_table.c.epoch).where(these)):
                    epochs[pool_id] = int(epoch)
        return [epochs[pool_id] for pool_id in pool_ids]

    def append(
        self,
        pool_id: str,
        expected_seq_nr: int,
        epoch: int,
        events: Sequence[NewEvent],
        creates: bool = False,
        dormant: bool = False,
    ) -> int:
        """One pool's append, the way ``append_many`` makes every append (one code path for both)."""
        [result] = self.append_many([AppendRequest(pool_id, expected_seq_nr, epoch, events, creates, dormant)])
        if isinstance(result, JournalError):
            raise result
        return result

    def append_many(self, appends: Sequence[AppendRequest]) -> list[int | JournalError]:
        """All appends in ONE transaction (one fsync; ``_BatchAppend``). A conflicting append is answered
        with its error and the others still commit."""
        with self._write_lock:
            return self._append_many_holding_the_write_lock(appends)

    def append_many_now(self, appends: Sequence[AppendRequest]) -> list[int | JournalError] | None:
        """On a SQLite file, when no other writer holds it; never on PostgreSQL (a network round trip)."""
        queue = self._write_lock
        if not isinstance(queue, _SqliteWriterQueue) or not queue.enter_if_free():
            return None
        try:
            return self._append_many_holding_the_write_lock(appends)
        finally:
            queue.__exit__()

    def _append_many_holding_the_write_lock(self, appends: Sequence[AppendRequest]) -> list[int | JournalError]:
        with self._translated_errors():
            try:
                return self._batch.append(appends)
            except IntegrityError:
                # Rows beyond a head exist (someone wrote around the heads): find out whose, one by one.
                return [self._append_alone(request) for request in appends]

    def _append_alone(self, request: AppendRequest) -> int | JournalError:
        try:
            [result] = self._batch.append([request])
        except IntegrityError:
            if request.creates:  # another writer created the stream meanwhile
                return StreamExists(request.pool_id, None)
            return SequenceConflict(request.pool_id, request.expected_seq_nr, None)
        return result

    def read(self, pool_id: str, from_seq_nr: int = 1) -> Iterator[StoredEvent]:
        query = (
            select(events_table)
            .where(events_table.c.pool_id == pool_id, events_table.c.seq_nr >= from_seq_nr)
            .order_by(events_table.c.seq_nr)
        )
        with self._translated_errors(), self._reader() as conn:
            result = conn.execution_options(yield_per=self._settings.fetch_size).execute(query)
            for row in result:
                yield _stored_event(row)

    def highest_seq_nr(self, pool_id: str) -> int:
        query = select(heads_table.c.seq_nr).where(heads_table.c.pool_id == pool_id)
        with self._translated_errors(), self._reader() as conn:
            return int(conn.execute(query).scalar() or 0)

    def save_snapshot(self, snapshot: SnapshotRecord, keep: int) -> None:
        this_pool = snapshots_table.c.pool_id == snapshot.pool_id
        with self._translated_errors(), self._write_lock, self._engine.begin() as conn:
            conn.execute(delete(snapshots_table).where(this_pool, snapshots_table.c.seq_nr == snapshot.seq_nr))
            conn.execute(
                insert(snapshots_table).values(
                    pool_id=snapshot.pool_id,
                    seq_nr=snapshot.seq_nr,
                    schema_version=snapshot.schema_version,
                    payload=snapshot.payload,
                )
            )
            # The seq_nr of the keep-th newest snapshot; everything older goes.
            cutoff = conn.execute(
                select(snapshots_table.c.seq_nr)
                .where(this_pool)
                .order_by(snapshots_table.c.seq_nr.desc())
                .offset(keep - 1)
                .limit(1)
            ).scalar()
            if cutoff is not None:
                conn.execute(delete(snapshots_table).where(this_pool, snapshots_table.c.seq_nr < cutoff))

    def snapshots(self, pool_id: str) -> Iterator[SnapshotRecord]:
        query = (
            select(snapshots_table)
            .where(snapshots_table.c.pool_id == pool_id)
            .order_by(snapshots_table.c.seq_nr.desc())
        )
        with self._translated_errors(), self._reader() as conn:
            for r in conn.execution_options(yield_per=1).execute(query):
                yield SnapshotRecord(r.pool_id, r.seq_nr, r.schema_version, bytes(r.payload))

    def newest_snapshots(self, pool_ids: Sequence[str]) -> dict[str, SnapshotRecord]:
        found: dict[str, SnapshotRecord] = {}
        with self._translated_errors(), self._reader() as conn:
            for chunk in _chunks(pool_ids):
                newest = (
                    select(snapshots_table.c.pool_id, func.max(snapshots_table.c.seq_nr).label("seq_nr"))
                    .where(snapshots_table.c.pool_id.in_(chunk))
                    .group_by(snapshots_table.c.pool_id)
                    .subquery()
                )
                query = select(snapshots_table).join(
                    newest,
                    (snapshots_table.c.pool_id == newest.c.pool_id) & (snapshots_table.c.seq_nr == newest.c.seq_nr),
                )
                for r in conn.execute(query):
                    found[r.pool_id] = SnapshotRecord(r.pool_id, r.seq_nr, r.schema_version, bytes(r.payload))
        return found

    def read_streams(self, from_seq_nrs: Mapping[str, int]) -> dict[str, list[StoredEvent]]:
        """Streams read from their start in one query per few hundred pools; the rest (pools recovered
        from a snapshot: the busy few) one by one, so that no event before a snapshot is fetched."""
        streams: dict[str, list[StoredEvent]] = {pool_id: [] for pool_id in from_seq_nrs}
        whole = [pool_id for pool_id, from_seq_nr in from_seq_nrs.items() if from_seq_nr <= 1]
        with self._translated_errors(), self._reader() as conn:
            for chunk in _chunks(whole):
                query = (
                    select(events_table)
                    .where(events_table.c.pool_id.in_(chunk))
                    .order_by(events_table.c.pool_id, events_table.c.seq_nr)
                )
                for row in conn.execute(query):
                    streams[row.pool_id].append(_stored_event(row))
        for pool_id, from_seq_nr in from_seq_nrs.items():
            if from_seq_nr > 1:
                streams[pool_id] = list(self.read(pool_id, from_seq_nr))
        return streams

    def pool_ids(self) -> Iterator[str]:
        query = select(heads_table.c.pool_id).where(heads_table.c.seq_nr > 0).order_by(heads_table.c.pool_id)
        with self._translated_errors(), self._reader() as conn:
            yield from conn.execute(query).scalars()

    def mark_dormant(self, pool_id: str) -> None:
        self.mark_dormant_many([pool_id])

    def mark_dormant_many(self, pool_ids: Sequence[str]) -> None:
        insert = (postgresql.insert if self._dialect == "postgresql" else sqlite.insert)(dormant_table)
        statement = insert.on_conflict_do_nothing(index_elements=[dormant_table.c.pool_id])
        with self._translated_errors(), self._write_lock, self._engine.begin() as conn:
            conn.execute(statement, [{"pool_id": pool_id} for pool_id in pool_ids])

    def dormant_pool_ids(self) -> Iterator[str]:
        query = select(dormant_table.c.pool_id).order_by(dormant_table.c.pool_id)
        with self._translated_errors(), self._reader() as conn:
            yield from conn.execute(query).scalars()

    def live_stream_ids(self) -> list[str]:
        dormant = select(dormant_table.c.pool_id).where(dormant_table.c.pool_id == heads_table.c.pool_id)
        query = (
            select(heads_table.c.pool_id)
            .where(heads_table.c.seq_nr > 0, ~dormant.exists())
            .order_by(heads_table.c.pool_id)
        )
        with self._translated_errors(), self._reader() as conn:
            return list(conn.execute(query).scalars())

    def heads(self) -> dict[str, int]:
        query = select(heads_table.c.pool_id, heads_table.c.seq_nr).where(heads_table.c.seq_nr > 0)
        with self._translated_errors(), self._reader() as conn:
            return {row.pool_id: row.seq_nr for row in conn.execute(query)}

    def close(self) -> None:
        self._engine.dispose()
        if isinstance(self._write_lock, _SqliteWriterQueue):
            self._write_lock.close()

    def _reader(self) -> Connection:
        """A connection for reading only: on SQLite it begins a deferred transaction (a WAL snapshot) instead
        of taking the write lock, so long reads (recovery, the warehouse's catch-up) never block writers."""
        return self._engine.connect().execution_options(read_only=True)

    @contextlib.contextmanager
    def _translated_errors(self) -> Iterator[None]:
        try:
            yield
        except IntegrityError:
            raise
        except DBAPIError as exc:
            raise JournalUnavailable(f"{self._dialect} journal: {type(exc.orig).__name__}: {exc.orig}") from exc
        except SQLAlchemyError as exc:
            raise JournalUnavailable(f"{self._dialect} journal: {exc}") from exc


class _BatchAppend:
    """``append_many``'s one transaction, on the driver's own connection and cursor: the hottest path of the service,
    where SQLAlchemy's work per statement costs as much as SQLite's own. The heads are read once (locked), every
    condition is checked here, and the passing appends are written with one UPDATE and one INSERT executemany:
    the cost per pool is a row, not a round of statements. Driver errors are wrapped as SQLAlchemy wraps them,
    so callers handle one family of errors (an ``IntegrityError`` means rows beyond a head exist). The SQL is
    written here for the two drivers we support (sqlite3, psycopg), and runs unchanged on both."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        self._mark = "?" if self._sqlite else "%s"  # the drivers' placeholders: sqlite3 and psycopg
        # SQLite stores datetimes as text, in the format SQLAlchemy reads back.
        self._stored_time: Callable[[datetime], Any] = events_table.c.recorded_at.type.dialect_impl(
            engine.dialect
        ).bind_processor(engine.dialect) or (lambda value: value)
        self._driver_error: type[Exception] = engine.dialect.loaded_dbapi.Error
        # Names from the tables' definitions; ``_write`` builds each row in the events table's column order.
        columns = [column.name for column in events_table.columns]
        marks = ", ".join([self._mark] * len(columns))
        self._insert = f"INSERT INTO {events_table.name} ({', '.join(columns)}) VALUES ({marks})"
        self._advance = f"UPDATE {heads_table.name} SET seq_nr = {self._mark} WHERE pool_id = {self._mark}"
        self._create_head = (
            f"INSERT INTO {heads_table.name} (pool_id, epoch, seq_nr) VALUES ({self._mark}, {self._mark}, {self._mark})"
        )
        self._mark_dormant = (
            f"INSERT INTO {dormant_table.name} (pool_id) VALUES ({self._mark}) ON CONFLICT (pool_id) DO NOTHING"
        )

    def _lock_heads(self, count: int) -> str:
        # PostgreSQL locks the heads, in one order for every writer (byte order, as Python sorts the ids
        # into chunks), so that two batches sharing pools cannot deadlock; SQLite holds its write lock
        # already (BEGIN IMMEDIATE).
        marks = ", ".join([self._mark] * count)
        lock = "" if self._sqlite else ' ORDER BY pool_id COLLATE "C" FOR UPDATE'
        return f"SELECT pool_id, epoch, seq_nr FROM {heads_table.name} WHERE pool_id IN ({marks}){lock}"

    def append(self, appends: Sequence[AppendRequest]) -> list[int | JournalError]:
        connection = self._engine.raw_connection()  # pooled, with the connect-time settings applied
        try:
            cursor = connection.cursor()
            try:
                if self._sqlite:
                    cursor.execute("BEGIN IMMEDIATE")
                results = self._write(cursor, appends)
                connection.commit()
                return results
            except BaseException:
                with contextlib.suppress(Exception):
                    connection.rollback()
                raise
            finally:
                cursor.close()
        except self._driver_error as exc:
            raise DBAPIError.instance("append_many", None, exc, self._driver_error) from exc
        finally:
            connection.close()

    def _write(self, cursor: Any, appends: Sequence[AppendRequest]) -> list[int | JournalError]:
        heads: dict[str, tuple[int, int]] = {}
        pool_ids = sorted({request.pool_id for request in appends if request.events})
        for chunk in _chunks(pool_ids):
            cursor.execute(self._lock_heads(len(chunk)), chunk)
            heads.update((pool_id, (epoch, seq_nr)) for pool_id, epoch, seq_nr in cursor.fetchall())
        results: list[int | JournalError] = []
        rows: list[tuple[Any, ...]] = []
        advanced: set[str] = set()
        created: set[str] = set()
        now_dormant: list[tuple[str]] = []
        now = self._stored_time(datetime.now(UTC))
        for request in appends:
            pool_id, expected_seq_nr, epoch, events, creates, dormant = request
            if not events:
                results.append(expected_seq_nr)
                continue
            head = heads.get(pool_id)
            refusal = (
                creation_refusal(pool_id, head) if creates else append_refusal(pool_id, expected_seq_nr, epoch, head)
            )
            if refusal is not None:
                results.append(refusal)
                continue
            heads[pool_id] = (epoch, expected_seq_nr + len(events))
            (created if creates else advanced).add(pool_id)
            if dormant:
                now_dormant.append((pool_id,))
            results.append(expected_seq_nr + len(events))
            rows.extend(
                (pool_id, seq_nr, e.event_type, e.schema_version, e.payload, epoch, now)
                for seq_nr, e in enumerate(events, expected_seq_nr + 1)
            )
        if created:  # two writers creating one stream at once: the second's INSERT fails (IntegrityError)
            cursor.executemany(self._create_head, [(p, *heads[p]) for p in sorted(created)])
        advanced -= created
        if rows:
            cursor.executemany(self._advance, [(heads[p][1], p) for p in sorted(advanced)])
            cursor.executemany(self._insert, rows)
        if now_dormant:
            cursor.executemany(self._mark_dormant, now_dormant)
        return results


class _SqliteWriterQueue:
    """SQLite has one writer at a time, and its busy handler waits by sleeping (up to 100 ms a turn):
    with many pool actor processes on one file, writers spent most of their time asleep. Writers queue
    here instead, on a thread lock within a process and an flock across processes, both of which wake
    the next writer the moment the lock is free."""

    def __init__(self, path: Path) -> None:
        self._thread_lock = threading.Lock()
        self._file = path.open("a+b")

    def __enter__(self) -> None:
        self._thread_lock.acquire()
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX)
        except BaseException:
            self._thread_lock.release()
            raise

    def enter_if_free(self) -> bool:
        """Take the writer's turn only if nobody, in this process or another, holds it right now; True if
        taken (leave with ``__exit__``)."""
        if not self._thread_lock.acquire(blocking=False):
            return False
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._thread_lock.release()
            return False
        except BaseException:
            self._thread_lock.release()
            raise
        return True

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
        self._thread_lock.release()

    def close(self) -> None:
        self._file.close()


def _as_utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; we only ever store UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _create_engine(settings: SqlJournalSettings) -> Engine:
    url = make_url(settings.url)
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_size=settings.pool_size, pool_pre_ping=True)
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" hook below issue BEGIN IMMEDIATE instead of pysqlite's lazy BEGIN,
        # so the head check and the inserts run under SQLite's write lock.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={settings.sqlite_synchronous}")
        cursor.execute(f"PRAGMA busy_timeout={settings.sqlite_busy_timeout_ms}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("read_only") else "BEGIN IMMEDIATE")

    return engine
