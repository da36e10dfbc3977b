import pytest

from capacity_service.adapters.webhooks.memory import InMemoryWebhookStore
from tests.webhook_store_contract import StoreFactory, WebhookStoreContract


class TestInMemoryWebhookStore(WebhookStoreContract):
    @pytest.fixture
    def store_factory(self) -> StoreFactory:
        shared = InMemoryWebhookStore()  # "another connection" to memory is the same store
        return lambda: shared
