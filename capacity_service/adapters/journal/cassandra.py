"""Cassandra journal through cassandra-driver.

Layout as in akka-persistence-cassandra: events partitioned by ``((pool_id, partition_nr), seq_nr)``
with ``partition_nr = (seq_nr - 1) // partition_size``, so a batch stays in one partition unless it
crosses a boundary. Plus a head row per stream ``(epoch, seq_nr)``, the single point of truth.

Append with fencing (the default), two Paxos rounds:
  1. insert the event rows, the first one ``IF NOT EXISTS`` (one conditional batch per partition);
  2. advance the head ``IF epoch = :mine AND seq_nr = :expected``: this commits the whole batch.
Readers only read rows up to the head, so rows of a failed step 2 are invisible; the next holder of
the stream deletes such leftovers (conditionally on their writer epoch) before writing over them.
With ``lwt_fencing`` off both steps are plain writes (one writer per pool is then assumed, as in Akka).

CQL here runs on Cassandra 2.1 through 5.
"""

from __future__ import annotations

import contextlib
import logging
import zlib
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from itertools import groupby
from typing import Any

from cassandra import ConsistencyLevel, DriverException
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable, Session
from cassandra.policies import (
    DCAwareRoundRobinPolicy,
    ExponentialReconnectionPolicy,
    RoundRobinPolicy,
    TokenAwarePolicy,
)
from cassandra.query import BatchStatement, BatchType, PreparedStatement

from capacity_service.adapters.journal.port import (
    AppendRequest,
    Journal,
    JournalError,
    JournalUnavailable,
    NewEvent,
    SequenceConflict,
    SnapshotRecord,
    StoredEvent,
    append_refusal,
)
from capacity_service.settings import CassandraJournalSettings

# The pool registry is spread over a few partitions so that no single one gets hot.
_REGISTRY_BUCKETS = 16
_MAX_ORPHAN_CLEANUPS = 3
_SNAPSHOT_CHUNK_BYTES = 512 * 1024
log = logging.getLogger(__name__)


def _schema(keyspace: str) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS {keyspace}.events (
              pool_id text, partition_nr bigint, seq_nr bigint,
              event_type text, schema_version int, payload blob, writer_epoch bigint, recorded_at timestamp,
              PRIMARY KEY ((pool_id, partition_nr), seq_nr)
            ) WITH CLUSTERING ORDER BY (seq_nr ASC)""",
        f"""CREATE TABLE IF NOT EXISTS {keyspace}.stream_heads (
              pool_id text PRIMARY KEY, epoch bigint, seq_nr bigint)""",
        f"""CREATE TABLE IF NOT EXISTS {keyspace}.snapshots (
              pool_id text, seq_nr bigint, chunk_nr int, chunk_count int, schema_version int, payload blob,
              PRIMARY KEY (pool_id, seq_nr, chunk_nr)
            ) WITH CLUSTERING ORDER BY (seq_nr DESC, chunk_nr ASC)""",
        f"""CREATE TABLE IF NOT EXISTS {keyspace}.pools (
              bucket int, pool_id text, PRIMARY KEY (bucket, pool_id))""",
        f"""CREATE TABLE IF NOT EXISTS {keyspace}.dormant_pools (
              bucket int, pool_id text, PRIMARY KEY (bucket, pool_id))""",
    ]


def _registry_bucket(pool_id: str) -> int:
    return zlib.crc32(pool_id.encode()) % _REGISTRY_BUCKETS


class CassandraJournal(Journal):
    def __init__(self, settings: CassandraJournalSettings) -> None:
        self._settings = settings
        self._partition_size = settings.partition_size
        self._cluster = _make_cluster(settings)
        self._executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="cassandra")
        with self._translated_errors():
            self._session: Session = self._cluster.connect()
            self._create_schema()
            self._prepare()

    def _create_schema(self) -> None:
        s = self._settings
        replication = ", ".join(f"'{k}': '{v}'" for k, v in s.replication.items())
        self._session.execute(
            f"CREATE KEYSPACE IF NOT EXISTS {s.keyspace} WITH replication = {{{replication}}}",
            timeout=max(30.0, s.request_timeout_s),
        )
        for statement in _schema(s.keyspace):
            self._session.execute(statement, timeout=max(30.0, s.request_timeout_s))
        # Schema changes must reach every node before the prepared statements below.
        self._cluster.control_connection.wait_for_schema_agreement()

    def _prepare(self) -> None:
        ks = self._settings.keyspace
        prepare = self._session.prepare
        self._insert_event_if_absent = prepare(
            f"INSERT INTO {ks}.events (pool_id, partition_nr, seq_nr, event_type, schema_version, payload, "
            "writer_epoch, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS"
        )
        self._insert_event = prepare(
            f"INSERT INTO {ks}.events (pool_id, partition_nr, seq_nr, event_type, schema_version, payload, "
            "writer_epoch, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        )
        self._delete_orphan = prepare(
            f"DELETE FROM {ks}.events WHERE pool_id = ? AND partition_nr = ? AND seq_nr = ? IF writer_epoch = ?"
        )
        self._select_events = prepare(
            f"SELECT seq_nr, event_type, schema_version, payload, writer_epoch, recorded_at FROM {ks}.events "
            "WHERE pool_id = ? AND partition_nr = ? AND seq_nr >= ? AND seq_nr <= ?"
        )
        self._select_head = prepare(f"SELECT epoch, seq_nr FROM {ks}.stream_heads WHERE pool_id = ?")
        self._create_head = prepare(
            f"INSERT INTO {ks}.stream_heads (pool_id, epoch, seq_nr) VALUES (?, 1, 0) IF NOT EXISTS"
        )
        self._bump_epoch = prepare(f"UPDATE {ks}.stream_heads SET epoch = ? WHERE pool_id = ? IF epoch = ?")
        self._advance_head = prepare(
            f"UPDATE {ks}.stream_heads SET seq_nr = ? WHERE pool_id = ? IF epoch = ? AND seq_nr = ?"
        )
        self._write_head = prepare(f"UPDATE {ks}.stream_heads SET seq_nr = ?, epoch = ? WHERE pool_id = ?")
        self._register = prepare(f"INSERT INTO {ks}.pools (bucket, pool_id) VALUES (?, ?)")
        self._select_registry = prepare(f"SELECT pool_id FROM {ks}.pools WHERE bucket = ?")
        self._mark_dormant = prepare(f"INSERT INTO {ks}.dormant_pools (bucket, pool_id) VALUES (?, ?)")
        self._select_dormant = prepare(f"SELECT pool_id FROM {ks}.dormant_pools WHERE bucket = ?")
        self._select_all_heads = prepare(f"SELECT pool_id, seq_nr FROM {ks}.stream_heads")
        self._insert_snapshot_chunk = prepare(
            f"INSERT INTO {ks}.snapshots (pool_id, seq_nr, chunk_nr, chunk_count, schema_version, payload) "
            "VALUES (?, ?, ?, ?, ?, ?)"
        )
        self._select_snapshots = prepare(
            f"SELECT seq_nr, chunk_nr, chunk_count, schema_version, payload FROM {ks}.snapshots WHERE pool_id = ?"
        )
        self._select_snapshot_chunks = prepare(f"SELECT seq_nr, chunk_nr FROM {ks}.snapshots WHERE pool_id = ?")
        self._delete_snapshot_chunk = prepare(
            f"DELETE FROM {ks}.snapshots WHERE pool_id = ? AND seq_nr = ? AND chunk_nr = ?"
        )
        serial = ConsistencyLevel.name_to_value[self._settings.serial_consistency]
        for statement in (self._select_head,):
            if self._settings.lwt_fencing:
                statement.consistency_level = serial  # a linearizable read of the head
        for statement in (
            self._insert_event_if_absent,
            self._delete_orphan,
            self._create_head,
            self._bump_epoch,
            self._advance_head,
        ):
            statement.serial_consistency_level = serial

    # ---------------------------------------------------------------- writer epochs and appends

    def claim_epoch(self, pool_id: str) -> int:
        with self._translated_errors():
            if not self._settings.lwt_fencing:
                head = self._head(pool_id)
                epoch = 1 if head is None else head[0] + 1
                self._session.execute(self._write_head, (0 if head is None else head[1], epoch, pool_id))
                return epoch
            while True:
                head = self._head(pool_id)
                if head is None:
                    if self._session.execute(self._create_head, (pool_id,)).was_applied:
                        return 1
                    continue
                if self._session.execute(self._bump_epoch, (head[0] + 1, pool_id, head[0])).was_applied:
                    return head[0] + 1

    def claim_epochs(self, pool_ids: Sequence[str]) -> list[int]:
        """Each pool's claim on its own partition, many at once (a cold start claims thousands)."""
        return list(self._executor.map(self.claim_epoch, pool_ids))

    def append(self, pool_id: str, expected_seq_nr: int, epoch: int, events: Sequence[NewEvent]) -> int:
        if not events:
            return expected_seq_nr
        new_seq_nr = expected_seq_nr + len(events)
        now = datetime.now(UTC)
        rows = [
            (
                pool_id,
                self._partition_of(seq_nr),
                seq_nr,
                e.event_type,
                e.schema_version,
                e.payload,
                epoch,
                now,
            )
            for seq_nr, e in enumerate(events, start=expected_seq_nr + 1)
        ]
        with self._translated_errors():
            if expected_seq_nr == 0:
                # Registered before the first write so that no written pool is ever missing from the
                # registry; a pool whose first append then fails is listed but has no events.
                self._session.execute(self._register, (_registry_bucket(pool_id), pool_id))
            if not self._settings.lwt_fencing:
                self._write_rows(self._insert_event, rows, conditional=False)
                self._session.execute(self._write_head, (new_seq_nr, epoch, pool_id))
                return new_seq_nr
            self._write_rows_fenced(pool_id, expected_seq_nr, epoch, rows)
            result = self._session.execute(self._advance_head, (new_seq_nr, pool_id, epoch, expected_seq_nr))
            if not result.was_applied:
                current = result.one()
                self._raise_conflict(pool_id, expected_seq_nr, epoch, _head_of(current))
        return new_seq_nr

    def append_many(self, appends: Sequence[AppendRequest]) -> list[int | JournalError]:
        """Different pools live in different partitions: their appends run concurrently; one pool's
        appends run in the order given."""
        if len(appends) <= 1:
            return super().append_many(appends)
        by_pool: dict[str, list[int]] = {}
        for index, request in enumerate(appends):
            by_pool.setdefault(request.pool_id, []).append(index)
        results: list[int | JournalError] = [0] * len(appends)

        def append_pools_appends(indexes: list[int]) -> None:
            answers = super(CassandraJournal, self).append_many([appends[i] for i in indexes])
            for index, answer in zip(indexes, answers, strict=True):
                results[index] = answer

        list(self._executor.map(append_pools_appends, by_pool.values()))
        return results

    def _write_rows_fenced(self, pool_id: str, expected_seq_nr: int, epoch: int, rows: list[tuple[Any, ...]]) -> None:
        for _attempt in range(_MAX_ORPHAN_CLEANUPS + 1):
            occupied = self._write_rows(self._insert_event_if_absent, rows, conditional=True)
            if not occupied:
                return
            # Some seq_nrs already hold rows. If the head moved or our epoch is fenced, that is a
            # conflict; otherwise they are leftovers of an uncommitted append beyond the head.
            head = self._head(pool_id)
            if head is None or head[0] != epoch or head[1] != expected_seq_nr:
                self._raise_conflict(pool_id, expected_seq_nr, epoch, head)
            for partition_nr, seq_nr, writer_epoch in occupied:
                if writer_epoch <= epoch:
                    self._session.execute(self._delete_orphan, (pool_id, partition_nr, seq_nr, writer_epoch))
        raise SequenceConflict(pool_id, expected_seq_nr, None)

    def _write_rows(
        self, statement: PreparedStatement, rows: list[tuple[Any, ...]], conditional: bool
    ) -> list[tuple[int, int, int]]:
        """Write rows in one batch per partition; returns (partition_nr, seq_nr, writer_epoch) of rows
        that a conditional batch found already present.

        A conditional batch checks only its first row: committed rows are contiguous from 1 to the head,
        so if the first seq_nr is free every later one is free of committed rows too (what may sit there
        is an uncommitted leftover, which we may overwrite). One row read per Paxos round instead of 100.
        """
        occupied: list[tuple[int, int, int]] = []
        for partition_nr, group in groupby(rows, key=lambda row: row[1]):
            first, *rest = list(group)
            if not rest:
                result = self._session.execute(statement, first)
            else:
                batch = BatchStatement(batch_type=BatchType.UNLOGGED)
                if conditional:
                    batch.serial_consistency_level = statement.serial_consistency_level
                batch.add(statement, first)
                for row in rest:
                    batch.add(self._insert_event, row)
                result = self._session.execute(batch)
            if conditional and not result.was_applied:
                existing = result.one()
                epoch = getattr(existing, "writer_epoch", None)
                if epoch is None:  # the server did not say what it found: ask
                    occupied.extend(self._existing_rows(first))
                else:
                    occupied.append((partition_nr, first[2], epoch))
        return occupied

    def _existing_rows(self, row: tuple[Any, ...]) -> list[tuple[int, int, int]]:
        pool_id, partition_nr, seq_nr = row[0], row[1], row[2]
        found = self._session.execute(self._select_events, (pool_id, partition_nr, seq_nr, seq_nr))
        return [(partition_nr, r.seq_nr, r.writer_epoch) for r in found]

    @staticmethod
    def _raise_conflict(pool_id: str, expected_seq_nr: int, epoch: int, head: tuple[int, int] | None) -> None:
        """Called when the conditional write failed: the head shows why."""
        raise append_refusal(pool_id, expected_seq_nr, epoch, head) or SequenceConflict(pool_id, expected_seq_nr, None)

    def _head(self, pool_id: str) -> tuple[int, int] | None:
        return _head_of(self._session.execute(self._select_head, (pool_id,)).one())

    def _partition_of(self, seq_nr: int) -> int:
        return (seq_nr - 1) // self._partition_size

    # ---------------------------------------------------------------- reads

    def read(self, pool_id: str, from_seq_nr: int = 1) -> Iterator[StoredEvent]:
        from_seq_nr = max(1, from_seq_nr)
        with self._translated_errors():
            head = self._head(pool_id)
            if head is None or head[1] < from_seq_nr:
                return
            last = head[1]
            for partition_nr in range(self._partition_of(from_seq_nr), self._partition_of(last) + 1):
                statement = self._select_events.bind((pool_id, partition_nr, from_seq_nr, last))
                statement.fetch_size = self._settings.fetch_size
                for r in self._session.execute(statement):
                    yield StoredEvent(
                        pool_id,
                        r.seq_nr,
                        r.event_type,
                        r.schema_version,
                        r.payload,
                        r.writer_epoch,
                        r.recorded_at.replace(tzinfo=UTC),
                    )

    def read_streams(self, from_seq_nrs: Mapping[str, int]) -> dict[str, list[StoredEvent]]:
        """Each stream is its own partitions: many are read at once."""
        starts = list(from_seq_nrs.items())
        streams = self._executor.map(lambda start: list(self.read(*start)), starts)
        return {pool_id: stream for (pool_id, _), stream in zip(starts, streams, strict=True)}

    def newest_snapshots(self, pool_ids: Sequence[str]) -> dict[str, SnapshotRecord]:
        newest = self._executor.map(lambda pool_id: next(self.snapshots(pool_id), None), pool_ids)
        return {pool_id: record for pool_id, record in zip(pool_ids, newest, strict=True) if record is not None}

    def highest_seq_nr(self, pool_id: str) -> int:
        with self._translated_errors():
            head = self._head(pool_id)
        return 0 if head is None else head[1]

    def heads(self) -> dict[str, int]:
        """One paged scan of the heads table (small: one row per pool), not a read per pool."""
        statement = self._select_all_heads.bind(())
        statement.fetch_size = self._settings.fetch_size
        with self._translated_errors():
            return {r.pool_id: r.seq_nr for r in self._session.execute(statement) if r.seq_nr}

    # ---------------------------------------------------------------- snapshots and registry

    def save_snapshot(self, snapshot: SnapshotRecord, keep: int) -> None:
        # Large pools have multi-megabyte snapshots; one mutation that size times out. Chunks are written
        # one by one; a snapshot missing a chunk (a crash mid-way) is skipped when loading.
        payload = snapshot.payload
        chunks = [payload[i : i + _SNAPSHOT_CHUNK_BYTES] for i in range(0, len(payload), _SNAPSHOT_CHUNK_BYTES)]
        chunks = chunks or [b""]
        with self._translated_errors():
            for chunk_nr, chunk in enumerate(chunks):
                self._session.execute(
                    self._insert_snapshot_chunk,
                    (
                        snapshot.pool_id,
                        snapshot.seq_nr,
                        chunk_nr,
                        len(chunks),
                        snapshot.schema_version,
                        chunk,
                    ),
                )
            stored = self._session.execute(self._select_snapshot_chunks, (snapshot.pool_id,))
            kept: set[int] = set()
            for row in stored:
                if row.seq_nr not in kept and len(kept) < keep:
                    kept.add(row.seq_nr)
                if row.seq_nr not in kept or (row.seq_nr == snapshot.seq_nr and row.chunk_nr >= len(chunks)):
                    self._session.execute(self._delete_snapshot_chunk, (snapshot.pool_id, row.seq_nr, row.chunk_nr))

    def snapshots(self, pool_id: str) -> Iterator[SnapshotRecord]:
        statement = self._select_snapshots.bind((pool_id,))
        statement.fetch_size = 4  # chunks are large: page through them, newest snapshot first
        with self._translated_errors():
            rows = iter(self._session.execute(statement))
            for seq_nr, group in groupby(rows, key=lambda r: r.seq_nr):
                chunks = list(group)
                if [c.chunk_nr for c in chunks] != list(range(chunks[0].chunk_count)):
                    log.warning("pool %s: snapshot at seq_nr %d is incomplete, skipped", pool_id, seq_nr)
                    continue
                payload = b"".join(c.payload or b"" for c in chunks)
                yield SnapshotRecord(pool_id, seq_nr, chunks[0].schema_version, payload)

    def pool_ids(self) -> Iterator[str]:
        with self._translated_errors():
            ids = [
                r.pool_id
                for bucket in range(_REGISTRY_BUCKETS)
                for r in self._session.execute(self._select_registry, (bucket,))
            ]
        yield from sorted(ids)

    def mark_dormant(self, pool_id: str) -> None:
        with self._translated_errors():
            self._session.execute(self._mark_dormant, (_registry_bucket(pool_id), pool_id))

    def dormant_pool_ids(self) -> Iterator[str]:
        with self._translated_errors():
            ids = [
                r.pool_id
                for bucket in range(_REGISTRY_BUCKETS)
                for r in self._session.execute(self._select_dormant, (bucket,))
            ]
        yield from sorted(ids)

    def close(self) -> None:
        self._executor.shutdown(wait=False)
        self._cluster.shutdown()

    @contextlib.contextmanager
    def _translated_errors(self) -> Iterator[None]:
        try:
            yield
        except (NoHostAvailable, DriverException, OSError) as exc:
            raise JournalUnavailable(f"cassandra journal: {type(exc).__name__}: {exc}") from exc


def _head_of(row: Any) -> tuple[int, int] | None:
    if row is None or getattr(row, "epoch", None) is None:
        return None
    return int(row.epoch), int(row.seq_nr or 0)


def _make_cluster(settings: CassandraJournalSettings) -> Cluster:
    if settings.local_datacenter:
        balancing = TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=settings.local_datacenter))
    else:
        balancing = TokenAwarePolicy(RoundRobinPolicy())
    profile = ExecutionProfile(
        load_balancing_policy=balancing,
        consistency_level=ConsistencyLevel.name_to_value[settings.consistency],
        serial_consistency_level=ConsistencyLevel.name_to_value[settings.serial_consistency],
        request_timeout=settings.request_timeout_s,
    )
    auth = None
    if settings.username is not None:
        password = settings.password.get_secret_value() if settings.password else ""
        auth = PlainTextAuthProvider(username=settings.username, password=password)
    kwargs: dict[str, Any] = {}
    if settings.protocol_version is not None:
        kwargs["protocol_version"] = settings.protocol_version
    return Cluster(
        contact_points=settings.contact_points,
        port=settings.port,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        auth_provider=auth,
        connect_timeout=settings.connect_timeout_s,
        # Back within seconds after an outage, not the driver's default of up to 10 minutes.
        reconnection_policy=ExponentialReconnectionPolicy(0.2, settings.reconnect_max_delay_s),
        **kwargs,
    )
