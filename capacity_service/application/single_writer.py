"""What a stream's single writer is, to the machinery that hosts it (``stream_runner``): pools
(``PoolWriter``), orders (``OrderWriter``) and schedules (``ScheduleWriter``) are all three, on the same
``StreamWriter``."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from capacity_service.adapters.journal import (
    FIRST_EPOCH,
    AppendRequest,
    Journal,
    JournalError,
    JournalUnavailable,
    NewEvent,
    WriterFenced,
)

Outcome = TypeVar("Outcome")
Persisted = TypeVar("Persisted")
State = TypeVar("State")


@dataclass(frozen=True, slots=True)
class BatchResult(Generic[Outcome, Persisted]):
    """The answer to each command of a batch, and the events it added (with whatever the writer keeps
    about each)."""

    outcomes: list[Outcome]
    persisted: list[Persisted]


@dataclass(frozen=True, slots=True)
class PreparedBatch(Generic[Outcome, Persisted]):
    """Commands decided and applied tentatively; ``append`` is what must become durable (None: nothing)."""

    result: BatchResult[Outcome, Persisted]
    append: AppendRequest | None


def landed_after_all(prepared: PreparedBatch[Any, Any], error: JournalError, seq_nr_now: int) -> bool:
    """Whether an append whose outcome was unknown (``JournalUnavailable``) is in the journal after all: appends
    are atomic and the writer is the stream's only one, so if the stream, re-read, ends exactly where the
    append would have left it, the append is the writer's own and durable."""
    assert prepared.append is not None
    expected_after = prepared.append.expected_seq_nr + len(prepared.append.events)
    return isinstance(error, JournalUnavailable) and seq_nr_now == expected_after


class StreamHold:
    """How a writer holds its stream: by an epoch it claimed, or, for a stream it believes new, by none yet.
    Then its first append claims the stream with ``FIRST_EPOCH`` in the same write (``AppendRequest.creates``:
    one durable write where a claim and an append were two). If that append finds the stream exists, or
    its outcome is unknown (it may have landed, or another writer's may have), the writer claims the stream
    before it reads it again (``claim_if_needed``): only a claim of its own proves which events are whose."""

    def __init__(self, journal: Journal, stream_id: str) -> None:
        self._journal = journal
        self._stream_id = stream_id
        self.epoch = 0
        self.creating = False  # believed new: the next append creates the stream
        self._must_claim = False
        self._must_renew = False
        # An append of this writer marked the stream dormant (``AppendRequest.dormant``): no mark of its own.
        self.dormancy_recorded = False

    def claimed(self, epoch: int) -> None:
        self.epoch, self.creating, self._must_claim, self._must_renew = epoch, False, False, False

    def believe_new(self) -> None:
        self.epoch, self.creating, self._must_claim, self._must_renew = FIRST_EPOCH, True, False, False

    def append_request(self, expected_seq_nr: int, events: list[NewEvent], dormant: bool) -> AppendRequest | None:
        """The append of ``events``; ``dormant``: the stream is dormant after them (recorded with them, once)."""
        if not events:
            return None
        marks = dormant and not self.dormancy_recorded
        return AppendRequest(self._stream_id, expected_seq_nr, self.epoch, events, creates=self.creating, dormant=marks)

    def landed(self, append: AppendRequest | None) -> None:
        self.creating = False
        if append is not None and append.dormant:
            self.dormancy_recorded = True

    def failed(self, outcome_unknown: bool) -> bool:
        """An append failed; True if it was to create the stream (the writer then claims before reading
        again). Any other append whose outcome is unknown renews the epoch before the stream is read again:
        its rows may still land after the read (a write to Cassandra that timed out; ``Journal.renew_epoch``)."""
        if not self.creating:
            self._must_renew = self._must_renew or outcome_unknown
            return False
        self.creating, self._must_claim = False, True
        return True

    def claim_if_needed(self) -> None:
        """Before the stream is read: claim it if a creation failed, renew the epoch after an unknown
        outcome (raises the journal's error: ``WriterFenced`` if a newer writer claimed it meanwhile)."""
        if self._must_claim:
            self.epoch = self._journal.claim_epoch(self._stream_id)
            self._must_claim = self._must_renew = False
        elif self._must_renew:
            self.epoch = self._journal.renew_epoch(self._stream_id, self.epoch)
            self._must_renew = False

    def take_over(self) -> None:
        """The stream is not new after all: it is claimed before the writer reads it."""
        self.creating, self._must_claim = False, True


class StreamWriter(ABC, Generic[State]):
    """What the single writers of pools, orders and schedules share: the stream held by a ``StreamHold``, the
    state and seq_nr its events made, and settling an append (landed, or failed: the tentative state thrown
    away). A writer adds how it reads its stream (``reload``), decides and answers."""

    def __init__(self, journal: Journal, stream_id: str, state: State, described: str) -> None:
        self._journal = journal
        self._stream_id = stream_id
        self._state = state
        self._seq_nr = 0
        self._hold = StreamHold(journal, stream_id)
        self._described = described  # in log lines: "pool north:2026-12-01T08"
        self.fenced = False

    @abstractmethod
    def _new_state(self) -> State:
        """The state of the stream with no events."""

    @abstractmethod
    def reload(self) -> None:
        """Read the stream again (claiming it first, if a failed creation left that to do)."""

    @property
    def stream_id(self) -> str:
        return self._stream_id

    @property
    def state(self) -> State:
        return self._state

    @property
    def seq_nr(self) -> int:
        return self._seq_nr

    @property
    def needs_reload(self) -> bool:
        return self._seq_nr < 0

    @property
    def dormancy_recorded(self) -> bool:
        return self._hold.dormancy_recorded

    @property
    def epoch(self) -> int:
        return self._hold.epoch

    @property
    def believed_new(self) -> bool:
        """Started as a new stream without a claim: its first append creates the stream (``StreamHold``)."""
        return self._hold.creating

    def _claimed(self, epoch: int) -> None:
        """Held from now on by ``epoch``, claimed for this writer."""
        self._hold.claimed(epoch)
        self.fenced = False

    def start_new(self) -> None:
        """Start as a stream that does not exist yet, claiming nothing: the first append creates the stream,
        or finds it exists (the runner then calls ``take_over``)."""
        self._hold.believe_new()
        self.fenced = False
        self._state, self._seq_nr = self._new_state(), 0

    def take_over(self) -> None:
        """The stream exists after all: claim it and read it (or, if the journal fails, read it before the
        next decision)."""
        self._hold.take_over()
        self._discard_tentative_state()

    def _ready_to_decide(self) -> None:
        """Refuse if fenced; read the stream first if a failed append left it unread."""
        if self.fenced:
            raise WriterFenced(self._stream_id, self.epoch, None)
        if self.needs_reload:
            self.reload()

    def append_landed(self, prepared: PreparedBatch[Any, Any], new_seq_nr: int) -> None:
        self._hold.landed(prepared.append)
        self._seq_nr = new_seq_nr

    def append_failed(self, prepared: PreparedBatch[Any, Any], error: JournalError) -> None:
        """The append of ``prepared`` failed: throw the tentative state away (re-reading the stream).
        Returns normally if the stream shows the append landed after all; raises ``error`` otherwise."""
        if isinstance(error, WriterFenced):
            self.fenced = True
        # then the reload claims first, and only a later claim's read counts
        created = self._hold.failed(outcome_unknown=isinstance(error, JournalUnavailable))
        self._discard_tentative_state()
        if not created and landed_after_all(prepared, error, self._seq_nr):
            # under the logger of the writer's own module (pool_writer, order_writer, schedule_writer)
            log = logging.getLogger(type(self).__module__)
            log.info("%s: append reported a failure but is in the journal", self._described)
            return
        raise error

    def _discard_tentative_state(self) -> None:
        try:
            self.reload()
        except JournalError as exc:  # keep nothing unproven, and read before the next decision
            # Renewing the epoch may find a newer writer (this one is a zombie); else the journal is down.
            self.fenced = self.fenced or isinstance(exc, WriterFenced)
            self._state, self._seq_nr = self._new_state(), -1


class SingleWriter(Protocol):
    """The single writer of one stream, as its runner uses it: deciding batches and settling their appends,
    its timer, and when it may be handed back."""

    @property
    def stream_id(self) -> str: ...
    @property
    def needs_reload(self) -> bool: ...
    @property
    def dormant(self) -> bool: ...
    @property
    def dormancy_recorded(self) -> bool: ...
    @property
    def believed_new(self) -> bool: ...
    def view(self) -> object: ...
    def reload(self) -> None: ...
    def take_over(self) -> None: ...
    def prepare(self, commands: list[Any]) -> PreparedBatch[Any, Any]: ...
    def append_landed(self, prepared: PreparedBatch[Any, Any], new_seq_nr: int) -> None: ...
    def append_failed(self, prepared: PreparedBatch[Any, Any], error: JournalError) -> None: ...
    def repeats_known_request(self, command: Any) -> bool: ...
    def next_expiry(self) -> datetime | None: ...
    def timer_command(self) -> Any: ...
    def take_snapshot_if_due(self) -> object | None: ...
    def store_snapshot(self, captured: Any) -> bool: ...
