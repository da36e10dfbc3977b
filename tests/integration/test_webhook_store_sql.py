"""The webhook store contract on SQLite and PostgreSQL (the journal's database)."""

from pathlib import Path

import pytest

from capacity_service.adapters.webhooks.sql import SqlWebhookStore
from capacity_service.settings import SqlJournalSettings
from tests.webhook_store_contract import StoreFactory, WebhookStoreContract


class TestSqliteWebhookStore(WebhookStoreContract):
    @pytest.fixture
    def store_factory(self, tmp_path: Path) -> StoreFactory:
        settings = SqlJournalSettings(url=f"sqlite:///{tmp_path / 'journal.db'}")
        return lambda: SqlWebhookStore(settings)


@pytest.mark.postgres
class TestPostgresWebhookStore(WebhookStoreContract):
    @pytest.fixture
    def store_factory(self, postgres_settings: SqlJournalSettings) -> StoreFactory:
        return lambda: SqlWebhookStore(postgres_settings)
