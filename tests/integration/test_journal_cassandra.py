import socket
import uuid

import pytest

from capacity_service.adapters.journal import WriterFenced
from capacity_service.adapters.journal.cassandra import CassandraJournal
from capacity_service.settings import CassandraJournalSettings
from tests.journal_contract import JournalContract, JournalFactory, events, payloads


class TestCassandraJournal(JournalContract):
    @pytest.fixture
    def journal_factory(self, cassandra_settings: CassandraJournalSettings) -> JournalFactory:
        # Small partitions and pages, so the long-stream test crosses both boundaries many times.
        settings = cassandra_settings.model_copy(update={"partition_size": 100, "fetch_size": 30})
        return lambda: CassandraJournal(settings)


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
        journal._session.execute(journal._seal, (pool_id, 0, epoch, 100))  # step 1 of the move alone
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
        mover._session.execute(mover._seal, (pool_id, 0, old_epoch, 100))
        new_epoch = claimer.claim_epoch(pool_id)
        assert new_epoch == old_epoch + 1
        with pytest.raises(WriterFenced):
            mover.append(pool_id, 100, old_epoch, events("zombie"))
        assert claimer.append(pool_id, 100, new_epoch, events("new")) == 101
        assert payloads(claimer, pool_id, 100) == ["a99", "new"]


def test_a_sealed_partition_takes_no_append_from_the_epoch_that_sealed_it(
    cassandra_settings: CassandraJournalSettings,
) -> None:
    """After a move, the old partition still names the mover's epoch: if its conditional write did not
    also require it unsealed, a zombie of that epoch could commit there after a newer claim."""
    pool_id = f"pool-{uuid.uuid4().hex[:12]}"
    settings = small_partitions(cassandra_settings)
    with CassandraJournal(settings) as zombie, CassandraJournal(settings) as successor:
        epoch = zombie.claim_epoch(pool_id)
        zombie.append(pool_id, 0, epoch, events(*(f"a{i}" for i in range(100))))
        zombie.append(pool_id, 100, epoch, events("moved"))  # partition 1 is live now
        newer = successor.claim_epoch(pool_id)
        sealed = zombie._partition(pool_id, 0, serial=True)
        assert sealed is not None and sealed.sealed
        batch = zombie._append_batch(sealed, pool_id, 100, epoch, events("late"))
        assert not zombie._session.execute(batch).was_applied
        with pytest.raises(WriterFenced):
            zombie.append(pool_id, 101, epoch, events("late"))
        assert successor.append(pool_id, 101, newer, events("new")) == 102
        assert payloads(successor, pool_id, 100) == ["a99", "moved", "new"]


def test_a_refused_append_leaves_no_row_behind(cassandra_settings: CassandraJournalSettings) -> None:
    """Events and head commit in one conditional batch: a fenced writer's events are not written at all
    (they used to be written first and left beyond the head, for the next writer to clean up)."""
    pool_id = f"pool-{uuid.uuid4().hex[:12]}"
    with CassandraJournal(cassandra_settings) as zombie, CassandraJournal(cassandra_settings) as successor:
        old = zombie.claim_epoch(pool_id)
        zombie.append(pool_id, 0, old, events("a"))
        successor.claim_epoch(pool_id)
        with pytest.raises(WriterFenced):
            zombie.append(pool_id, 1, old, events("late-1", "late-2"))
        rows = zombie._session.execute(
            f"SELECT seq_nr FROM {cassandra_settings.keyspace}.pool_events WHERE pool_id = %s AND partition_nr = 0",
            (pool_id,),
        )
        assert [r.seq_nr for r in rows] == [1]


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
