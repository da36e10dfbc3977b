from pathlib import Path

import pytest

from capacity_service.journal.sql import SqlJournal
from capacity_service.settings import SqlJournalSettings
from tests.journal_contract import JournalFactory, events
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
