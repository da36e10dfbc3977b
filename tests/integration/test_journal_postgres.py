import pytest

from capacity_service.adapters.journal.sql import SqlJournal
from capacity_service.settings import SqlJournalSettings
from tests.journal_contract import JournalFactory
from tests.support.sql_journal import SqlJournalContract


class TestPostgresJournal(SqlJournalContract):
    @pytest.fixture
    def journal_factory(self, postgres_settings: SqlJournalSettings) -> JournalFactory:
        return lambda: SqlJournal(postgres_settings)
