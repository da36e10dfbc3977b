import uuid

import pytest

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


def test_leftover_rows_beyond_the_head_are_invisible_and_overwritten(
    cassandra_settings: CassandraJournalSettings,
) -> None:
    """A writer that wrote its rows but died before committing the head leaves rows beyond the head.
    Readers must not see them, and the next writer must be able to write those seq_nrs."""
    pool_id = f"pool-{uuid.uuid4().hex[:12]}"
    with CassandraJournal(cassandra_settings) as journal:
        crashed_epoch = journal.claim_epoch(pool_id)
        journal.append(pool_id, 0, crashed_epoch, events("a"))
        # Step 1 of an append (rows) without step 2 (head), as a crash between them would leave it.
        journal._write_rows_fenced(
            pool_id, 1, crashed_epoch, [(pool_id, 0, 2, "TestEvent", 1, b"uncommitted", crashed_epoch, None)]
        )
        assert payloads(journal, pool_id) == ["a"]
        new_epoch = journal.claim_epoch(pool_id)
        assert journal.append(pool_id, 1, new_epoch, events("b")) == 2
        assert payloads(journal, pool_id) == ["a", "b"]
