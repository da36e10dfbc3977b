import pytest

from capacity_service.adapters.journal.memory import InMemoryJournal
from tests.journal_contract import JournalContract, JournalFactory


class TestInMemoryJournal(JournalContract):
    @pytest.fixture
    def journal_factory(self) -> JournalFactory:
        shared = InMemoryJournal()  # "connections" to one in-memory store
        return lambda: shared
