"""Cassandra journal through cassandra-driver.

Layout as in akka-persistence-cassandra: events partitioned by ``(pool_id, partition_nr)`` and clustered
by ``(seq_nr, writer_epoch)``, so a stream is read partition by partition. What akka keeps nowhere, who may
write, lives in STATIC columns of the pool's live partition: ``epoch`` (the newest claimed writer epoch),
``holder`` (the journal that claimed it), ``starts`` (for each claim, the first seq_nr its epoch writes),
``first_seq_nr``, ``sealed``, and ``head`` (the highest seq_nr written: a hint for ``heads``).

An append takes no Paxos round (docs/decisions/0011): its rows and the head hint go in one plain
single-partition batch, and it is acknowledged once a read of this journal's writer lease, sent after the
rows were written, finds it unrevoked (one read answers every append written before it: ``_LeaseCheck``).
A claim revokes the previous holder's lease, reads where the stream ends, then takes the next epoch with
its start in one Paxos round. A row of epoch ``e`` counts only below the start of every later epoch: a row
a fenced writer wrote after the claim read the stream is never read, and rows of two epochs never share a
key.

A partition holds ``partition_size`` events at most. The append that would go beyond moves the stream:
it seals the live partition (a Paxos round: ``sealed = true IF epoch = mine``), then writes its rows into
the next partition, created by the same conditional batch ``IF NOT EXISTS``. A claim that finds a sealed
partition whose successor does not exist yet creates the successor itself, with its new epoch: the mover's
batch then finds it and is fenced. ``live_partitions`` remembers each stream's live partition as a hint
(it may lag, never lead: readers walk on past sealed partitions). A new stream's first append
(``creates``) is the first partition ``IF NOT EXISTS`` with the rows in one conditional batch: the claim and
the append in one round.

With ``lwt_fencing`` off the same statements run without their conditions and appends skip the lease
read (one writer per pool is then assumed, as in Akka). The CQL here runs on Cassandra 2.1 (protocol v3)
through 5.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import uuid
import zlib
from bisect import bisect_right
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
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
    FIRST_EPOCH,
    AppendRequest,
    Journal,
    JournalError,
    JournalUnavailable,
    NewEvent,
    SequenceConflict,
    SnapshotRecord,
    StoredEvent,
    StreamExists,
    WriterFenced,
    append_refusal,
)
from capacity_service.settings import CassandraJournalSettings

# The pool registry is spread over a few partitions so that no single one gets hot.
_REGISTRY_BUCKETS = 16
_SNAPSHOT_CHUNK_BYTES = 512 * 1024
# Claims racing on one pool retry at most this often before giving up (each retry means another claim won).
_MAX_CLAIM_ATTEMPTS = 50
_NO_LIMIT = 2**63
# Rows read per page from a partition's end while looking for its last valid row (usually the first one).
_TAIL_PAGE = 16
log = logging.getLogger(__name__)


def _schema(keyspace: str) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS {keyspace}.stream_events (
              pool_id text, partition_nr bigint, seq_nr bigint, writer_epoch bigint,
              epoch bigint static, starts map<bigint, bigint> static, first_seq_nr bigint static,
              sealed boolean static, head bigint static, holder text static,
              event_type text, schema_version int, payload blob, recorded_at timestamp,
              PRIMARY KEY ((pool_id, partition_nr), seq_nr, writer_epoch)
            ) WITH CLUSTERING ORDER BY (seq_nr ASC, writer_epoch ASC)""",
        f"""CREATE TABLE IF NOT EXISTS {keyspace}.writer_leases (
              holder text PRIMARY KEY, revoked_by text)""",
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
    """A partition's static columns, and ``head``: its last valid seq_nr where known (None: not read)."""

    partition_nr: int
    epoch: int
    first_seq_nr: int
    sealed: bool
    starts: tuple[tuple[int, int], ...]  # by epoch
    holder: str | None = None
    head: int | None = None
    # For starts[i:], the lowest start: a row of an epoch below starts[i]'s counts only below it.
    _limits: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        limits, lowest = [], _NO_LIMIT
        for _, start in reversed(self.starts):
            lowest = min(lowest, start)
            limits.append(lowest)
        object.__setattr__(self, "_limits", tuple(reversed(limits)))

    def valid(self, seq_nr: int, writer_epoch: int) -> bool:
        """A row counts unless a later claim starts at or before it (it was written by a fenced writer
        after that claim read the stream). A stream claimed at every restart has many claims: a search,
        not a scan per row."""
        later = bisect_right(self.starts, (writer_epoch, _NO_LIMIT))
        return later == len(self.starts) or seq_nr < self._limits[later]

    def with_start(self, epoch: int, start: int) -> _Partition:
        return replace(self, epoch=epoch, starts=(*self.starts, (epoch, start)), head=start - 1)


@dataclass(frozen=True, slots=True)
class _Head:
    """Where a stream stands: ``live`` is its live partition; ``pending`` is the partition number a move
    has sealed ``live`` for, when that successor does not exist yet. None for a stream never claimed."""

    live: _Partition
    pending: int | None = None


class CassandraJournal(Journal):
    def __init__(self, settings: CassandraJournalSettings) -> None:
        self._settings = settings
        self._partition_size = settings.partition_size
        self._fenced = settings.lwt_fencing
        self._cluster = _make_cluster(settings)
        # Threads that mostly wait on Cassandra (claims, first appends, reads of many pools at once): a
        # cold start or a burst of new pools keeps dozens of Paxos rounds under way.
        self._executor = ThreadPoolExecutor(max_workers=64, thread_name_prefix="cassandra")
        # Each stream's live partition and head as this process's writer of it left them.
        self._live: dict[str, _Partition] = {}
        # This journal's writer lease: a claim of a stream it holds revokes it, and every append it makes is
        # acknowledged only after a read of the lease, sent once the append was written, finds it unrevoked.
        self._holder = uuid.uuid4().hex
        # Holders this journal revoked already (a cold start claims thousands of one dead holder's streams).
        self._revoked: set[str] = set()
        # Streams whose last conditional write had an unknown outcome: their next head read is SERIAL,
        # which completes (or discards) a Paxos round left in flight.
        self._in_doubt: set[str] = set()
        with self._translated_errors():
            self._session: Session = self._cluster.connect()
            self._create_schema()
            self._prepare()
        self._lease = _LeaseCheck(self._session, self._select_lease.bind((self._holder,)))

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
        table = f"{ks}.stream_events"
        prepare = self._session.prepare
        condition = self._fenced
        self._insert_event = prepare(
            f"INSERT INTO {table} (pool_id, partition_nr, seq_nr, writer_epoch, event_type, schema_version, "
            "payload, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        )
        self._write_head_hint = prepare(f"UPDATE {table} SET head = ? WHERE pool_id = ? AND partition_nr = ?")
        self._seal = prepare(
            f"UPDATE {table} SET sealed = true WHERE pool_id = ? AND partition_nr = ?"
            + (" IF epoch = ? AND sealed = false" if condition else "")
        )
        # Creates a partition (the first, or a move's successor) whose epoch starts at its first seq_nr.
        self._open_partition = prepare(
            f"INSERT INTO {table} (pool_id, partition_nr, epoch, starts, first_seq_nr, head, holder, sealed) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, false)" + (" IF NOT EXISTS" if condition else "")
        )
        # A claim: the next epoch, its holder and where it starts, in one round.
        self._bump_epoch = prepare(
            f"UPDATE {table} SET epoch = ?, holder = ?, starts[?] = ? WHERE pool_id = ? AND partition_nr = ?"
            + (" IF epoch = ? AND sealed = false" if condition else "")
        )
        self._select_partition = prepare(
            f"SELECT epoch, starts, first_seq_nr, sealed, holder FROM {table} "
            "WHERE pool_id = ? AND partition_nr = ? LIMIT 1"
        )
        self._revoke = prepare(f"INSERT INTO {ks}.writer_leases (holder, revoked_by) VALUES (?, ?)")
        self._select_lease = prepare(f"SELECT revoked_by FROM {ks}.writer_leases WHERE holder = ?")
        self._select_tail = prepare(
            f"SELECT seq_nr, writer_epoch FROM {table} WHERE pool_id = ? AND partition_nr = ? "
            "ORDER BY seq_nr DESC, writer_epoch DESC"
        )
        self._select_events = prepare(
            f"SELECT seq_nr, writer_epoch, event_type, schema_version, payload, recorded_at FROM {table} "
            "WHERE pool_id = ? AND partition_nr = ? AND seq_nr >= ?"
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
            f"SELECT DISTINCT pool_id, partition_nr, head, sealed FROM {table}",
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
        # A linearizable read of a partition's statics completes any Paxos round left in flight first.
        self._serial_read = serial if condition else None
        for statement in (self._seal, self._open_partition, self._bump_epoch):
            statement.serial_consistency_level = serial

    # ---------------------------------------------------------------- where a stream stands

    def _partition(self, pool_id: str, partition_nr: int, serial: bool) -> _Partition | None:
        statement = self._select_partition.bind((pool_id, partition_nr))
        if serial and self._serial_read is not None:
            statement.consistency_level = self._serial_read
        row = self._session.execute(statement).one()
        if row is None or row.epoch is None:
            return None
        starts = tuple(sorted((row.starts or {}).items()))
        return _Partition(partition_nr, int(row.epoch), int(row.first_seq_nr), bool(row.sealed), starts, row.holder)

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
        return _Head(found)

    def _with_head(self, pool_id: str, partition: _Partition) -> _Partition:
        """``partition`` with its last valid seq_nr, read from its end (QUORUM: every acknowledged append)."""
        statement = self._select_tail.bind((pool_id, partition.partition_nr))
        statement.fetch_size = _TAIL_PAGE
        for r in self._session.execute(statement):
            if r.seq_nr is not None and partition.valid(r.seq_nr, r.writer_epoch):
                return replace(partition, head=int(r.seq_nr))
        return replace(partition, head=partition.first_seq_nr - 1)

    # ---------------------------------------------------------------- writer epochs and appends

    def claim_epoch(self, pool_id: str) -> int:
        return self._claim(pool_id, held=None)

    def renew_epoch(self, pool_id: str, epoch: int) -> int:
        """The next epoch, claimed only while ``epoch`` is the newest: rows of ``epoch`` that land after it
        (an append that timed out) are then beyond its start, out of the stream."""
        if not self._fenced:
            return epoch
        return self._claim(pool_id, held=epoch)

    def _claim(self, pool_id: str, held: int | None) -> int:
        # A journal whose lease was revoked could claim, but never acknowledge an append again.
        self._refuse_if_revoked(pool_id, held or 0)
        with self._translated_errors(pool_id):
            for attempt in range(_MAX_CLAIM_ATTEMPTS):
                claimed = self._try_claim(pool_id, serial=attempt > 0, held=held)
                if claimed is not None:
                    self._live[pool_id] = claimed
                    return claimed.epoch
                self._live.pop(pool_id, None)
        raise SequenceConflict(pool_id, -1, None)

    def _try_claim(self, pool_id: str, serial: bool, held: int | None) -> _Partition | None:
        """One try at claiming the stream's next epoch: the live partition with it, or None if another
        claim (or a creation, or a move) got in first. ``held``: only if the newest epoch is that one."""
        head = self._resolve(pool_id, serial)
        if held is not None and (head is None or head.live.epoch != held):
            raise WriterFenced(pool_id, held, None if head is None else head.live.epoch)
        if head is None:  # a new stream: its first partition, with epoch 1
            return self._opened(pool_id, 0, FIRST_EPOCH, 1, ())
        if head.pending is not None:  # a move sealed the live partition: finish it, with our epoch
            self._revoke_holder(head.live)
            sealed = self._with_head(pool_id, head.live)
            assert sealed.head is not None
            opened = self._opened(pool_id, head.pending, sealed.epoch + 1, sealed.head + 1, ())
            if opened is not None:
                self._session.execute(self._write_live_hint, (pool_id, head.pending))
            return opened
        live = head.live
        if held is not None and live.holder != self._holder:
            raise WriterFenced(pool_id, held, live.epoch)
        # Once the holder's lease is revoked none of its appends is acknowledged any more (each reads the
        # lease after writing): the stream is the rows that exist now, and a fenced writer's rows landing
        # after this read fall at or beyond the start recorded with the new epoch. (Renewing, the holder is
        # this journal: its own rows in doubt are what must fall beyond.)
        self._revoke_holder(live)
        ended = self._with_head(pool_id, live)
        assert ended.head is not None
        epoch, start = live.epoch + 1, ended.head + 1
        bump: tuple[Any, ...] = (epoch, self._holder, epoch, start, pool_id, live.partition_nr)
        if not _applied(self._session.execute(self._bump_epoch, bump + ((live.epoch,) if self._fenced else ()))):
            return None
        return replace(ended, holder=self._holder).with_start(epoch, start)

    def _revoke_holder(self, partition: _Partition) -> None:
        """Revoke the lease of the journal that held ``partition`` (unless it is this one): every stream it
        holds is fenced, as its host is (decision 0003: a fenced write stops the whole host)."""
        holder = partition.holder
        if not self._fenced or holder is None or holder == self._holder or holder in self._revoked:
            return
        self._session.execute(self._revoke, (holder, self._holder))
        self._revoked.add(holder)

    def _opened(
        self, pool_id: str, partition_nr: int, epoch: int, first_seq_nr: int, events: Sequence[NewEvent]
    ) -> _Partition | None:
        """A partition created with ``epoch`` starting at ``first_seq_nr`` (and ``events`` from there) in
        one conditional batch, if it did not exist; None if it did (nothing written)."""
        head = first_seq_nr - 1 + len(events)
        batch = BatchStatement(batch_type=BatchType.UNLOGGED)
        batch.serial_consistency_level = self._open_partition.serial_consistency_level
        batch.add(
            self._open_partition,
            (pool_id, partition_nr, epoch, {epoch: first_seq_nr}, first_seq_nr, head, self._holder),
        )
        self._add_rows(batch, pool_id, partition_nr, first_seq_nr - 1, epoch, events)
        if not _applied(self._session.execute(batch)):
            return None
        return _Partition(partition_nr, epoch, first_seq_nr, False, ((epoch, first_seq_nr),), self._holder, head)

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
            self._refuse_if_revoked(pool_id, epoch)
            if creates:
                return self._create(pool_id, epoch, events)
            live = self._live.get(pool_id)
            if live is None or live.epoch != epoch or live.sealed or live.head is None:
                head = self._resolve(pool_id)
                if head is None:
                    raise WriterFenced(pool_id, epoch, None)
                live = self._with_head(pool_id, head.live)
                if head.pending is not None:
                    if live.epoch != epoch or live.head != expected_seq_nr:
                        self._refuse(pool_id, expected_seq_nr, epoch)
                    # Our own move sealed the partition and got no further (an unknown outcome): finish it.
                    return self._append_moving(live, pool_id, expected_seq_nr, epoch, events, sealed=True)
            assert live.head is not None
            refusal = append_refusal(pool_id, expected_seq_nr, epoch, (live.epoch, live.head))
            if refusal is not None:
                self._live.pop(pool_id, None)
                raise refusal
            if self._must_move(live, expected_seq_nr):
                return self._append_moving(live, pool_id, expected_seq_nr, epoch, events)
            self._session.execute(self._append_batch(live, pool_id, expected_seq_nr, epoch, events))
            if self._fenced:
                checked: Future[_LeaseState] = Future()
                self._lease.after_written(checked.set_result)
                self._raise_unless_held(pool_id, epoch, checked.result())
            return self._appended(live, pool_id, expected_seq_nr + len(events))

    def _refuse_if_revoked(self, pool_id: str, epoch: int) -> None:
        """Once this journal's lease is known revoked, nothing more is written."""
        if self._lease.revoked_by is not None:
            raise WriterFenced(pool_id, epoch, None)

    def _raise_unless_held(self, pool_id: str, epoch: int, lease: _LeaseState) -> None:
        """After an append's rows are written: acknowledged only if this journal's lease was still held when
        read. Otherwise a claim revoked it first, and whether that claim read these rows is unknown here."""
        if lease is None:
            return
        self._live.pop(pool_id, None)
        if isinstance(lease, BaseException):
            raise _unavailable(lease)
        raise WriterFenced(pool_id, epoch, None, outcome_unknown=True)

    def _create(self, pool_id: str, epoch: int, events: Sequence[NewEvent]) -> int:
        """The stream's first partition, its epoch (claimed with ``epoch``) and its first events in one
        conditional batch (one Paxos round), if the stream was never claimed."""
        opened = self._opened(pool_id, 0, epoch, 1, events)
        if opened is None:
            self._live.pop(pool_id, None)
            raise StreamExists(pool_id, None)
        self._live[pool_id] = opened
        return len(events)

    def append_soon(self, request: AppendRequest) -> Future[int]:
        """``append`` without a thread per call: the common case (the stream's live partition known, no
        move due) is one asynchronous write whose callback hands the append to the lease check, which
        answers; the rest runs on a worker thread."""
        pool_id, expected_seq_nr, epoch, events, _, dormant = request
        live = self._live.get(pool_id)
        if (
            self._lease.revoked_by is not None
            or dormant
            or not events
            or expected_seq_nr == 0
            or live is None
            or live.sealed
            or live.epoch != epoch
            or live.head != expected_seq_nr
            or self._must_move(live, expected_seq_nr)
        ):
            return self._executor.submit(self.append, *request)
        answer: Future[int] = Future()
        try:
            written: ResponseFuture = self._session.execute_async(
                self._append_batch(live, pool_id, expected_seq_nr, epoch, events)
            )
        except Exception:
            return self._executor.submit(self.append, *request)

        def on_error(exc: BaseException) -> None:
            self._live.pop(pool_id, None)
            answer.set_exception(_unavailable(exc))

        def on_checked(lease: _LeaseState) -> None:
            try:
                self._raise_unless_held(pool_id, epoch, lease)
            except JournalError as exc:
                answer.set_exception(exc)
            else:
                answer.set_result(self._appended(live, pool_id, expected_seq_nr + len(events)))

        def on_written(_: Any) -> None:
            if self._fenced:
                self._lease.after_written(on_checked)
            else:
                answer.set_result(self._appended(live, pool_id, expected_seq_nr + len(events)))

        written.add_callbacks(on_written, on_error)
        return answer

    def _must_move(self, live: _Partition, expected_seq_nr: int) -> bool:
        return expected_seq_nr - live.first_seq_nr + 1 >= self._partition_size

    def _append_batch(
        self, live: _Partition, pool_id: str, expected_seq_nr: int, epoch: int, events: Sequence[NewEvent]
    ) -> BatchStatement:
        """The rows and the head hint, one plain batch on one partition (atomic and isolated there)."""
        batch = BatchStatement(batch_type=BatchType.UNLOGGED)
        batch.add(self._write_head_hint, (expected_seq_nr + len(events), pool_id, live.partition_nr))
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
                (pool_id, partition_nr, seq_nr, epoch, e.event_type, e.schema_version, e.payload, now),
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
            seal_values += (epoch,)
        self._live.pop(pool_id, None)
        if not sealed and not _applied(self._session.execute(self._seal, seal_values)):
            head = self._resolve(pool_id, serial=True)
            ours = head is not None and head.pending is not None and head.live.epoch == epoch
            if not ours:  # sealed by an earlier try of ours (an unknown outcome): go on; else refused
                self._refuse(pool_id, expected_seq_nr, epoch)
        successor = live.partition_nr + 1
        opened = self._opened(pool_id, successor, epoch, expected_seq_nr + 1, events)
        if opened is None:
            self._refuse(pool_id, expected_seq_nr, epoch)  # a claim finished the move first: we are fenced
        assert opened is not None
        self._session.execute(self._write_live_hint, (pool_id, successor))
        self._live[pool_id] = opened
        return expected_seq_nr + len(events)

    def _appended(self, live: _Partition, pool_id: str, new_seq_nr: int) -> int:
        self._live[pool_id] = replace(live, head=new_seq_nr)
        return new_seq_nr

    def _refuse(self, pool_id: str, expected_seq_nr: int, epoch: int) -> None:
        """A conditional write was not applied: the stream (read linearizably) says why."""
        self._live.pop(pool_id, None)
        head = self._resolve(pool_id, serial=True)
        standing = None if head is None else self._with_head(pool_id, head.live)
        raise append_refusal(
            pool_id, expected_seq_nr, epoch, None if standing is None else (standing.epoch, standing.head or 0)
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
            if head is None:
                return
            partitions = self._partition_nrs(pool_id, head, from_seq_nr)
            for partition, successor in zip(partitions, [*partitions[1:], None], strict=True):
                # A sealed partition ends where its successor begins.
                last = None if successor is None else successor.first_seq_nr - 1
                statement = self._select_events.bind((pool_id, partition.partition_nr, from_seq_nr))
                statement.fetch_size = self._settings.fetch_size
                for r in self._session.execute(statement):
                    if r.seq_nr is None or not partition.valid(r.seq_nr, r.writer_epoch):
                        continue
                    if last is not None and r.seq_nr > last:
                        break
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
            if head is None:
                return 0
            live = self._with_head(pool_id, head.live)
        assert live.head is not None
        return live.head

    def heads(self) -> dict[str, int]:
        """One paged scan of the partitions' head hints, not a read per pool (a hint: the highest seq_nr
        written there, by a fenced writer too; readers of a stream read its rows)."""
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


# What a read of a journal's lease found: None (held), the holder that revoked it, or the read's error.
_LeaseState = str | BaseException | None


class _LeaseCheck:
    """Acknowledges appends by reading this journal's lease after they are written: an append waits for a
    read SENT after its rows were written, and one read answers every append written before it was sent
    (at most one read is in flight; the appends written meanwhile wait for the next). So a read costs
    one request per round trip, not one per append. Once a read finds the lease revoked, it stays so."""

    def __init__(self, session: Session, read: Any) -> None:
        self._session, self._read = session, read
        self._lock = threading.Lock()
        self._waiting: list[Callable[[_LeaseState], None]] = []
        self._reading = False
        self.revoked_by: str | None = None

    def after_written(self, answer: Callable[[_LeaseState], None]) -> None:
        with self._lock:
            self._waiting.append(answer)
            if self._reading:
                return
            self._reading = True
            covered, self._waiting = self._waiting, []
        self._send(covered)

    def _send(self, covered: list[Callable[[_LeaseState], None]]) -> None:
        try:
            reading: ResponseFuture = self._session.execute_async(self._read)
        except Exception as exc:
            self._answer(covered, exc)
            return
        reading.add_callbacks(partial(self._found, covered), partial(self._answer, covered))

    def _found(self, covered: list[Callable[[_LeaseState], None]], rows: Any) -> None:
        row = rows[0] if rows else None
        if row is not None and self.revoked_by is None:
            self.revoked_by = str(row.revoked_by)
        self._answer(covered, self.revoked_by)

    def _answer(self, covered: list[Callable[[_LeaseState], None]], state: _LeaseState) -> None:
        for answer in covered:
            try:
                answer(state)
            except Exception:  # one caller's failure must not strand the others
                log.exception("answering an append after its lease check failed")
        with self._lock:
            if not self._waiting:
                self._reading = False
                return
            covered, self._waiting = self._waiting, []
        self._send(covered)


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
