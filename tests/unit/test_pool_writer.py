"""The single writer of a pool, against the in-memory journal: group commit, recovery, fencing,
snapshots, and what happens to state when the journal fails."""

from __future__ import annotations

import itertools

import pytest

from capacity_service.adapters.codec import Codec
from capacity_service.adapters.journal import JournalUnavailable, SnapshotRecord, WriterFenced
from capacity_service.adapters.journal.memory import InMemoryJournal
from capacity_service.application.pool_writer import PoolWriter
from capacity_service.application.recovery import recover_pool
from capacity_service.domain import (
    ConfigurePool,
    NotEnoughCapacity,
    PoolState,
    Release,
    ReservationStatus,
    Reserve,
    new_reservation_id,
)
from capacity_service.settings import SnapshotSettings
from tests.support.faulty_journal import FaultyJournal


def reserve(quantity: int = 1, request_id: str | None = None, pool_id: str = "p") -> Reserve:
    rid = new_reservation_id(pool_id)
    return Reserve(quantity, request_id or rid, rid)


def started(journal: InMemoryJournal, every: int = 1000, capacity: int | None = 10) -> PoolWriter:
    writer = PoolWriter("p", journal, snapshots=SnapshotSettings(every_n_events=every, keep=2))
    writer.start()
    if capacity is not None:
        writer.execute([ConfigurePool(capacity, "z")])
    return writer


def test_group_commit_decides_in_order_and_appends_once() -> None:
    journal = InMemoryJournal()
    writer = started(journal, capacity=3)
    before = journal.highest_seq_nr("p")
    outcomes = writer.execute([reserve(2), reserve(2), reserve(1)])
    assert [type(o.rejection) for o in outcomes] == [type(None), NotEnoughCapacity, type(None)]
    assert [o.view.remaining for o in outcomes] == [1, 1, 0]
    assert journal.highest_seq_nr("p") == before + 2
    # One append: both events carry consecutive seq_nrs from the same write.
    assert [o.view.version for o in outcomes if o.rejection is None] == [before + 1, before + 2]


def test_recovery_reproduces_the_state() -> None:
    journal = InMemoryJournal()
    writer = started(journal)
    first = reserve(3)
    writer.execute([first, reserve(2)])
    writer.execute([Release(first.reservation_id)])
    again = PoolWriter("p", journal)
    again.start()
    assert again.state == writer.state
    assert again.seq_nr == writer.seq_nr


def test_a_repeated_request_id_takes_capacity_once_also_after_a_restart() -> None:
    journal = InMemoryJournal()
    writer = started(journal)
    command = reserve(4, request_id="client-42")
    first = writer.execute([command, command])
    restarted = PoolWriter("p", journal)
    restarted.start()
    retry = restarted.execute([Reserve(4, "client-42", new_reservation_id("p"))])
    assert first[0].reservation == first[1].reservation == retry[0].reservation
    assert retry[0].events == ()
    assert restarted.state.reserved == 4


def test_a_new_incarnation_fences_the_old_one() -> None:
    journal = InMemoryJournal()
    old = started(journal)
    new = PoolWriter("p", journal)
    new.start()
    with pytest.raises(WriterFenced):
        old.execute([reserve(1)])
    assert old.fenced
    with pytest.raises(WriterFenced):
        old.execute([reserve(1)])  # stays fenced, never writes again
    assert new.execute([reserve(1)])[0].rejection is None
    assert recover_pool(journal, Codec(), "p").state.reserved == 1


def test_a_failed_append_leaves_only_durable_state() -> None:
    journal = FaultyJournal()
    writer = started(journal)
    writer.execute([reserve(2)])
    journal.failing = True
    with pytest.raises(JournalUnavailable):
        writer.execute([reserve(5)])
    journal.failing = False
    # The tentative reserve of 5 is gone; the next write is decided against durable state only.
    outcomes = writer.execute([reserve(8)])
    assert outcomes[0].rejection is None
    assert writer.state.reserved == 10
    assert recover_pool(journal, Codec(), "p").state == writer.state


def test_snapshots_are_taken_every_n_events_and_used_by_recovery() -> None:
    journal = InMemoryJournal()
    writer = started(journal, every=5, capacity=100)
    for _ in range(12):
        writer.execute([reserve(1)])
        writer.snapshot_if_due()
    assert [s.seq_nr for s in journal.snapshots("p")] == [10, 5]
    recovered = recover_pool(journal, Codec(), "p")
    assert recovered.snapshot_seq_nr == 10 and recovered.events_replayed == 3
    assert recovered.state == writer.state


def test_snapshots_of_a_growing_pool_are_spaced_by_its_size() -> None:
    journal = InMemoryJournal()
    writer = started(journal, every=10, capacity=10_000)
    taken: list[tuple[int, int]] = []  # (seq_nr, reservations held) of every snapshot
    for _ in range(2_000):
        writer.execute([reserve(1)])
        if writer.snapshot_if_due():
            taken.append((writer.seq_nr, len(writer.state.reservations)))
    gaps = [(b - a, held) for (a, _), (b, held) in itertools.pairwise(taken)]
    assert all(gap >= max(10, held // 2) for gap, held in gaps)
    assert len(taken) < 12  # spacing grows with the state: ~log2(2000 / 10) snapshots, not 200
    recovered = recover_pool(journal, Codec(), "p")
    assert recovered.snapshot_seq_nr == taken[-1][0]
    assert recovered.events_replayed <= len(writer.state.reservations) // 2 + 10
    assert recovered.state == writer.state


def test_recovery_skips_a_corrupt_snapshot() -> None:
    journal = InMemoryJournal()
    writer = started(journal, every=5, capacity=100)
    for _ in range(11):
        writer.execute([reserve(1)])
        writer.snapshot_if_due()
    newest = next(journal.snapshots("p"))
    journal.save_snapshot(SnapshotRecord("p", newest.seq_nr, 1, b'{"garbage": true}'), keep=2)
    recovered = recover_pool(journal, Codec(), "p")
    assert recovered.snapshot_seq_nr == 5
    assert recovered.state == writer.state


def test_a_failing_snapshot_is_not_fatal() -> None:
    class NoSnapshots(InMemoryJournal):
        def save_snapshot(self, snapshot: SnapshotRecord, keep: int) -> None:
            raise JournalUnavailable("snapshot store down")

    writer = started(NoSnapshots(), every=1)
    writer.execute([reserve(1)])
    assert writer.snapshot_if_due() is False
    assert writer.execute([reserve(1)])[0].rejection is None


def test_release_outcome_reports_the_released_reservation() -> None:
    writer = started(InMemoryJournal())
    command = reserve(2)
    writer.execute([command])
    released = writer.execute([Release(command.reservation_id)])[0]
    assert released.reservation is not None
    assert released.reservation.status is ReservationStatus.RELEASED
    assert released.view.reserved == 0


def test_an_unknown_pool_recovers_empty() -> None:
    writer = started(InMemoryJournal(), capacity=None)
    assert writer.state == PoolState("p")
    assert writer.view().exists is False


def test_an_append_that_landed_despite_an_error_is_acknowledged() -> None:
    journal = FaultyJournal()
    writer = started(journal)
    journal.lost_replies = 1
    outcome = writer.execute([reserve(3)])[0]
    assert outcome.rejection is None and outcome.view.reserved == 3
    assert writer.state.reserved == 3 and writer.seq_nr == 2


class RenewingJournal(FaultyJournal):
    """A journal on which a failed write may land after its writer read the stream again (as on Cassandra):
    it renews epochs, and records who asked."""

    def __init__(self) -> None:
        super().__init__()
        self.renewals: list[int] = []

    def renew_epoch(self, pool_id: str, epoch: int) -> int:
        self.renewals.append(epoch)
        if self._epochs.get(pool_id) != epoch:
            raise WriterFenced(pool_id, epoch, self._epochs.get(pool_id))
        return self.claim_epoch(pool_id)


def test_after_an_unknown_outcome_the_writer_renews_its_epoch_before_reading_again() -> None:
    journal = RenewingJournal()
    writer = started(journal)
    held = writer.epoch
    journal.failing = True
    with pytest.raises(JournalUnavailable):
        writer.execute([reserve(5)])
    journal.failing = False
    assert writer.execute([reserve(2)])[0].rejection is None  # read again under a renewed epoch first
    assert journal.renewals == [held] and writer.epoch == held + 1
    assert recover_pool(journal, Codec(), "p").state == writer.state


def test_a_renewal_that_finds_a_newer_writer_fences_this_one() -> None:
    journal = RenewingJournal()
    writer = started(journal)
    journal.failing = True
    with pytest.raises(JournalUnavailable):
        writer.execute([reserve(5)])
    journal.failing = False
    newer = PoolWriter("p", journal)
    newer.start()
    with pytest.raises(WriterFenced):
        writer.execute([reserve(1)])
    assert writer.fenced
    assert newer.execute([reserve(1)])[0].rejection is None
