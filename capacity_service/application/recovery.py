"""Recovery of a pool's state (latest readable snapshot + newer events) and when to snapshot."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import islice

from capacity_service.adapters.codec import Codec
from capacity_service.adapters.journal import Journal, JournalError, SnapshotRecord, StoredEvent
from capacity_service.domain import PoolState, apply


class JournalCorrupt(JournalError):
    """The stream has a gap or a snapshot of another pool: recovering would produce a wrong state."""


@dataclass(slots=True)
class RecoveredPool:
    state: PoolState
    seq_nr: int
    snapshot_seq_nr: int
    events_replayed: int


def recover_pool(journal: Journal, codec: Codec, pool_id: str) -> RecoveredPool:
    loaded = journal.load_snapshot(pool_id, lambda record: _decoded_snapshot(codec, pool_id, record))
    state, snapshot_seq_nr = loaded if loaded is not None else (PoolState(pool_id), 0)
    return _replayed(codec, pool_id, state, snapshot_seq_nr, journal.read(pool_id, snapshot_seq_nr + 1))


def replay_pool(journal: Journal, codec: Codec, pool_id: str, up_to: int | None = None) -> RecoveredPool:
    """The pool's state from its events alone, every one from the first (no snapshot), up to seq_nr
    ``up_to`` (None: all): what an operator's check compares with, and what a reset sets a pool back to."""
    events = journal.read(pool_id) if up_to is None else islice(journal.read(pool_id), up_to)
    return _replayed(codec, pool_id, PoolState(pool_id), 0, events)


def differences(live: PoolState, replayed: PoolState) -> list[str]:
    """Where two states of one pool disagree, in words (empty: they agree)."""
    found = [
        f"{name}: live {getattr(live, name)!r}, replayed {getattr(replayed, name)!r}"
        for name in (
            *("exists", "capacity", "zone", "slot_start", "slot_end", "reserved", "retired", "paused_reason"),
            *("max_hold_seconds", "waitlist_limit"),
        )
        if getattr(live, name) != getattr(replayed, name)
    ]
    ids = sorted(set(live.reservations) | set(replayed.reservations))
    for reservation_id in [i for i in ids if live.reservations.get(i) != replayed.reservations.get(i)][:20]:
        found.append(
            f"reservation {reservation_id!r}: live {live.reservations.get(reservation_id)!r}, "
            f"replayed {replayed.reservations.get(reservation_id)!r}"
        )
    if live.reservation_by_request != replayed.reservation_by_request:
        found.append("the request ids of the reservations differ")
    if list(live.waiting) != list(replayed.waiting):
        found.append("the entries waiting, or their order, differ")
    entry_ids = sorted(set(live.waitlist) | set(replayed.waitlist))
    for entry_id in [i for i in entry_ids if live.waitlist.get(i) != replayed.waitlist.get(i)][:20]:
        found.append(
            f"waitlist entry {entry_id!r}: live {live.waitlist.get(entry_id)!r}, "
            f"replayed {replayed.waitlist.get(entry_id)!r}"
        )
    return found


def recover_pools(journal: Journal, codec: Codec, pool_ids: Sequence[str]) -> dict[str, RecoveredPool | JournalCorrupt]:
    """``recover_pool`` of many pools with a few queries for all of them (a cold start recovers thousands).
    A pool whose newest snapshot does not decode takes ``recover_pool``'s path, which tries older ones; a
    corrupt stream is that pool's answer, not the others'. Raises only what the journal raises."""
    recovered: dict[str, RecoveredPool | JournalCorrupt] = {}
    starts: dict[str, tuple[PoolState, int]] = {pool_id: (PoolState(pool_id), 0) for pool_id in pool_ids}
    for pool_id, record in journal.newest_snapshots(pool_ids).items():
        try:
            starts[pool_id] = (_decoded_snapshot(codec, pool_id, record), record.seq_nr)
        except Exception:
            del starts[pool_id]
            try:
                recovered[pool_id] = recover_pool(journal, codec, pool_id)
            except JournalCorrupt as exc:
                recovered[pool_id] = exc
    streams = journal.read_streams({pool_id: seq_nr + 1 for pool_id, (_, seq_nr) in starts.items()})
    for pool_id, (state, snapshot_seq_nr) in starts.items():
        try:
            recovered[pool_id] = _replayed(codec, pool_id, state, snapshot_seq_nr, streams[pool_id])
        except JournalCorrupt as exc:
            recovered[pool_id] = exc
    return recovered


def _decoded_snapshot(codec: Codec, pool_id: str, record: SnapshotRecord) -> PoolState:
    state = codec.decode_snapshot(record.schema_version, record.payload)
    if state.pool_id != pool_id:
        raise JournalCorrupt(f"snapshot of pool {state.pool_id!r} stored under {pool_id!r}")
    return state


def _replayed(
    codec: Codec, pool_id: str, state: PoolState, snapshot_seq_nr: int, events: Iterable[StoredEvent]
) -> RecoveredPool:
    seq_nr = snapshot_seq_nr
    decode_event = codec.decode_event
    for stored in events:
        if stored.seq_nr != seq_nr + 1:
            raise JournalCorrupt(f"pool {pool_id!r}: expected seq_nr {seq_nr + 1}, found {stored.seq_nr}")
        apply(state, decode_event(stored.event_type, stored.schema_version, stored.payload))
        seq_nr = stored.seq_nr
    return RecoveredPool(state, seq_nr, snapshot_seq_nr, seq_nr - snapshot_seq_nr)


@dataclass(frozen=True, slots=True)
class SnapshotPolicy:
    """Snapshot once ``every_n_events`` events have been written since the last snapshot, and at least half
    as many as the state holds reservations. A snapshot costs time in proportion to the state (copying it
    holds the pool's writes); spacing snapshots by the state's size keeps that cost per event constant,
    and recovery stays in proportion to the state: a snapshot of size S, then about S/2 events."""

    every_n_events: int

    def due(self, seq_nr: int, last_snapshot_seq_nr: int, state_size: int = 0) -> bool:
        return seq_nr - last_snapshot_seq_nr >= max(self.every_n_events, state_size // 2)


def encode_snapshot(codec: Codec, state: PoolState, seq_nr: int) -> SnapshotRecord:
    version, payload = codec.encode_snapshot(state)
    return SnapshotRecord(state.pool_id, seq_nr, version, payload)
