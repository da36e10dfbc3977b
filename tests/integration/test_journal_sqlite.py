import threading
from pathlib import Path

import pytest

from capacity_service.adapters.journal import AppendRequest
from capacity_service.adapters.journal.sql import SqlJournal
from capacity_service.settings import SqlJournalSettings
from tests.journal_contract import JournalFactory, events, payloads
from tests.support.sql_journal import SqlJournalContract


class TestSqliteJournal(SqlJournalContract):
    @pytest.fixture
    def journal_factory(self, tmp_path: Path) -> JournalFactory:
        # A real file, so that two engines are two independent connections racing for SQLite's lock.
        settings = SqlJournalSettings(url=f"sqlite:///{tmp_path / 'journal.db'}", fetch_size=50)
        return lambda: SqlJournal(settings)


def test_the_journal_file_survives_reopening(tmp_path: Path) -> None:
    settings = SqlJournalSettings(url=f"sqlite:///{tmp_path / 'nested' / 'journal.db'}")
    with SqlJournal(settings) as journal:
        epoch = journal.claim_epoch("p")
        journal.append("p", 0, epoch, events("a"))
    with SqlJournal(settings) as reopened:
        assert [e.payload for e in reopened.read("p")] == [b"a"]
        assert list(reopened.pool_ids()) == ["p"]


def test_append_many_now_writes_at_once_unless_another_writer_holds_the_file(tmp_path: Path) -> None:
    """It never waits: while another writer holds the writer's turn (another connection, like another
    process: the file lock; or another thread of this one) it declines and writes nothing."""
    settings = SqlJournalSettings(url=f"sqlite:///{tmp_path / 'journal.db'}")
    with SqlJournal(settings) as journal, SqlJournal(settings) as other:
        epoch = journal.claim_epoch("p")
        assert journal.append_many_now([AppendRequest("p", 0, epoch, events("a"))]) == [1]
        with other._write_lock:  # white box: the turn a writing process holds
            assert journal.append_many_now([AppendRequest("p", 1, epoch, events("b"))]) is None
        held, release = threading.Event(), threading.Event()

        def hold_in_another_thread() -> None:
            with journal._write_lock:
                held.set()
                release.wait(10)

        holder = threading.Thread(target=hold_in_another_thread)
        holder.start()
        held.wait(10)
        try:
            assert journal.append_many_now([AppendRequest("p", 1, epoch, events("b"))]) is None
        finally:
            release.set()
            holder.join()
        assert payloads(journal, "p") == ["a"]
        assert journal.append_many_now([AppendRequest("p", 1, epoch, events("b"))]) == [2]
        assert payloads(other, "p") == ["a", "b"]
