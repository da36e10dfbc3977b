"""The webhook store contract on Cassandra (the journal's keyspace)."""

import pytest

from capacity_service.adapters.webhooks.cassandra import CassandraWebhookStore
from capacity_service.settings import CassandraJournalSettings
from tests.webhook_store_contract import StoreFactory, WebhookStoreContract


@pytest.mark.cassandra
class TestCassandraWebhookStore(WebhookStoreContract):
    @pytest.fixture
    def store_factory(self, cassandra_settings: CassandraJournalSettings) -> StoreFactory:
        return lambda: CassandraWebhookStore(cassandra_settings)
