import socket
import uuid
from functools import partial
from typing import Any

import pytest

from capacity_service.adapters.journal import AppendRequest, WriterFenced
from capacity_service.adapters.journal.cassandra import CassandraJournal
from capacity_service.settings import CassandraJournalSettings
from tests.journal_contract import JournalContract, JournalFactory, events, payloads, race_each


class TestCassandraJournal(JournalContract):
    @pytest.fixture
    def journal_factory(self, cassandra_settings: CassandraJournalSettings) -> JournalFactory:
        # Small partitions and pages, so the long-stream test crosses both boundaries many times.
        settings = cassandra_settings.model_copy(update={"partition_size": 100, "fetch_size": 30})
        return lambda: CassandraJournal(settings)

    def test_two_writers_racing_at_the_same_seq_nr_exactly_one_wins(
        self, journal_factory: JournalFactory, pool_id: str
    ) -> None:
        """Appends here are plain writes checked by a read of the writer's lease (decision 0011): two writers
        holding ONE epoch are outside the protocol (every epoch is claimed by a Paxos round, by one writer).
        What it guarantees instead: writers of two epochs racing at the same seq_nr leave one event per
        seq_nr, and only the newer epoch's append is acknowledged."""
        older = journal_factory()
        old_epoch = older.claim_epoch(pool_id)
        try:
            for seq_nr in range(5):
                newer = journal_factory()
                new_epoch = newer.claim_epoch(pool_id)
                outcomes = race_each(
                    [
                        partial(older.append, pool_id, seq_nr, old_epoch, events(f"old{seq_nr}")),
                        partial(newer.append, pool_id, seq_nr, new_epoch, events(f"new{seq_nr}")),
                    ]
                )
                assert isinstance(outcomes[0], WriterFenced) and outcomes[1] == seq_nr + 1, outcomes
                older.close()
                older, old_epoch = newer, new_epoch
            stored = list(older.read(pool_id))
            assert [e.seq_nr for e in stored] == list(range(1, 6))
            assert [e.payload for e in stored] == [f"new{i}".encode() for i in range(5)]
        finally:
            older.close()


def test_without_lwt_fencing_appends_and_reads_back(cassandra_settings: CassandraJournalSettings) -> None:
    settings = cassandra_settings.model_copy(update={"lwt_fencing": False, "partition_size": 100})
    pool_id = f"pool-{uuid.uuid4().hex[:12]}"
    with CassandraJournal(settings) as journal:
        epoch = journal.claim_epoch(pool_id)
        seq_nr = 0
        for i in range(30):
            seq_nr = journal.append(pool_id, seq_nr, epoch, events(*(f"{i}-{j}" for j in range(7))))
        assert journal.highest_seq_nr(pool_id) == 210
        assert payloads(journal, pool_id, 200) == [f"{i}-{j}" for i in (28, 29) for j in range(7)][-11:]
        assert pool_id in set(journal.pool_ids())


def small_partitions(settings: CassandraJournalSettings) -> CassandraJournalSettings:
    return settings.model_copy(update={"partition_size": 100})


def test_a_move_left_after_its_seal_is_finished_by_the_writers_next_append(
    cassandra_settings: CassandraJournalSettings,
) -> None:
    """A writer whose move to the next partition stopped after the seal (an unknown outcome) appends on
    where it stood; readers meanwhile see the stream as it was."""
    pool_id = f"pool-{uuid.uuid4().hex[:12]}"
    with CassandraJournal(small_partitions(cassandra_settings)) as journal:
        epoch = journal.claim_epoch(pool_id)
        journal.append(pool_id, 0, epoch, events(*(f"a{i}" for i in range(100))))
        journal._session.execute(journal._seal, (pool_id, 0, epoch))  # step 1 of the move alone
        with CassandraJournal(small_partitions(cassandra_settings)) as reader:
            assert reader.highest_seq_nr(pool_id) == 100
        assert journal.append(pool_id, 100, epoch, events("b")) == 101
        assert payloads(journal, pool_id, 99) == ["a98", "a99", "b"]


def test_a_claim_finishes_a_sealed_move_and_fences_the_mover(cassandra_settings: CassandraJournalSettings) -> None:
    pool_id = f"pool-{uuid.uuid4().hex[:12]}"
    settings = small_partitions(cassandra_settings)
    with CassandraJournal(settings) as mover, CassandraJournal(settings) as claimer:
        old_epoch = mover.claim_epoch(pool_id)
        mover.append(pool_id, 0, old_epoch, events(*(f"a{i}" for i in range(100))))
        mover._session.execute(mover._seal, (pool_id, 0, old_epoch))
        new_epoch = claimer.claim_epoch(pool_id)
        assert new_epoch == old_epoch + 1
        with pytest.raises(WriterFenced):
            mover.append(pool_id, 100, old_epoch, events("zombie"))
        assert claimer.append(pool_id, 100, new_epoch, events("new")) == 101
        assert payloads(claimer, pool_id, 100) == ["a99", "new"]


def test_a_sealed_partition_takes_no_append_from_the_epoch_that_sealed_it(
    cassandra_settings: CassandraJournalSettings,
) -> None:
    """After a move, the old partition still names the mover's epoch: rows a zombie of that epoch writes
    there after a newer claim are never read, and its append is not acknowledged."""
    pool_id = f"pool-{uuid.uuid4().hex[:12]}"
    settings = small_partitions(cassandra_settings)
    with CassandraJournal(settings) as zombie, CassandraJournal(settings) as successor:
        epoch = zombie.claim_epoch(pool_id)
        zombie.append(pool_id, 0, epoch, events(*(f"a{i}" for i in range(100))))
        zombie.append(pool_id, 100, epoch, events("moved"))  # partition 1 is live now
        newer = successor.claim_epoch(pool_id)
        sealed = zombie._partition(pool_id, 0, serial=True)
        assert sealed is not None and sealed.sealed
        zombie._session.execute(zombie._append_batch(sealed, pool_id, 100, epoch, events("late")))
        with pytest.raises(WriterFenced):
            zombie.append(pool_id, 101, epoch, events("late"))
        assert successor.append(pool_id, 101, newer, events("new")) == 102
        assert payloads(successor, pool_id, 100) == ["a99", "moved", "new"]


def test_a_fenced_appends_rows_are_never_read(cassandra_settings: CassandraJournalSettings) -> None:
    """An append is written, then its epoch read: a zombie's append after a newer claim is written but not
    acknowledged, and its rows (beyond the start the claim recorded) are never read, nor counted in the
    head; they never overwrite the newer writer's rows at the same seq_nr (the epoch is in the key)."""
    pool_id = f"pool-{uuid.uuid4().hex[:12]}"
    with CassandraJournal(cassandra_settings) as zombie, CassandraJournal(cassandra_settings) as successor:
        old = zombie.claim_epoch(pool_id)
        zombie.append(pool_id, 0, old, events("a"))
        new = successor.claim_epoch(pool_id)
        with pytest.raises(WriterFenced) as refused:
            zombie.append(pool_id, 1, old, events("late-1", "late-2"))
        assert refused.value.outcome_unknown
        assert payloads(successor, pool_id) == ["a"] and successor.highest_seq_nr(pool_id) == 1
        assert successor.append(pool_id, 1, new, events("b")) == 2
        live = zombie._partition(pool_id, 0, serial=True)
        assert live is not None
        zombie._session.execute(zombie._append_batch(live, pool_id, 1, old, events("z")))
        rows = zombie._session.execute(
            f"SELECT seq_nr, writer_epoch FROM {cassandra_settings.keyspace}.stream_events "
            "WHERE pool_id = %s AND partition_nr = 0",
            (pool_id,),
        )
        assert sorted((r.seq_nr, r.writer_epoch) for r in rows) == [(1, old), (2, old), (2, new), (3, old)]
        for reader in (zombie, successor):
            assert payloads(reader, pool_id) == ["a", "b"] and reader.highest_seq_nr(pool_id) == 2


def test_rows_written_before_a_claim_read_the_stream_are_kept_by_it(
    cassandra_settings: CassandraJournalSettings,
) -> None:
    """A write that reached Cassandra before the claim's read counts even though its writer was told
    "fenced" (its outcome was unknown to it): the claim starts after it, and every reader agrees."""
    pool_id = f"pool-{uuid.uuid4().hex[:12]}"
    with CassandraJournal(cassandra_settings) as zombie, CassandraJournal(cassandra_settings) as successor:
        old = zombie.claim_epoch(pool_id)
        zombie.append(pool_id, 0, old, events("a"))
        live = zombie._live[pool_id]
        zombie._session.execute(zombie._append_batch(live, pool_id, 1, old, events("written", "before")))
        new = successor.claim_epoch(pool_id)
        assert successor.highest_seq_nr(pool_id) == 3
        assert successor.append(pool_id, 3, new, events("b")) == 4
        assert payloads(zombie, pool_id) == ["a", "written", "before", "b"]


def test_an_epoch_renewed_after_an_unknown_outcome_puts_its_late_rows_out(
    cassandra_settings: CassandraJournalSettings,
) -> None:
    """A write that timed out may land after its writer read the stream again; renewing the epoch before
    that read puts such rows beyond the renewed start. A renewal after a newer claim is refused."""
    pool_id = f"pool-{uuid.uuid4().hex[:12]}"
    with CassandraJournal(cassandra_settings) as writer, CassandraJournal(cassandra_settings) as other:
        epoch = writer.claim_epoch(pool_id)
        writer.append(pool_id, 0, epoch, events("a"))
        timed_out = writer._append_batch(writer._live[pool_id], pool_id, 1, epoch, events("lost-1", "lost-2"))
        renewed = writer.renew_epoch(pool_id, epoch)
        assert renewed == epoch + 1
        writer._session.execute(timed_out)  # lands only now
        assert payloads(other, pool_id) == ["a"]
        assert writer.append(pool_id, 1, renewed, events("b")) == 2
        assert payloads(other, pool_id) == ["a", "b"] and other.highest_seq_nr(pool_id) == 2
        newer = other.claim_epoch(pool_id)
        with pytest.raises(WriterFenced):
            writer.renew_epoch(pool_id, renewed)
        assert other.append(pool_id, 2, newer, events("c")) == 3


def test_requests_are_sent_without_waiting_for_acks(cassandra_settings: CassandraJournalSettings) -> None:
    """Nagle's algorithm off on every connection: with it on, a request over a few KB (a hot pool's batch)
    waits 40 ms for the server's delayed ACK (benchmarks/cassandra_appends.py; docs/performance.md)."""
    with CassandraJournal(cassandra_settings) as journal:
        journal.highest_seq_nr(f"pool-{uuid.uuid4().hex[:12]}")
        pools = journal._session.get_pools()
        connections = [c for pool in pools for c in pool.get_connections()]
        connections.append(journal._cluster.control_connection._connection)
        assert connections
        for connection in connections:
            assert connection._socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_a_claim_fences_every_stream_of_the_journal_that_held_it(cassandra_settings: CassandraJournalSettings) -> None:
    """The lease is the journal's (its process's): a claim of one stream revokes it, and none of its other
    streams' appends is acknowledged after that, as a fenced host stops serving all its pools (0003)."""
    first, second = f"pool-{uuid.uuid4().hex[:12]}", f"pool-{uuid.uuid4().hex[:12]}"
    with CassandraJournal(cassandra_settings) as zombie, CassandraJournal(cassandra_settings) as successor:
        epochs = [zombie.claim_epoch(first), zombie.claim_epoch(second)]
        zombie.append(second, 0, epochs[1], events("a"))
        successor.claim_epoch(first)
        with pytest.raises(WriterFenced) as refused:
            zombie.append(second, 1, epochs[1], events("late"))
        assert refused.value.outcome_unknown  # written, then found fenced: whether it counts is the next claim's
        with pytest.raises(WriterFenced) as refused:
            zombie.append(second, 2, epochs[1], events("later"))
        assert not refused.value.outcome_unknown  # known fenced: nothing written
        with pytest.raises(WriterFenced):
            zombie.claim_epoch(f"pool-{uuid.uuid4().hex[:12]}")
        taken_over = successor.claim_epoch(second)
        assert payloads(successor, second) == ["a", "late"]  # written before this claim read the stream
        assert successor.append(second, 2, taken_over, events("b")) == 3
        assert payloads(zombie, second) == ["a", "late", "b"]


def test_one_lease_read_acknowledges_every_append_written_before_it(
    cassandra_settings: CassandraJournalSettings,
) -> None:
    """Appends of many streams in flight at once share the reads of the lease: far fewer reads than appends."""
    pools = [f"pool-{uuid.uuid4().hex[:12]}" for _ in range(40)]
    with CassandraJournal(cassandra_settings) as journal:
        epochs = journal.claim_epochs(pools)
        for pool_id, epoch in zip(pools, epochs, strict=True):
            journal.append(pool_id, 0, epoch, events("a"))
        reads = 0
        send = journal._lease._send

        def counted(covered: list[Any]) -> None:
            nonlocal reads
            reads += 1
            send(covered)

        journal._lease._send = counted  # type: ignore[method-assign]
        answers = [
            journal.append_soon(AppendRequest(pool_id, 1, epoch, events("b")))
            for pool_id, epoch in zip(pools, epochs, strict=True)
        ]
        assert [answer.result(timeout=30) for answer in answers] == [2] * len(pools)
        assert 1 <= reads < len(pools) / 2
