"""The event journal port: what the write side needs from a store, independent of the store.

A pool's events form one stream numbered 1, 2, 3, ... Each stream has a head (writer epoch, highest
sequence number). Appends are conditional on both: a writer that expects a stale sequence number, or
holds an epoch older than the newest claimed one, writes nothing and gets a typed error. This is what
fences a zombie incarnation of a pool actor. Payloads are opaque bytes (see ``serialization``).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self, TypeVar

from capacity_service.domain.ids import is_pool_stream

T = TypeVar("T")
log = logging.getLogger(__name__)


# The epoch of a stream's first claim: a stream claimed at it has no events (none could be written before).
FIRST_EPOCH = 1


class JournalError(Exception):
    """Base of everything a journal raises."""


class SequenceConflict(JournalError):
    """The stream's head is not at the expected sequence number: someone else appended."""

    def __init__(self, pool_id: str, expected: int, actual: int | None) -> None:
        super().__init__(f"pool {pool_id!r}: expected seq_nr {expected}, journal is at {actual}")
        self.pool_id, self.expected, self.actual = pool_id, expected, actual


class WriterFenced(JournalError):
    """A newer writer epoch was claimed for this pool: this writer is a zombie and must stop."""

    def __init__(self, pool_id: str, epoch: int, current_epoch: int | None, outcome_unknown: bool = False) -> None:
        super().__init__(f"pool {pool_id!r}: writer epoch {epoch} is fenced by epoch {current_epoch}")
        self.pool_id, self.epoch, self.current_epoch = pool_id, epoch, current_epoch
        # The refused append may have been written all the same (Cassandra writes first, then checks the
        # epoch): the claim that fenced it decides whether it counts; its callers' outcome is unknown.
        self.outcome_unknown = outcome_unknown


class StreamExists(JournalError):
    """An append that was to create a stream (``AppendRequest.creates``) found it claimed already: nothing
    was written. Its writer claims the stream, reads it and decides again."""

    def __init__(self, pool_id: str, current_epoch: int | None) -> None:
        super().__init__(f"stream {pool_id!r} exists already (epoch {current_epoch}): it was not created")
        self.pool_id, self.current_epoch = pool_id, current_epoch


class JournalUnavailable(JournalError):
    """The store could not be reached or did not answer in time. The outcome of a write that raised
    this is unknown: re-read the stream to learn it."""


class JournalUnusable(JournalError):
    """The journal the settings name cannot work at all (a driver missing, the server unreachable, tables
    that cannot be created): the message says what is wrong and what to do."""


def append_refusal(
    pool_id: str, expected_seq_nr: int, epoch: int, head: tuple[int, int] | None
) -> WriterFenced | SequenceConflict | None:
    """THE fencing rule, for every adapter: an append by ``epoch`` expecting ``expected_seq_nr`` against a
    stream whose head is ``head`` ((epoch, seq_nr), None for no head) is refused with ``WriterFenced``
    unless its epoch is the newest claimed, then with ``SequenceConflict`` unless the stream ends where it
    expects; None: it may be written."""
    if head is None or head[0] != epoch:
        return WriterFenced(pool_id, epoch, None if head is None else head[0])
    if head[1] != expected_seq_nr:
        return SequenceConflict(pool_id, expected_seq_nr, head[1])
    return None


def creation_refusal(pool_id: str, head: tuple[int, int] | None) -> StreamExists | None:
    """THE rule for an append that creates its stream: it may be written only if the stream was never
    claimed (no head at all); then it claims it with ``FIRST_EPOCH`` in the same atomic write."""
    return None if head is None else StreamExists(pool_id, head[0])


@dataclass(frozen=True, slots=True)
class NewEvent:
    event_type: str
    schema_version: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class AppendRequest:
    """One pool's append, as ``append_many`` takes them; unpacks into ``append``'s arguments."""

    pool_id: str
    expected_seq_nr: int
    epoch: int
    events: Sequence[NewEvent]
    # The stream is believed new: this append also claims it, with FIRST_EPOCH (expected_seq_nr 0), in the
    # same atomic write, where a claim and an append were two. Refused with StreamExists if it was claimed.
    creates: bool = False
    # The stream is dormant once this append lands (``mark_dormant``): recorded with it, where a mark was a
    # write of its own after it.
    dormant: bool = False

    def __post_init__(self) -> None:
        if self.creates and (self.expected_seq_nr != 0 or self.epoch != FIRST_EPOCH):
            raise ValueError("an append that creates its stream starts it: seq_nr 0, epoch FIRST_EPOCH")

    def __iter__(self) -> Iterator[Any]:
        return iter((self.pool_id, self.expected_seq_nr, self.epoch, self.events, self.creates, self.dormant))


@dataclass(frozen=True, slots=True)
class StoredEvent:
    pool_id: str
    seq_nr: int
    event_type: str
    schema_version: int
    payload: bytes
    writer_epoch: int
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class SnapshotRecord:
    pool_id: str
    seq_nr: int
    schema_version: int
    payload: bytes


class Journal(ABC):
    """Abstract recorder. Adapters: ``SqlJournal``, ``CassandraJournal``, ``InMemoryJournal``."""

    @abstractmethod
    def claim_epoch(self, pool_id: str) -> int:
        """Claim a writer epoch greater than every earlier one; earlier holders are fenced from now on. The
        first claim of a stream gets ``FIRST_EPOCH``."""

    def renew_epoch(self, pool_id: str, epoch: int) -> int:
        """After an append by ``epoch`` whose outcome is unknown, before its writer reads the stream again:
        the epoch the writer goes on with, or ``WriterFenced`` if a newer one was claimed. Where such an
        append may still land after that read (Cassandra: a write that timed out), this claims the next
        epoch, only if ``epoch`` is still the newest, so that its late rows fall out of the stream; where a
        failed write is settled once the writer reads (a SQL transaction), it is ``epoch`` itself."""
        return epoch

    def claim_epochs(self, pool_ids: Sequence[str]) -> list[int]:
        """``claim_epoch`` for several pools, in order. Adapters override this to claim them in one
        transaction (a cold start claims every pool: one durable write each was most of its time). On an
        error some may be claimed already, which is harmless: an unused claim only fences older writers."""
        return [self.claim_epoch(pool_id) for pool_id in pool_ids]

    @abstractmethod
    def append(
        self,
        pool_id: str,
        expected_seq_nr: int,
        epoch: int,
        events: Sequence[NewEvent],
        creates: bool = False,
        dormant: bool = False,
    ) -> int:
        """Atomically append ``events`` as seq_nrs ``expected_seq_nr + 1 ...``, if the stream is at
        ``expected_seq_nr`` and ``epoch`` is the newest claimed. Returns the new highest seq_nr.
        The first append of a stream also registers the pool. Raises ``SequenceConflict``,
        ``WriterFenced`` or ``JournalUnavailable``. ``creates``: the stream is believed never claimed, and
        this append claims it with ``FIRST_EPOCH`` (``AppendRequest.creates``); ``StreamExists`` if it was.
        ``dormant``: the append also marks the stream dormant (``mark_dormant``), in the same transaction
        where the store has one; where it has not (Cassandra: another partition), right after it, and a
        mark lost there only means the stream is hosted once more at the next start, and marked then."""

    def append_many(self, appends: Sequence[AppendRequest]) -> list[int | JournalError]:
        """Several pools' appends at once; each is atomic and conditional on its own, and gets its own
        result: the new highest seq_nr, or the error ``append`` would have raised. Adapters override this
        to share one transaction or round trip among them (group commit across pools)."""
        results: list[int | JournalError] = []
        for request in appends:
            try:
                results.append(self.append(*request))
            except JournalError as exc:
                results.append(exc)
        return results

    def append_many_now(self, appends: Sequence[AppendRequest]) -> list[int | JournalError] | None:
        """``append_many``, if it can run right now without waiting for another writer or the network;
        else None, and nothing is written (the caller then runs ``append_many`` on a worker thread). A
        journal in a local file answers in about a millisecond: less than handing the call to a worker
        thread costs a busy event loop (the thread's wake-up, then the GIL). Default: None."""
        return None

    def append_soon(self, request: AppendRequest) -> Future[int] | None:
        """Start ``append`` and return at once with a future of its result (the new highest seq_nr, or the
        ``JournalError`` it raised), for a store where appends of different pools share nothing and run
        best side by side; None: this journal commits several pools together (``append_many``) instead.
        Default: None."""
        return None

    @abstractmethod
    def read(self, pool_id: str, from_seq_nr: int = 1) -> Iterator[StoredEvent]:
        """The stream from ``from_seq_nr`` on, in order, fetched page by page."""

    @abstractmethod
    def highest_seq_nr(self, pool_id: str) -> int:
        """0 for a stream with no events."""

    @abstractmethod
    def save_snapshot(self, snapshot: SnapshotRecord, keep: int) -> None:
        """Store a snapshot and delete all but the newest ``keep`` of the pool."""

    @abstractmethod
    def snapshots(self, pool_id: str) -> Iterator[SnapshotRecord]:
        """The pool's stored snapshots, newest first, fetched as they are consumed."""

    @abstractmethod
    def pool_ids(self) -> Iterator[str]:
        """Every stream (a pool's, an order's or a schedule's: ``domain.ids.is_pool_stream``) that has at least
        one event: the registry used for bootstrap and the watchdog."""

    @abstractmethod
    def mark_dormant(self, pool_id: str) -> None:
        """Record that the pool needs no hosting any more (retired, with nothing held or active): the
        watchdog and the caches' sweeps leave it out (``live_pool_ids``). For good; its events stay."""

    def mark_dormant_many(self, pool_ids: Sequence[str]) -> None:
        """``mark_dormant`` of several streams; adapters override it with one transaction."""
        for pool_id in pool_ids:
            self.mark_dormant(pool_id)

    @abstractmethod
    def dormant_pool_ids(self) -> Iterator[str]:
        """The pools ``mark_dormant`` recorded."""

    def live_stream_ids(self) -> list[str]:
        """The registered streams that are not dormant: those the service keeps hosted (the watchdog's)."""
        dormant = set(self.dormant_pool_ids())
        return [pool_id for pool_id in self.pool_ids() if pool_id not in dormant]

    def live_pool_ids(self) -> list[str]:
        """The live streams that are pools (the caches' sweeps, an operator's pause of them all)."""
        return [stream_id for stream_id in self.live_stream_ids() if is_pool_stream(stream_id)]

    def heads(self) -> dict[str, int]:
        """The highest seq_nr of every registered pool. Adapters whose heads live in one table override
        this with one query (the warehouse's catch-up sweep compares them with its cursors)."""
        return {pool_id: self.highest_seq_nr(pool_id) for pool_id in self.pool_ids()}

    def newest_snapshots(self, pool_ids: Sequence[str]) -> dict[str, SnapshotRecord]:
        """The newest stored snapshot of each of ``pool_ids`` that has one (a cold start recovers
        thousands of pools: adapters override this with a few queries instead of one per pool)."""
        found: dict[str, SnapshotRecord] = {}
        for pool_id in pool_ids:
            newest = next(self.snapshots(pool_id), None)
            if newest is not None:
                found[pool_id] = newest
        return found

    def read_streams(self, from_seq_nrs: Mapping[str, int]) -> dict[str, list[StoredEvent]]:
        """Each pool's events from its ``from_seq_nrs`` entry on, in order (``read`` of many pools;
        adapters override it as ``newest_snapshots``)."""
        return {pool_id: list(self.read(pool_id, from_seq_nr)) for pool_id, from_seq_nr in from_seq_nrs.items()}

    def close(self) -> None:  # noqa: B027 - optional hook, most adapters hold connections
        """Release connections. Default: nothing to release."""

    def load_snapshot(self, pool_id: str, decode: Callable[[SnapshotRecord], T]) -> tuple[T, int] | None:
        """The newest snapshot that decodes, with its seq_nr; an undecodable one is logged and skipped
        so a corrupt snapshot costs a longer replay, never a pool."""
        for record in self.snapshots(pool_id):
            try:
                return decode(record), record.seq_nr
            except Exception as exc:
                log.warning(
                    "pool %s: snapshot at seq_nr %d unreadable, trying an older one: %s",
                    pool_id,
                    record.seq_nr,
                    exc,
                )
        return None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
