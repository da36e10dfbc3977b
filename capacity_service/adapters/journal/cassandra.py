"""Cassandra journal through cassandra-driver.

Layout as in akka-persistence-cassandra: events partitioned by ``(pool_id, partition_nr)`` and clustered
by ``seq_nr``, so a stream is read partition by partition. What akka keeps nowhere, the stream's head
``(epoch, head, first_seq_nr, sealed)``, lives in STATIC columns of the pool's live partition: an append
is one conditional batch on one partition (its rows plus ``head = new IF epoch = mine AND head = expected
AND sealed = false``), so it costs one Paxos round and commits all or nothing. Rows exist only where a
batch committed them: nothing beyond the head, nothing to clean up.

A partition holds ``partition_size`` events at most. The append that would go beyond moves the stream:
it seals the live partition (a Paxos round: ``sealed = true IF epoch = mine AND head = expected``), then
writes its rows into the next partition, created by the same batch ``IF NOT EXISTS`` with the head
carried over. A claim that finds a sealed partition whose successor does not exist yet creates the
successor itself, with its new epoch: the mover's batch then finds it and is fenced. ``live_partitions``
remembers each stream's live partition as a hint (it may lag, never lead: readers walk on past sealed
partitions). See docs/decisions/0003. A new stream's first append (``creates``) is the first partition
``IF NOT EXISTS`` with the head and the rows in one batch: the claim and the append in one round.

With ``lwt_fencing`` off the same statements run without their conditions (one writer per pool is then
assumed, as in Akka). The CQL here runs on Cassandra 2.1 (protocol v3) through 5.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import zlib
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import groupby
from typing import Any

from cassandra import ConsistencyLevel, DriverException
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable, ResponseFuture, Session
from cassandra.policies import (
    DCAwareRoundRobinPolicy,
    ExponentialReconnectionPolicy,
    RoundRobinPolicy,
    TokenAwarePolicy,
)
from cassandra.query import BatchStatement, BatchType, SimpleStatement

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
)
from capacity_service.settings import CassandraJournalSettings

# The pool registry is spread over a few partitions so that no single one gets hot.
_REGISTRY_BUCKETS = 16
_SNAPSHOT_CHUNK_BYTES = 512 * 1024
# Claims racing on one pool retry at most this often before giving up (each retry means another claim won).
_MAX_CLAIM_ATTEMPTS = 50
log = logging.getLogger(__name__)


def _schema(keyspace: str) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS {keyspace}.pool_events (
              pool_id text, partition_nr bigint, seq_nr bigint,
              epoch bigint static, head bigint static, first_seq_nr bigint static, sealed boolean static,
              event_type text, schema_version int, payload blob, writer_epoch bigint, recorded_at timestamp,
              PRIMARY KEY ((pool_id, partition_nr), seq_nr)
            ) WITH CLUSTERING ORDER BY (seq_nr ASC)""",
        f"""CREATE TABLE IF NOT EXISTS {keyspace}.live_partitions (
              pool_id text PRIMARY KEY, partition_nr bigint)""",
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


@dataclass(frozen=True, slots=True)
class _Partition:
    """A partition's static columns: the stream's head while it is live."""

    partition_nr: int
    epoch: int
    head: int
    first_seq_nr: int
    sealed: bool


@dataclass(frozen=True, slots=True)
class _Head:
    """Where a stream stands: ``live`` holds its head; ``pending`` is the partition number a move has
    sealed ``live`` for, when that successor does not exist yet. None for a stream never claimed."""

    live: _Partition
    pending: int | None = None

    @property
    def epoch_and_seq_nr(self) -> tuple[int, int]:
        return self.live.epoch, self.live.head


class CassandraJournal(Journal):
    def __init__(self, settings: CassandraJournalSettings) -> None:
        self._settings = settings
        self._partition_size = settings.partition_size
        self._fenced = settings.lwt_fencing
        self._cluster = _make_cluster(settings)
        # Threads that mostly wait on Cassandra (claims, first appends, reads of many pools at once): a
        # cold start or a burst of new pools keeps dozens of Paxos rounds under way.
        self._executor = ThreadPoolExecutor(max_workers=64, thread_name_prefix="cassandra")
        # Each stream's live partition as this process last saw it (a stale entry only costs a retry).
        self._live: dict[str, _Partition] = {}
        # Streams whose last append had an unknown outcome: their next head read is SERIAL, which
        # completes (or discards) a Paxos round left in flight.
        self._in_doubt: set[str] = set()
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
        condition = self._fenced
        self._insert_event = prepare(
            f"INSERT INTO {ks}.pool_events (pool_id, partition_nr, seq_nr, event_type, schema_version, payload, "
            "writer_epoch, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        )
        self._advance_head = prepare(
            f"UPDATE {ks}.pool_events SET head = ? WHERE pool_id = ? AND partition_nr = ?"
            + (" IF epoch = ? AND head = ? AND sealed = false" if condition else "")
        )
        self._seal = prepare(
            f"UPDATE {ks}.pool_events SET sealed = true WHERE pool_id = ? AND partition_nr = ?"
            + (" IF epoch = ? AND head = ? AND sealed = false" if condition else "")
        )
        # Creates a partition (the first, or a move's successor) with the stream's head in it.
        self._open_partition = prepare(
            f"INSERT INTO {ks}.pool_events (pool_id, partition_nr, epoch, head, first_seq_nr, sealed) "
            "VALUES (?, ?, ?, ?, ?, false)" + (" IF NOT EXISTS" if condition else "")
        )
        self._bump_epoch = prepare(
            f"UPDATE {ks}.pool_events SET epoch = ? WHERE pool_id = ? AND partition_nr = ?"
            + (" IF epoch = ? AND sealed = false" if condition else "")
        )
        self._select_partition = prepare(
            f"SELECT epoch, head, first_seq_nr, sealed FROM {ks}.pool_events "
            "WHERE pool_id = ? AND partition_nr = ? LIMIT 1"
        )
        self._select_events = prepare(
            f"SELECT seq_nr, event_type, schema_version, payload, writer_epoch, recorded_at FROM {ks}.pool_events "
            "WHERE pool_id = ? AND partition_nr = ? AND seq_nr >= ? AND seq_nr <= ?"
        )
        self._select_live_hint = prepare(f"SELECT partition_nr FROM {ks}.live_partitions WHERE pool_id = ?")
        self._write_live_hint = prepare(f"INSERT INTO {ks}.live_partitions (pool_id, partition_nr) VALUES (?, ?)")
        self._registrations = _BucketRows(
            self._session, prepare(f"INSERT INTO {ks}.pools (bucket, pool_id) VALUES (?, ?)")
        )
        self._select_registry = prepare(f"SELECT pool_id FROM {ks}.pools WHERE bucket = ?")
        self._dormancy_marks = _BucketRows(
            self._session, prepare(f"INSERT INTO {ks}.dormant_pools (bucket, pool_id) VALUES (?, ?)")
        )
        self._select_dormant = prepare(f"SELECT pool_id FROM {ks}.dormant_pools WHERE bucket = ?")
        self._select_all_heads = SimpleStatement(
            f"SELECT DISTINCT pool_id, partition_nr, head, sealed FROM {ks}.pool_events",
            fetch_size=self._settings.fetch_size,
        )
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
        # A linearizable read of a partition's head completes any Paxos round left in flight first.
        self._serial_read = serial if condition else None
        for statement in (self._advance_head, self._seal, self._open_partition, self._bump_epoch):
            statement.serial_consistency_level = serial

    # ---------------------------------------------------------------- where a stream stands

    def _partition(self, pool_id: str, partition_nr: int, serial: bool) -> _Partition | None:
        statement = self._select_partition.bind((pool_id, partition_nr))
        if serial and self._serial_read is not None:
            statement.consistency_level = self._serial_read
        row = self._session.execute(statement).one()
        if row is None or row.epoch is None:
            return None
        return _Partition(partition_nr, int(row.epoch), int(row.head), int(row.first_seq_nr), bool(row.sealed))

    def _resolve(self, pool_id: str, serial: bool = False) -> _Head | None:
        """The stream's live partition, walking on from the hint past sealed ones. QUORUM reads see every
        committed round; ``serial`` also completes one left in flight (after an unknown outcome, or a lost race)."""
        serial = serial or pool_id in self._in_doubt
        known = self._live.get(pool_id)
        found = self._partition(pool_id, 0 if known is None else known.partition_nr, serial)
        if found is not None and found.sealed and known is None:
            # A stream past its first partition: the hint skips the walk through the others.
            row = self._session.execute(self._select_live_hint, (pool_id,)).one()
            hinted = None if row is None else self._partition(pool_id, int(row.partition_nr), serial)
            found = hinted or found
        if found is None:
            return None
        while found.sealed:
            successor = self._partition(pool_id, found.partition_nr + 1, serial)
            if successor is None:
                self._in_doubt.discard(pool_id)
                return _Head(found, pending=found.partition_nr + 1)
            found = successor
        self._in_doubt.discard(pool_id)
        self._live[pool_id] = found
        return _Head(found)

    # ---------------------------------------------------------------- writer epochs and appends

    def claim_epoch(self, pool_id: str) -> int:
        with self._translated_errors():
            for attempt in range(_MAX_CLAIM_ATTEMPTS):
                head = self._resolve(pool_id, serial=attempt > 0)
                values: tuple[Any, ...]
                if head is None:  # a new stream: its first partition, with epoch 1
                    statement, values = self._open_partition, (pool_id, 0, 1, 0, 1)
                    epoch, live = 1, _Partition(0, 1, 0, 1, False)
                elif head.pending is not None:  # a move sealed the live partition: finish it, with our epoch
                    epoch = head.live.epoch + 1
                    statement = self._open_partition
                    values = (pool_id, head.pending, epoch, head.live.head, head.live.head + 1)
                    live = _Partition(head.pending, epoch, head.live.head, head.live.head + 1, False)
                else:
                    current = head.live
                    epoch = current.epoch + 1
                    statement, values = self._bump_epoch, (epoch, pool_id, current.partition_nr, current.epoch)
                    if not self._fenced:
                        values = values[:3]
                    live = _Partition(current.partition_nr, epoch, current.head, current.first_seq_nr, False)
                if _applied(self._session.execute(statement, values)):
                    self._live[pool_id] = live
                    if head is not None and head.pending is not None:
                        self._session.execute(self._write_live_hint, (pool_id, head.pending))
                    return epoch
                self._live.pop(pool_id, None)
        raise SequenceConflict(pool_id, -1, None)

    def claim_epochs(self, pool_ids: Sequence[str]) -> list[int]:
        """Each pool's claim on its own partition, many at once (a cold start claims thousands)."""
        return list(self._executor.map(self.claim_epoch, pool_ids))

    def append(
        self,
        pool_id: str,
        expected_seq_nr: int,
        epoch: int,
        events: Sequence[NewEvent],
        creates: bool = False,
        dormant: bool = False,
    ) -> int:
        appended = self._append(pool_id, expected_seq_nr, epoch, events, creates)
        if dormant and events:
            self._mark_dormant_after(pool_id)
        return appended

    def _mark_dormant_after(self, pool_id: str) -> None:
        """The mark of an append that leaves its stream dormant: another partition, so a write of its own
        after the append, whose loss must not turn a durable append into an error (``Journal.append``)."""
        try:
            self.mark_dormant(pool_id)
        except JournalError as exc:
            log.warning(
                "stream %s: appended, but not marked dormant (it is marked at its next start): %s", pool_id, exc
            )

    def _append(self, pool_id: str, expected_seq_nr: int, epoch: int, events: Sequence[NewEvent], creates: bool) -> int:
        if not events:
            return expected_seq_nr
        with self._translated_errors(pool_id):
            if expected_seq_nr == 0:
                # Registered before the first write so that no written pool is ever missing from the
                # registry; a pool whose first append then fails is listed but has no events.
                self._registrations.write(pool_id)
            if creates:
                return self._create(pool_id, epoch, events)
            # The cached live partition first; if the write is refused, once more from a SERIAL read.
            for attempt in range(2):
                live = self._live.get(pool_id) if attempt == 0 else None
                if live is None or live.sealed:
                    head = self._resolve(pool_id, serial=attempt > 0)
                    if head is None:
                        break
                    if head.pending is not None:
                        if head.live.epoch != epoch or head.live.head != expected_seq_nr:
                            break
                        # Our own move sealed the partition and got no further (an unknown outcome): finish it.
                        return self._append_moving(head.live, pool_id, expected_seq_nr, epoch, events, sealed=True)
                    live = head.live
                if self._must_move(live, expected_seq_nr):
                    return self._append_moving(live, pool_id, expected_seq_nr, epoch, events)
                batch = self._append_batch(live, pool_id, expected_seq_nr, epoch, events)
                if _applied(self._session.execute(batch)):
                    return self._appended(live, pool_id, expected_seq_nr + len(events))
                self._live.pop(pool_id, None)
            self._refuse(pool_id, expected_seq_nr, epoch)
        raise AssertionError("unreachable")

    def _create(self, pool_id: str, epoch: int, events: Sequence[NewEvent]) -> int:
        """The stream's first partition, its head (claimed with ``epoch``) and its first events in one
        conditional batch (one Paxos round), if the stream was never claimed."""
        batch = BatchStatement(batch_type=BatchType.UNLOGGED)
        batch.serial_consistency_level = self._open_partition.serial_consistency_level
        batch.add(self._open_partition, (pool_id, 0, epoch, len(events), 1))
        self._add_rows(batch, pool_id, 0, 0, epoch, events)
        if not _applied(self._session.execute(batch)):
            self._live.pop(pool_id, None)
            raise StreamExists(pool_id, None)
        return self._appended(_Partition(0, epoch, len(events), 1, False), pool_id, len(events))

    def append_soon(self, request: AppendRequest) -> Future[int]:
        """``append`` without a thread per call: the common case (the stream's live partition known, no
        move due) is one asynchronous request whose callback answers; the rest runs on a worker thread."""
        pool_id, expected_seq_nr, epoch, events, _, dormant = request
        live = self._live.get(pool_id)
        if (
            dormant
            or not events
            or expected_seq_nr == 0
            or live is None
            or live.sealed
            or self._must_move(live, expected_seq_nr)
        ):
            return self._executor.submit(self.append, *request)
        answer: Future[int] = Future()
        try:
            response: ResponseFuture = self._session.execute_async(
                self._append_batch(live, pool_id, expected_seq_nr, epoch, events)
            )
        except Exception:
            return self._executor.submit(self.append, *request)

        def on_result(rows: Any) -> None:
            if _applied_rows(rows):
                answer.set_result(self._appended(live, pool_id, expected_seq_nr + len(events)))
            else:  # refused: which refusal takes reading the head, off the driver's thread
                self._live.pop(pool_id, None)
                self._executor.submit(self._answer_refusal, answer, pool_id, expected_seq_nr, epoch)

        def on_error(exc: BaseException) -> None:
            self._in_doubt.add(pool_id)
            answer.set_exception(_unavailable(exc))

        response.add_callbacks(on_result, on_error)
        return answer

    def _answer_refusal(self, answer: Future[int], pool_id: str, expected_seq_nr: int, epoch: int) -> None:
        try:
            with self._translated_errors(pool_id):
                self._refuse(pool_id, expected_seq_nr, epoch)
        except BaseException as exc:
            answer.set_exception(exc)

    def _must_move(self, live: _Partition, expected_seq_nr: int) -> bool:
        return expected_seq_nr - live.first_seq_nr + 1 >= self._partition_size

    def _append_batch(
        self, live: _Partition, pool_id: str, expected_seq_nr: int, epoch: int, events: Sequence[NewEvent]
    ) -> BatchStatement:
        new_seq_nr = expected_seq_nr + len(events)
        batch = BatchStatement(batch_type=BatchType.UNLOGGED)
        if self._fenced:
            batch.serial_consistency_level = self._advance_head.serial_consistency_level
            batch.add(self._advance_head, (new_seq_nr, pool_id, live.partition_nr, epoch, expected_seq_nr))
        else:
            batch.add(self._advance_head, (new_seq_nr, pool_id, live.partition_nr))
        self._add_rows(batch, pool_id, live.partition_nr, expected_seq_nr, epoch, events)
        return batch

    def _add_rows(
        self,
        batch: BatchStatement,
        pool_id: str,
        partition_nr: int,
        expected_seq_nr: int,
        epoch: int,
        events: Sequence[NewEvent],
    ) -> None:
        now = datetime.now(UTC)
        for seq_nr, e in enumerate(events, start=expected_seq_nr + 1):
            batch.add(
                self._insert_event,
                (pool_id, partition_nr, seq_nr, e.event_type, e.schema_version, e.payload, epoch, now),
            )

    def _append_moving(
        self,
        live: _Partition,
        pool_id: str,
        expected_seq_nr: int,
        epoch: int,
        events: Sequence[NewEvent],
        sealed: bool = False,
    ) -> int:
        """The live partition is full: seal it (unless ``sealed`` already), then write the events into its
        successor, created by the same conditional batch (two Paxos rounds, once every ``partition_size``
        events)."""
        seal_values: tuple[Any, ...] = (pool_id, live.partition_nr)
        if self._fenced:
            seal_values += (epoch, expected_seq_nr)
        if not sealed and not _applied(self._session.execute(self._seal, seal_values)):
            self._live.pop(pool_id, None)
            head = self._resolve(pool_id, serial=True)
            ours = head is not None and head.pending is not None and head.epoch_and_seq_nr == (epoch, expected_seq_nr)
            if not ours:  # sealed by an earlier try of ours (an unknown outcome): go on; else refused
                self._refuse(pool_id, expected_seq_nr, epoch)
        successor = live.partition_nr + 1
        new_seq_nr = expected_seq_nr + len(events)
        batch = BatchStatement(batch_type=BatchType.UNLOGGED)
        batch.serial_consistency_level = self._open_partition.serial_consistency_level
        batch.add(self._open_partition, (pool_id, successor, epoch, new_seq_nr, expected_seq_nr + 1))
        self._add_rows(batch, pool_id, successor, expected_seq_nr, epoch, events)
        self._live.pop(pool_id, None)
        if not _applied(self._session.execute(batch)):
            self._refuse(pool_id, expected_seq_nr, epoch)  # a claim finished the move first: we are fenced
        self._session.execute(self._write_live_hint, (pool_id, successor))
        return self._appended(_Partition(successor, epoch, new_seq_nr, expected_seq_nr + 1, False), pool_id, new_seq_nr)

    def _appended(self, live: _Partition, pool_id: str, new_seq_nr: int) -> int:
        self._live[pool_id] = _Partition(live.partition_nr, live.epoch, new_seq_nr, live.first_seq_nr, False)
        return new_seq_nr

    def _refuse(self, pool_id: str, expected_seq_nr: int, epoch: int) -> None:
        """A conditional write was not applied: the head (read linearizably) says why."""
        head = self._resolve(pool_id, serial=True)
        raise append_refusal(
            pool_id, expected_seq_nr, epoch, None if head is None else head.epoch_and_seq_nr
        ) or SequenceConflict(pool_id, expected_seq_nr, None)

    def _partition_nrs(self, pool_id: str, head: _Head, from_seq_nr: int) -> list[_Partition]:
        """The partitions holding ``from_seq_nr`` up to the head, oldest first (walking back from the live
        one through each partition's first seq_nr: usually the live one alone)."""
        found = [head.live]
        while found[-1].first_seq_nr > from_seq_nr and found[-1].partition_nr > 0:
            previous = self._partition(pool_id, found[-1].partition_nr - 1, serial=False)
            if previous is None:
                break
            found.append(previous)
        return list(reversed(found))

    # ---------------------------------------------------------------- reads

    def read(self, pool_id: str, from_seq_nr: int = 1) -> Iterator[StoredEvent]:
        from_seq_nr = max(1, from_seq_nr)
        with self._translated_errors():
            head = self._resolve(pool_id)
            if head is None or head.live.head < from_seq_nr:
                return
            last = head.live.head
            for partition in self._partition_nrs(pool_id, head, from_seq_nr):
                statement = self._select_events.bind((pool_id, partition.partition_nr, from_seq_nr, last))
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
            head = self._resolve(pool_id)
        return 0 if head is None else head.live.head

    def heads(self) -> dict[str, int]:
        """One paged scan of the partitions' static columns, not a read per pool."""
        found: dict[str, int] = {}
        with self._translated_errors():
            for r in self._session.execute(self._select_all_heads):
                if r.head and r.head > found.get(r.pool_id, 0):
                    found[r.pool_id] = int(r.head)
        return found

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
            self._dormancy_marks.write(pool_id)

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
    def _translated_errors(self, writing: str | None = None) -> Iterator[None]:
        """Driver errors become ``JournalUnavailable``; ``writing``: the pool whose write's outcome that
        leaves unknown (its next head read is SERIAL)."""
        try:
            yield
        except (NoHostAvailable, DriverException, OSError) as exc:
            if writing is not None:
                self._in_doubt.add(writing)
            raise _unavailable(exc) from exc


# Rows of a bucketed table written in one single-partition batch at most (a row is some 40 bytes: well below
# the batch size Cassandra warns of).
_ROWS_PER_BATCH = 100


class _BucketRows:
    """Rows ``(bucket, pool_id)`` of one table (the registry, the dormancy marks), written together: the rows
    that callers want at one moment (a schedule creating hundreds of pools, each registered, then at rest) go
    in a few single-partition batches, one per bucket, instead of one write each (which cost new pools a
    third of their rate). The first caller writes for every waiting one; each returns once its row is
    written, or raises the driver's error."""

    def __init__(self, session: Session, insert: Any) -> None:
        self._session, self._insert = session, insert
        self._lock = threading.Lock()
        self._waiting: list[tuple[str, Future[None]]] = []
        self._writing = False

    def write(self, pool_id: str) -> None:
        registered: Future[None] = Future()
        with self._lock:
            self._waiting.append((pool_id, registered))
            writes = not self._writing
            self._writing = True
        if writes:
            self._write_all()
        registered.result()

    def _write_all(self) -> None:
        while True:
            with self._lock:
                waiting, self._waiting = self._waiting, []
                if not waiting:
                    self._writing = False
                    return
            try:
                self._write([pool_id for pool_id, _ in waiting])
            except BaseException as exc:  # every waiter gets the error (a bug too: none may wait forever)
                for _, registered in waiting:
                    registered.set_exception(exc)
            else:
                for _, registered in waiting:
                    registered.set_result(None)

    def _write(self, pool_ids: list[str]) -> None:
        by_bucket: dict[int, list[str]] = {}
        for pool_id in dict.fromkeys(pool_ids):
            by_bucket.setdefault(_registry_bucket(pool_id), []).append(pool_id)
        writes: list[ResponseFuture] = []
        for bucket, ids in by_bucket.items():
            for start in range(0, len(ids), _ROWS_PER_BATCH):
                batch = BatchStatement(batch_type=BatchType.UNLOGGED)
                for pool_id in ids[start : start + _ROWS_PER_BATCH]:
                    batch.add(self._insert, (bucket, pool_id))
                writes.append(self._session.execute_async(batch))
        for write in writes:
            write.result()


def _unavailable(exc: BaseException) -> JournalError:
    if isinstance(exc, JournalError):
        return exc
    return JournalUnavailable(f"cassandra journal: {type(exc).__name__}: {exc}")


def _applied(result: Any) -> bool:
    """Whether a write was applied: a conditional one says so; a plain one always is."""
    return _applied_rows(list(result))


def _applied_rows(rows: Any) -> bool:
    first = rows[0] if rows else None
    if first is None:
        return True
    applied = getattr(first, "applied", None)
    if applied is None and isinstance(first, dict):
        applied = first.get("[applied]")
    return True if applied is None else bool(applied)


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
        # The driver leaves Nagle's algorithm on: a request over a few KB (a hot pool's batch) then waits
        # for the server's delayed ACK before its last segment goes.
        sockopts=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        # Back within seconds after an outage, not the driver's default of up to 10 minutes.
        reconnection_policy=ExponentialReconnectionPolicy(0.2, settings.reconnect_max_delay_s),
        **kwargs,
    )
