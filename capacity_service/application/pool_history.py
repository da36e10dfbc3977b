"""A pool's history from its journal, for the operator's console: its events, decoded, each with the time
the journal recorded it, and the pool as it was at any past moment, replayed by the domain's own ``apply``.

Events carry no time of their own (a decision is a pure function of state and command). The journal
records one with every event it appends: ``recorded_at``, the appending writer's wall clock when it wrote
the event, after the pool decided it, as the warehouse and the webhooks use it too. The pool "at" a moment
is the pool after the longest run of its events from the first that were all recorded at or before that
moment: always a state the pool really had, even if two incarnations' clocks disagreed and the recorded
times of a stream are not quite in order.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime

from capacity_service.adapters.codec import Codec
from capacity_service.adapters.journal import Journal, StoredEvent
from capacity_service.application.recovery import JournalCorrupt
from capacity_service.domain import PoolEvent, PoolState, apply


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    seq_nr: int
    event_type: str  # the name the journal stores it under
    recorded_at: datetime
    event: PoolEvent


@dataclass(frozen=True, slots=True)
class ReplayedHistory:
    """The pool as it was after event ``seq_nr`` (0: before its first event, when it did not exist yet), the
    stream's extent (its newest event, the times of its first and newest), and ``events``: the newest at
    most ``limit`` of the events replayed (of those before ``before`` when given), newest first."""

    state: PoolState
    seq_nr: int
    last_seq_nr: int
    first_recorded_at: datetime
    last_recorded_at: datetime
    events: list[RecordedEvent]


def read_history(
    journal: Journal, codec: Codec, pool_id: str, at: datetime | None, before: int | None, limit: int
) -> ReplayedHistory | None:
    """The pool's history up to ``at`` (None: all of it, now); None when the pool has no events. Reads the
    stream from its first event to ``at`` (snapshots do not say when they were true), then the newest
    event if it stopped before it. Raises what the journal raises, and ``JournalCorrupt`` for a gap."""
    state, seq_nr = PoolState(pool_id), 0
    page: deque[RecordedEvent] = deque(maxlen=limit)
    first: StoredEvent | None = None
    newest: StoredEvent | None = None
    stream = journal.read(pool_id)
    try:
        for stored in stream:
            first = first or stored
            newest = stored
            if at is not None and stored.recorded_at > at:
                break
            if stored.seq_nr != seq_nr + 1:
                raise JournalCorrupt(f"pool {pool_id!r}: expected seq_nr {seq_nr + 1}, found {stored.seq_nr}")
            event = codec.decode_event(stored.event_type, stored.schema_version, stored.payload)
            apply(state, event)
            seq_nr = stored.seq_nr
            if before is None or seq_nr < before:
                page.append(RecordedEvent(seq_nr, stored.event_type, stored.recorded_at, event))
    finally:
        _close(stream)
    if first is None or newest is None:
        return None
    if newest.seq_nr == seq_nr + 1:  # stopped at ``at``: the stream's newest event is further on
        newest = _event_at(journal, pool_id, journal.highest_seq_nr(pool_id)) or newest
    return ReplayedHistory(state, seq_nr, newest.seq_nr, first.recorded_at, newest.recorded_at, list(reversed(page)))


def _event_at(journal: Journal, pool_id: str, seq_nr: int) -> StoredEvent | None:
    stream = journal.read(pool_id, seq_nr)
    try:
        return next(iter(stream), None)
    finally:
        _close(stream)


def _close(stream: object) -> None:
    """End a journal read left part way (its connection goes back now, not when it is collected)."""
    close = getattr(stream, "close", None)
    if close is not None:
        close()
