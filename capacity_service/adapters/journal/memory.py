"""An in-memory journal for domain and unit tests. It keeps the port's semantics, so the same
contract suite runs against it, but it persists nothing."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

from capacity_service.adapters.journal.port import (
    FIRST_EPOCH,
    Journal,
    NewEvent,
    SnapshotRecord,
    StoredEvent,
    append_refusal,
    creation_refusal,
)


class InMemoryJournal(Journal):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: dict[str, list[StoredEvent]] = {}
        self._epochs: dict[str, int] = {}
        self._snapshots: dict[str, list[SnapshotRecord]] = {}
        self._dormant: set[str] = set()

    def claim_epoch(self, pool_id: str) -> int:
        with self._lock:
            self._epochs[pool_id] = self._epochs.get(pool_id, 0) + 1
            return self._epochs[pool_id]

    def append(
        self,
        pool_id: str,
        expected_seq_nr: int,
        epoch: int,
        events: Sequence[NewEvent],
        creates: bool = False,
        dormant: bool = False,
    ) -> int:
        with self._lock:
            current_epoch = self._epochs.get(pool_id)
            stream = self._streams.get(pool_id, [])
            head = None if current_epoch is None else (current_epoch, len(stream))
            refusal = (
                creation_refusal(pool_id, head) if creates else append_refusal(pool_id, expected_seq_nr, epoch, head)
            )
            if refusal is not None:
                raise refusal
            if creates:
                self._epochs[pool_id] = FIRST_EPOCH
            stream = self._streams.setdefault(pool_id, [])
            now = datetime.now(UTC)
            stream.extend(
                StoredEvent(pool_id, expected_seq_nr + i, e.event_type, e.schema_version, e.payload, epoch, now)
                for i, e in enumerate(events, start=1)
            )
            if dormant and events:
                self._dormant.add(pool_id)
            return len(stream)

    def read(self, pool_id: str, from_seq_nr: int = 1) -> Iterator[StoredEvent]:
        with self._lock:
            stream = list(self._streams.get(pool_id, ()))
        yield from stream[max(0, from_seq_nr - 1) :]

    def highest_seq_nr(self, pool_id: str) -> int:
        with self._lock:
            return len(self._streams.get(pool_id, ()))

    def save_snapshot(self, snapshot: SnapshotRecord, keep: int) -> None:
        with self._lock:
            kept = [s for s in self._snapshots.get(snapshot.pool_id, []) if s.seq_nr != snapshot.seq_nr]
            kept.append(snapshot)
            kept.sort(key=lambda s: s.seq_nr, reverse=True)
            self._snapshots[snapshot.pool_id] = kept[:keep]

    def snapshots(self, pool_id: str) -> Iterator[SnapshotRecord]:
        with self._lock:
            stored = list(self._snapshots.get(pool_id, []))
        yield from stored

    def heads(self) -> dict[str, int]:
        with self._lock:
            return {pool_id: len(stream) for pool_id, stream in self._streams.items() if stream}

    def pool_ids(self) -> Iterator[str]:
        with self._lock:
            ids = [pool_id for pool_id, stream in self._streams.items() if stream]
        yield from sorted(ids)

    def mark_dormant(self, pool_id: str) -> None:
        with self._lock:
            self._dormant.add(pool_id)

    def dormant_pool_ids(self) -> Iterator[str]:
        with self._lock:
            ids = sorted(self._dormant)
        yield from ids
