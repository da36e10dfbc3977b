"""ONE contract for every journal adapter. Each adapter's test module subclasses ``JournalContract``
and provides ``journal_factory`` (a callable opening a new, independent connection to the same store)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import cast

import pytest

from capacity_service.adapters.journal import (
    FIRST_EPOCH,
    AppendRequest,
    Journal,
    NewEvent,
    SequenceConflict,
    SnapshotRecord,
    StoredEvent,
    StreamExists,
    WriterFenced,
)
from capacity_service.domain.ids import order_stream_id, schedule_stream_id

JournalFactory = Callable[[], Journal]


def events(*payloads: str) -> list[NewEvent]:
    return [NewEvent("TestEvent", 1, p.encode()) for p in payloads]


def payloads(journal: Journal, pool_id: str, from_seq_nr: int = 1) -> list[str]:
    return [e.payload.decode() for e in journal.read(pool_id, from_seq_nr)]


class JournalContract:
    #: how many events a test writes to cross page and partition boundaries
    long_stream = 250

    @pytest.fixture
    def journal_factory(self) -> JournalFactory:
        raise NotImplementedError("each adapter's test class provides journal_factory")

    @pytest.fixture
    def journal(self, journal_factory: JournalFactory) -> Iterator[Journal]:
        journal = journal_factory()
        yield journal
        journal.close()

    @pytest.fixture
    def pool_id(self) -> str:
        return f"pool-{uuid.uuid4().hex[:12]}"

    # ------------------------------------------------------------------ epochs and appends

    def test_claimed_epochs_increase_per_pool(self, journal: Journal, pool_id: str) -> None:
        first, second = journal.claim_epoch(pool_id), journal.claim_epoch(pool_id)
        assert second > first == FIRST_EPOCH  # the host reads nothing back for a stream claimed at it
        assert journal.claim_epochs([pool_id + "-other", pool_id]) == [FIRST_EPOCH, second + 1]

    def test_epochs_claimed_together_fence_as_claimed_alone(self, journal: Journal, pool_id: str) -> None:
        other = pool_id + "-b"
        old = journal.claim_epoch(pool_id)
        new, first_of_other = journal.claim_epochs([pool_id, other])
        assert new > old and first_of_other >= 1
        assert journal.append(other, 0, first_of_other, events("a")) == 1
        with pytest.raises(WriterFenced):
            journal.append(pool_id, 0, old, events("a"))
        assert journal.append(pool_id, 0, new, events("a")) == 1
        assert journal.claim_epochs([]) == []

    def test_claims_racing_on_new_and_old_pools_never_share_an_epoch(
        self, journal_factory: JournalFactory, pool_id: str
    ) -> None:
        claimers = [journal_factory() for _ in range(4)]
        fresh = [f"{pool_id}-{k}" for k in range(3)]
        claimed: list[list[int]] = []
        try:
            claimers[0].claim_epoch(pool_id)
            start = threading.Barrier(len(claimers))

            def claim(journal: Journal) -> None:
                start.wait()
                claimed.append(journal.claim_epochs([pool_id, *fresh]))

            threads = [threading.Thread(target=claim, args=(journal,)) for journal in claimers]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            for journal in claimers:
                journal.close()
        assert len(claimed) == len(claimers)
        for column in zip(*claimed, strict=True):  # each pool's epochs, one per claimer
            assert len(set(column)) == len(claimers), claimed

    def test_append_then_read_in_order(self, journal: Journal, pool_id: str) -> None:
        epoch = journal.claim_epoch(pool_id)
        assert journal.append(pool_id, 0, epoch, events("a", "b")) == 2
        assert journal.append(pool_id, 2, epoch, events("c")) == 3
        stored = list(journal.read(pool_id))
        assert [(e.seq_nr, e.payload) for e in stored] == [(1, b"a"), (2, b"b"), (3, b"c")]
        assert all(e.pool_id == pool_id and e.writer_epoch == epoch for e in stored)
        assert all(e.event_type == "TestEvent" and e.schema_version == 1 for e in stored)
        assert all(e.recorded_at.tzinfo is not None for e in stored)
        assert journal.highest_seq_nr(pool_id) == 3
        assert payloads(journal, pool_id, 3) == ["c"]
        assert payloads(journal, pool_id, 4) == []

    def test_unknown_pool_is_empty(self, journal: Journal, pool_id: str) -> None:
        assert journal.highest_seq_nr(pool_id) == 0
        assert list(journal.read(pool_id)) == []

    def test_appending_nothing_changes_nothing(self, journal: Journal, pool_id: str) -> None:
        epoch = journal.claim_epoch(pool_id)
        assert journal.append(pool_id, 0, epoch, []) == 0
        assert journal.highest_seq_nr(pool_id) == 0

    def test_stale_expected_seq_nr_is_rejected_and_writes_nothing(self, journal: Journal, pool_id: str) -> None:
        epoch = journal.claim_epoch(pool_id)
        journal.append(pool_id, 0, epoch, events("a", "b"))
        for stale in (0, 1, 3):
            with pytest.raises(SequenceConflict):
                journal.append(pool_id, stale, epoch, events("x"))
        assert payloads(journal, pool_id) == ["a", "b"]
        assert journal.highest_seq_nr(pool_id) == 2

    def test_stale_epoch_is_fenced_and_writes_nothing(self, journal: Journal, pool_id: str) -> None:
        old = journal.claim_epoch(pool_id)
        journal.append(pool_id, 0, old, events("a"))
        new = journal.claim_epoch(pool_id)
        with pytest.raises(WriterFenced):
            journal.append(pool_id, 1, old, events("zombie"))
        assert journal.append(pool_id, 1, new, events("b")) == 2
        with pytest.raises(WriterFenced):
            journal.append(pool_id, 2, old, events("zombie"))
        assert payloads(journal, pool_id) == ["a", "b"]

    def test_append_without_a_claimed_epoch_is_fenced(self, journal: Journal, pool_id: str) -> None:
        with pytest.raises(WriterFenced):
            journal.append(pool_id, 0, 1, events("a"))
        assert list(journal.read(pool_id)) == []

    def test_append_many_is_atomic_per_pool_and_answers_each(self, journal: Journal, pool_id: str) -> None:
        pools = [f"{pool_id}-{i}" for i in range(4)]
        epochs = [journal.claim_epoch(p) for p in pools]
        journal.append(pools[1], 0, epochs[1], events("already"))
        results = journal.append_many(
            [
                AppendRequest(pools[0], 0, epochs[0], events("a1", "a2")),
                AppendRequest(pools[1], 0, epochs[1], events("stale")),  # the stream is at 1
                AppendRequest(pools[2], 0, epochs[2] - 1, events("zombie")),  # not the claimed epoch
                AppendRequest(pools[3], 0, epochs[3], events("d1")),
            ]
        )
        assert results[0] == 2 and results[3] == 1
        assert isinstance(results[1], SequenceConflict)
        assert isinstance(results[2], WriterFenced)
        assert [payloads(journal, p) for p in pools] == [["a1", "a2"], ["already"], [], ["d1"]]

    def test_append_many_chains_appends_of_one_pool_in_order(self, journal: Journal, pool_id: str) -> None:
        epoch = journal.claim_epoch(pool_id)
        results = journal.append_many(
            [
                AppendRequest(pool_id, 0, epoch, events("a")),
                AppendRequest(pool_id, 1, epoch, events("b", "c")),
                AppendRequest(pool_id, 1, epoch, events("stale")),  # the first two moved the stream to 3
            ]
        )
        assert results[:2] == [1, 3]
        assert isinstance(results[2], SequenceConflict)
        assert payloads(journal, pool_id) == ["a", "b", "c"]
        assert journal.highest_seq_nr(pool_id) == 3

    def test_append_many_now_appends_as_append_many_does_or_declines(self, journal: Journal, pool_id: str) -> None:
        pools = [f"{pool_id}-{i}" for i in range(3)]
        epochs = [journal.claim_epoch(p) for p in pools]
        journal.append(pools[1], 0, epochs[1], events("already"))
        requests = [
            AppendRequest(pools[0], 0, epochs[0], events("a1", "a2")),
            AppendRequest(pools[1], 0, epochs[1], events("stale")),
            AppendRequest(pools[2], 0, epochs[2] - 1, events("zombie")),
        ]
        results = journal.append_many_now(requests)
        if results is None:  # declined: nothing was written, and append_many does it all
            assert [payloads(journal, p) for p in pools] == [[], ["already"], []]
            results = journal.append_many(requests)
        assert results[0] == 2
        assert isinstance(results[1], SequenceConflict)
        assert isinstance(results[2], WriterFenced)
        assert [payloads(journal, p) for p in pools] == [["a1", "a2"], ["already"], []]

    # ------------------------------------------------------------------ a stream created by its first append

    def test_an_append_creating_a_new_stream_claims_it_with_the_first_epoch(
        self, journal: Journal, pool_id: str
    ) -> None:
        assert journal.append(pool_id, 0, FIRST_EPOCH, events("a", "b"), creates=True) == 2
        assert payloads(journal, pool_id) == ["a", "b"]
        assert [e.writer_epoch for e in journal.read(pool_id)] == [FIRST_EPOCH, FIRST_EPOCH]
        assert pool_id in set(journal.pool_ids())
        assert journal.append(pool_id, 2, FIRST_EPOCH, events("c")) == 3  # its writer goes on as any other
        successor = journal.claim_epoch(pool_id)  # a later claim fences the creator
        assert successor > FIRST_EPOCH
        with pytest.raises(WriterFenced):
            journal.append(pool_id, 3, FIRST_EPOCH, events("zombie"))
        assert journal.append(pool_id, 3, successor, events("d")) == 4

    def test_creating_a_stream_that_was_claimed_writes_nothing(self, journal: Journal, pool_id: str) -> None:
        claimed = journal.claim_epoch(pool_id)  # claimed (even with no events yet): it exists
        assert claimed == FIRST_EPOCH
        with pytest.raises(StreamExists):
            journal.append(pool_id, 0, FIRST_EPOCH, events("creator"), creates=True)
        assert payloads(journal, pool_id) == []
        assert journal.append(pool_id, 0, claimed, events("claimer")) == 1  # the claimer is not disturbed
        with pytest.raises(StreamExists):
            journal.append(pool_id, 0, FIRST_EPOCH, events("creator"), creates=True)
        assert payloads(journal, pool_id) == ["claimer"]

    def test_creations_in_append_many_are_answered_each(self, journal: Journal, pool_id: str) -> None:
        fresh, taken, plain = f"{pool_id}-fresh", f"{pool_id}-taken", f"{pool_id}-plain"
        journal.claim_epoch(taken)
        epoch = journal.claim_epoch(plain)
        results = journal.append_many(
            [
                AppendRequest(fresh, 0, FIRST_EPOCH, events("f1"), creates=True),
                AppendRequest(taken, 0, FIRST_EPOCH, events("t1"), creates=True),
                AppendRequest(plain, 0, epoch, events("p1")),
                AppendRequest(fresh, 1, FIRST_EPOCH, events("f2")),  # the created stream, appended to at once
            ]
        )
        assert results[0] == 1 and results[2] == 1 and results[3] == 2
        assert isinstance(results[1], StreamExists)
        assert [payloads(journal, p) for p in (fresh, taken, plain)] == [["f1", "f2"], [], ["p1"]]
        assert journal.claim_epoch(fresh) == FIRST_EPOCH + 1

    def test_an_append_creating_a_stream_must_start_it(self, pool_id: str) -> None:
        with pytest.raises(ValueError):
            AppendRequest(pool_id, 1, FIRST_EPOCH, events("a"), creates=True)
        with pytest.raises(ValueError):
            AppendRequest(pool_id, 0, FIRST_EPOCH + 1, events("a"), creates=True)

    def test_writers_racing_to_create_one_stream_exactly_one_wins(
        self, journal_factory: JournalFactory, pool_id: str
    ) -> None:
        writers = [journal_factory() for _ in range(3)]
        outcomes: list[str] = []
        barrier = threading.Barrier(len(writers))

        def create(journal: Journal, name: str) -> None:
            barrier.wait()
            try:
                journal.append(pool_id, 0, FIRST_EPOCH, events(name), creates=True)
                outcomes.append(name)
            except StreamExists:
                outcomes.append("exists")
            except SequenceConflict:  # a creation lost at the database's own check (a unique key)
                outcomes.append("exists")

        try:
            threads = [threading.Thread(target=create, args=(j, f"w{i}")) for i, j in enumerate(writers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
            winners = [o for o in outcomes if o != "exists"]
            assert len(outcomes) == 3 and len(winners) == 1, outcomes
            assert payloads(writers[0], pool_id) == winners
        finally:
            for journal in writers:
                journal.close()

    def test_heads_are_the_highest_seq_nr_of_every_registered_pool(self, journal: Journal, pool_id: str) -> None:
        busy, quiet, unregistered = f"{pool_id}-busy", f"{pool_id}-quiet", f"{pool_id}-unregistered"
        journal.append(busy, 0, journal.claim_epoch(busy), events("a", "b", "c"))
        journal.append(quiet, 0, journal.claim_epoch(quiet), events("a"))
        journal.claim_epoch(unregistered)  # an epoch, no events: not registered
        heads = journal.heads()
        assert heads[busy] == 3 and heads[quiet] == 1
        assert unregistered not in heads
        assert set(heads) <= set(journal.pool_ids()) and all(seq_nr > 0 for seq_nr in heads.values())

    def test_long_stream_reads_back_whole_and_in_order(self, journal: Journal, pool_id: str) -> None:
        epoch = journal.claim_epoch(pool_id)
        seq_nr = 0
        # Batches of 7 straddle every page and partition boundary at some point.
        while seq_nr < self.long_stream:
            batch = [str(seq_nr + i) for i in range(1, 8)]
            seq_nr = journal.append(pool_id, seq_nr, epoch, events(*batch))
        read = list(journal.read(pool_id))
        assert [e.seq_nr for e in read] == list(range(1, seq_nr + 1))
        assert [e.payload.decode() for e in read] == [str(i) for i in range(1, seq_nr + 1)]
        assert [e.seq_nr for e in journal.read(pool_id, seq_nr - 120)] == list(range(seq_nr - 120, seq_nr + 1))

    def test_read_is_lazy(self, journal: Journal, pool_id: str) -> None:
        epoch = journal.claim_epoch(pool_id)
        journal.append(pool_id, 0, epoch, events(*"abc"))
        stream = journal.read(pool_id)
        assert next(stream).payload == b"a"  # a generator: consumers pull page by page
        assert not isinstance(stream, list)

    def test_a_reader_midway_through_a_stream_does_not_block_a_writer(
        self, journal: Journal, journal_factory: JournalFactory, pool_id: str
    ) -> None:
        # Recovery and the warehouse's catch-up read long streams while pools keep writing.
        epoch = journal.claim_epoch(pool_id)
        journal.append(pool_id, 0, epoch, events(*(str(i) for i in range(self.long_stream))))
        reader = journal_factory()
        try:
            stream = reader.read(pool_id)
            assert next(stream).seq_nr == 1  # the read is open, mid-way
            assert journal.append(pool_id, self.long_stream, epoch, events("x")) == self.long_stream + 1
            # The port promises an Iterator; every adapter's read is a generator, which can be closed.
            cast(Generator[StoredEvent, None, None], stream).close()
        finally:
            reader.close()

    def test_streams_of_many_pools_read_as_each_alone(self, journal: Journal, pool_id: str) -> None:
        pools = [f"{pool_id}-{k}" for k in range(4)]
        for k, pool in enumerate(pools):
            epoch = journal.claim_epoch(pool)
            journal.append(pool, 0, epoch, events(*(f"{pool}:{n}" for n in range(1, k + 2))))
        starts = {pools[0]: 1, pools[1]: 2, pools[2]: 1, pools[3]: 3, pool_id + "-none": 1}
        streams = journal.read_streams(starts)
        assert streams == {pool: list(journal.read(pool, start)) for pool, start in starts.items()}
        assert [e.payload for e in streams[pools[3]]] == [f"{pools[3]}:{n}".encode() for n in (3, 4)]
        assert journal.read_streams({}) == {}

    def test_newest_snapshots_of_many_pools(self, journal: Journal, pool_id: str) -> None:
        with_two, with_one, without = pool_id + "-two", pool_id + "-one", pool_id + "-none"
        for seq_nr in (3, 8):
            journal.save_snapshot(SnapshotRecord(with_two, seq_nr, 1, f"s{seq_nr}".encode()), keep=2)
        journal.save_snapshot(SnapshotRecord(with_one, 5, 2, b"only"), keep=2)
        assert journal.newest_snapshots([with_two, with_one, without]) == {
            with_two: SnapshotRecord(with_two, 8, 1, b"s8"),
            with_one: SnapshotRecord(with_one, 5, 2, b"only"),
        }
        assert journal.newest_snapshots([]) == {}

    def test_registry_lists_pools_with_events(self, journal: Journal, pool_id: str) -> None:
        claimed_only = pool_id + "-claimed"
        journal.claim_epoch(claimed_only)
        epoch = journal.claim_epoch(pool_id)
        journal.append(pool_id, 0, epoch, events("a"))
        known = set(journal.pool_ids())
        assert pool_id in known
        assert claimed_only not in known

    def test_dormant_pools_stay_registered_but_leave_the_live_ones(self, journal: Journal, pool_id: str) -> None:
        retired, live = pool_id + "-retired", pool_id + "-live"
        for each in (retired, live):
            journal.append(each, 0, journal.claim_epoch(each), events("a"))
        journal.mark_dormant(retired)
        journal.mark_dormant(retired)  # idempotent
        assert {retired, live} <= set(journal.pool_ids())
        assert retired in set(journal.dormant_pool_ids()) and live not in set(journal.dormant_pool_ids())
        live_ids = journal.live_pool_ids()
        assert live in live_ids and retired not in live_ids
        assert payloads(journal, retired) == ["a"]  # its history stays

    def test_several_streams_are_recorded_dormant_at_once(self, journal: Journal, pool_id: str) -> None:
        streams = [f"{pool_id}-{n}" for n in range(3)]
        for each in streams:
            journal.append(each, 0, journal.claim_epoch(each), events("a"))
        journal.mark_dormant_many(streams[:2])
        journal.mark_dormant_many(streams[:1])  # idempotent
        live = journal.live_stream_ids()
        assert streams[2] in live and not set(streams[:2]) & set(live)

    def test_order_streams_are_live_streams_but_not_pools(self, journal: Journal, pool_id: str) -> None:
        order = order_stream_id(pool_id.replace("~", "-") + "-order")
        journal.append(order, 0, journal.claim_epoch(order), events("placed"))
        journal.append(pool_id, 0, journal.claim_epoch(pool_id), events("a"))
        assert {order, pool_id} <= set(journal.live_stream_ids())
        assert pool_id in journal.live_pool_ids() and order not in journal.live_pool_ids()
        journal.mark_dormant(order)
        assert order not in journal.live_stream_ids()

    def test_schedule_streams_are_live_streams_but_not_pools(self, journal: Journal, pool_id: str) -> None:
        schedule = schedule_stream_id(pool_id + "-schedule")
        journal.append(schedule, 0, FIRST_EPOCH, events("applying"), creates=True)
        assert schedule in journal.live_stream_ids() and schedule not in journal.live_pool_ids()

    def test_streams_created_at_once_are_each_registered_and_read_back(self, journal: Journal, pool_id: str) -> None:
        """A schedule creates hundreds of pools at once: each creating append lands whole and registered, the
        way the host sends them (``append_soon`` where the journal offers it, else from worker threads)."""
        streams = [f"{pool_id}-new-{n}" for n in range(120)]
        requests = [AppendRequest(s, 0, FIRST_EPOCH, events(s), creates=True) for s in streams]
        started = [journal.append_soon(request) for request in requests]
        if all(future is not None for future in started):
            results = [cast(Future[int], future).result(timeout=60) for future in started]
        else:
            with ThreadPoolExecutor(16) as threads:
                results = list(threads.map(lambda request: journal.append(*request), requests))
        assert results == [1] * len(streams)
        registered = set(journal.pool_ids())
        assert set(streams) <= registered and set(streams) <= set(journal.live_pool_ids())
        read = journal.read_streams({s: 1 for s in streams})
        assert {s: [e.payload.decode() for e in read[s]] for s in streams} == {s: [s] for s in streams}

    def test_an_append_that_leaves_its_stream_dormant_marks_it_and_a_refused_one_marks_nothing(
        self, journal: Journal, pool_id: str
    ) -> None:
        order = order_stream_id(pool_id.replace("~", "-") + "-at-rest")
        claimed, created, live = f"{pool_id}-claimed", f"{pool_id}-created", f"{pool_id}-live"
        epoch = journal.claim_epoch(order)
        journal.append(order, 0, epoch, events("placed"))
        journal.claim_epoch(claimed)  # by another writer: creating it is refused
        live_epoch = journal.claim_epoch(live)
        journal.append(live, 0, live_epoch, events("l1"))
        results = journal.append_many(
            [
                AppendRequest(order, 1, epoch, events("taken"), dormant=True),
                AppendRequest(claimed, 0, FIRST_EPOCH, events("late"), creates=True, dormant=True),
                AppendRequest(created, 0, FIRST_EPOCH, events("failed at once"), creates=True, dormant=True),
                AppendRequest(live, 0, live_epoch, events("stale"), dormant=True),  # not at the head
            ]
        )
        assert results[0] == 2 and results[2] == 1
        assert isinstance(results[1], StreamExists) and isinstance(results[3], SequenceConflict)
        dormant = set(journal.dormant_pool_ids())
        assert {order, created} <= dormant and not {claimed, live} & dormant  # a refused append marks nothing
        assert order not in journal.live_stream_ids() and payloads(journal, order) == ["placed", "taken"]
        assert journal.append(live, 1, live_epoch, events("l2"), dormant=True) == 2  # one append alone
        assert live in set(journal.dormant_pool_ids())

    # ------------------------------------------------------------------ snapshots

    def test_snapshots_newest_first_and_only_the_last_k_kept(self, journal: Journal, pool_id: str) -> None:
        for seq_nr in (10, 20, 30, 40):
            journal.save_snapshot(SnapshotRecord(pool_id, seq_nr, 1, f"s{seq_nr}".encode()), keep=2)
        assert [(s.seq_nr, s.payload) for s in journal.snapshots(pool_id)] == [(40, b"s40"), (30, b"s30")]
        assert list(journal.snapshots(pool_id + "-none")) == []

    def test_resaving_a_snapshot_at_the_same_seq_nr_replaces_it(self, journal: Journal, pool_id: str) -> None:
        journal.save_snapshot(SnapshotRecord(pool_id, 5, 1, b"old"), keep=3)
        journal.save_snapshot(SnapshotRecord(pool_id, 5, 1, b"new"), keep=3)
        assert [s.payload for s in journal.snapshots(pool_id)] == [b"new"]

    def test_large_snapshots_round_trip(self, journal: Journal, pool_id: str) -> None:
        big = bytes(range(256)) * (12 * 1024)  # 3 MiB, binary
        journal.save_snapshot(SnapshotRecord(pool_id, 7, 1, big), keep=2)
        journal.save_snapshot(SnapshotRecord(pool_id, 9, 1, big[:1000]), keep=2)
        assert [(s.seq_nr, s.payload) for s in journal.snapshots(pool_id)] == [(9, big[:1000]), (7, big)]
        journal.save_snapshot(SnapshotRecord(pool_id, 9, 1, big[::-1]), keep=1)
        assert [(s.seq_nr, s.payload) for s in journal.snapshots(pool_id)] == [(9, big[::-1])]

    def test_corrupt_latest_snapshot_falls_back_to_the_previous(self, journal: Journal, pool_id: str) -> None:
        journal.save_snapshot(SnapshotRecord(pool_id, 10, 1, b"good"), keep=3)
        journal.save_snapshot(SnapshotRecord(pool_id, 20, 1, b"\x00corrupt"), keep=3)

        def decode(record: SnapshotRecord) -> str:
            if not record.payload.isalpha():
                raise ValueError("cannot decode")
            return record.payload.decode()

        assert journal.load_snapshot(pool_id, decode) == ("good", 10)
        assert journal.load_snapshot(pool_id + "-none", decode) is None

    # ------------------------------------------------------------------ real concurrency

    def test_two_writers_racing_at_the_same_seq_nr_exactly_one_wins(
        self, journal_factory: JournalFactory, pool_id: str
    ) -> None:
        writers = [journal_factory(), journal_factory()]
        try:
            epoch = writers[0].claim_epoch(pool_id)
            rounds = 15
            for round_nr in range(rounds):
                outcomes = race_appends(writers, pool_id, round_nr, epoch)
                assert sorted(outcomes) in (["A", "conflict"], ["B", "conflict"]), outcomes
            stored = list(writers[0].read(pool_id))
            assert [e.seq_nr for e in stored] == list(range(1, rounds + 1))
            assert writers[1].highest_seq_nr(pool_id) == rounds
        finally:
            for journal in writers:
                journal.close()

    def test_a_zombie_writing_concurrently_never_lands_after_the_new_epoch(
        self, journal_factory: JournalFactory, pool_id: str
    ) -> None:
        zombie_journal, new_journal = journal_factory(), journal_factory()
        try:
            zombie_epoch = zombie_journal.claim_epoch(pool_id)
            zombie_journal.append(pool_id, 0, zombie_epoch, events("z1"))
            fenced = threading.Event()
            claimed = threading.Event()

            def zombie() -> None:
                seq_nr = 1
                while not fenced.is_set():
                    try:
                        seq_nr = zombie_journal.append(pool_id, seq_nr, zombie_epoch, events(f"z{seq_nr + 1}"))
                    except WriterFenced:
                        fenced.set()
                    except SequenceConflict:
                        seq_nr = zombie_journal.highest_seq_nr(pool_id)
                    if claimed.is_set() and not fenced.is_set():
                        # Once the new epoch exists, the zombie's very next append must fail.
                        try:
                            zombie_journal.append(pool_id, seq_nr, zombie_epoch, events("late"))
                        except (WriterFenced, SequenceConflict):
                            fenced.set()
                        else:
                            raise AssertionError("a fenced writer appended")

            thread = threading.Thread(target=zombie)
            thread.start()
            new_epoch = new_journal.claim_epoch(pool_id)
            claimed.set()
            head = new_journal.highest_seq_nr(pool_id)
            # The new incarnation's append at the head it observed must succeed: nothing lands after it.
            assert new_journal.append(pool_id, head, new_epoch, events("new")) == head + 1
            thread.join(timeout=60)
            assert fenced.is_set()
            stored = list(new_journal.read(pool_id))
            assert [e.seq_nr for e in stored] == list(range(1, head + 2))
            assert stored[-1].payload == b"new" and stored[-1].writer_epoch == new_epoch
            assert all(e.writer_epoch == zombie_epoch for e in stored[:-1])
        finally:
            zombie_journal.close()
            new_journal.close()


def race_appends(writers: list[Journal], pool_id: str, expected: int, epoch: int) -> list[str]:
    """Every writer appends at ``expected`` at the same instant; returns who won ("conflict" for losers)."""
    barrier = threading.Barrier(len(writers))
    outcomes: list[str] = []

    def append(journal: Journal, name: str) -> None:
        barrier.wait()
        try:
            journal.append(pool_id, expected, epoch, events(f"{name}{expected + 1}"))
            outcomes.append(name)
        except SequenceConflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=append, args=(j, chr(65 + i))) for i, j in enumerate(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


def race_each(calls: list[Callable[[], object]]) -> list[object]:
    """Every call at the same instant; each one's result, or the error it raised."""
    barrier = threading.Barrier(len(calls))
    outcomes: list[object] = [None] * len(calls)

    def run(index: int) -> None:
        barrier.wait()
        try:
            outcomes[index] = calls[index]()
        except Exception as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes
