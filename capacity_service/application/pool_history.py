"""A pool's history from its journal, for the operator's console: its events, decoded, each with the time
the journal recorded it, and the pool as it was at any past moment, replayed by the domain's own ``apply``.

Events carry no time of their own (a decision is a pure function of state and command). The journal
records one with every event it appends: ``recorded_at``, the appending writer's wall clock when it wrote
the event, after the pool decided it (the webhooks use it too). The pool "at" a moment is
the pool after the longest run of its events from the first that were all recorded at or before that
moment: always a state the pool really had, even if two incarnations' clocks disagreed and the recorded
times of a stream are not quite in order.

The present needs no replay: the pool's writer has it (``glance_of`` its state), and the events listed
are the stream's newest, read from its end. Only a past moment costs a read of the stream from its first
event up to that moment.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from capacity_service.adapters.codec import Codec
from capacity_service.adapters.journal import Journal, StoredEvent
from capacity_service.application.recovery import JournalCorrupt
from capacity_service.domain import (
    PoolEvent,
    PoolState,
    PoolView,
    Reservation,
    ReservationStatus,
    WaitlistPlace,
    apply,
    view_of,
)


class PoolGlance(NamedTuple):
    """A pool as the console shows it: its view, why it is paused, and at most ``limit`` of each list: its
    holds (soonest expiry first), its newest reservations (newest first), its entries waiting (in order)."""

    view: PoolView
    paused_reason: str | None
    holds: list[Reservation]
    reservations: list[Reservation]
    waiting: list[WaitlistPlace]


def glance_of(state: PoolState, version: int, limit: int) -> PoolGlance:
    """Costs a pass over the pool's reservations (for its holds); the other lists only what they hold."""
    holds = [r for r in state.reservations.values() if r.status is ReservationStatus.HELD]
    holds.sort(key=lambda hold: (hold.expires_at is None, hold.expires_at))
    newest = itertools.islice(reversed(state.reservations.values()), limit)
    waiting = [
        WaitlistPlace(state.waitlist[entry_id], position, None, state.retired)
        for position, entry_id in enumerate(itertools.islice(state.waiting, limit), start=1)
    ]
    return PoolGlance(view_of(state, version), state.paused_reason, holds[:limit], list(newest), waiting)


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    seq_nr: int
    event_type: str  # the name the journal stores it under
    recorded_at: datetime
    event: PoolEvent


@dataclass(frozen=True, slots=True)
class JournalHistory:
    """Events up to ``seq_nr`` (0: the moment asked is before the pool's first event): the newest at most
    ``limit`` of them (of those before ``before`` when given), newest first; the stream's extent (its newest
    event, the times of its first and newest); and, for a past moment, the pool then (``replayed``; None
    when the present was asked: its writer has it)."""

    seq_nr: int
    last_seq_nr: int
    first_recorded_at: datetime
    last_recorded_at: datetime
    events: list[RecordedEvent]
    replayed: PoolGlance | None


def read_history(
    journal: Journal, codec: Codec, pool_id: str, at: datetime | None, before: int | None, limit: int
) -> JournalHistory | None:
    """The pool's history up to ``at`` (None: now); None when the pool has no events. Raises what the
    journal raises, and ``JournalCorrupt`` for a gap in the stream."""
    if at is None:
        return _recent(journal, codec, pool_id, before, limit)
    return _replayed_until(journal, codec, pool_id, at, before, limit)


def _recent(journal: Journal, codec: Codec, pool_id: str, before: int | None, limit: int) -> JournalHistory | None:
    """The stream's newest events, read from its end: a few rows, however long the stream is."""
    last = journal.highest_seq_nr(pool_id)
    first = _event_at(journal, pool_id, 1)
    if last == 0 or first is None:
        return None
    end = last if before is None else min(last, before - 1)
    start = max(1, end - limit + 1)
    page: list[RecordedEvent] = []
    if end >= 1:
        for stored in _stream(journal, pool_id, start):
            if stored.seq_nr > end:
                break
            page.append(_recorded(codec, stored))
    newest = page[-1] if end == last and page else _event_at(journal, pool_id, last) or first
    return JournalHistory(last, last, first.recorded_at, newest.recorded_at, page[::-1], None)


def _replayed_until(
    journal: Journal, codec: Codec, pool_id: str, at: datetime, before: int | None, limit: int
) -> JournalHistory | None:
    """The stream from its first event to ``at``, every event applied (snapshots do not say when they were
    true), then its newest event if it stopped before it."""
    state, seq_nr = PoolState(pool_id), 0
    page: deque[RecordedEvent] = deque(maxlen=limit)
    first: StoredEvent | None = None
    newest: StoredEvent | None = None
    for stored in _stream(journal, pool_id, 1):
        first = first or stored
        newest = stored
        if stored.recorded_at > at:
            break
        if stored.seq_nr != seq_nr + 1:
            raise JournalCorrupt(f"pool {pool_id!r}: expected seq_nr {seq_nr + 1}, found {stored.seq_nr}")
        recorded = _recorded(codec, stored)
        apply(state, recorded.event)
        seq_nr = stored.seq_nr
        if before is None or seq_nr < before:
            page.append(recorded)
    if first is None or newest is None:
        return None
    if newest.seq_nr == seq_nr + 1:  # stopped at ``at``: the stream's newest event is further on
        newest = _event_at(journal, pool_id, journal.highest_seq_nr(pool_id)) or newest
    glance = glance_of(state, seq_nr, limit)
    return JournalHistory(seq_nr, newest.seq_nr, first.recorded_at, newest.recorded_at, list(reversed(page)), glance)


def _recorded(codec: Codec, stored: StoredEvent) -> RecordedEvent:
    event = codec.decode_event(stored.event_type, stored.schema_version, stored.payload)
    return RecordedEvent(stored.seq_nr, stored.event_type, stored.recorded_at, event)


def _event_at(journal: Journal, pool_id: str, seq_nr: int) -> StoredEvent | None:
    for stored in _stream(journal, pool_id, seq_nr):
        return stored
    return None


def _stream(journal: Journal, pool_id: str, from_seq_nr: int) -> Iterator[StoredEvent]:
    """``journal.read``, ended as soon as the caller stops (its connection goes back then, not when the
    generator is collected)."""
    stream = journal.read(pool_id, from_seq_nr)
    try:
        yield from stream
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
