"""ONE contract for every webhook store adapter. Each adapter's test class subclasses
``WebhookStoreContract`` and provides ``store_factory`` (a callable opening a new, independent connection to
the same store: what one process saved, the next one reads)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from capacity_service.adapters.webhooks import CursorRecord, WebhookRecord, WebhookStore

StoreFactory = Callable[[], WebhookStore]
T0 = datetime(2026, 12, 1, 8, 0, 0, 123000, tzinfo=UTC)


def record(webhook_id: str, generation: str = "g1", url: str = "https://hooks.example.com/a") -> WebhookRecord:
    return WebhookRecord(webhook_id, url, ("hold.expired", "pool.sold_out"), "the-secret-0123456789", generation, T0)


class WebhookStoreContract:
    @pytest.fixture
    def store_factory(self) -> StoreFactory:
        raise NotImplementedError("each adapter's test class provides store_factory")

    @pytest.fixture
    def store(self, store_factory: StoreFactory) -> Iterator[WebhookStore]:
        store = store_factory()
        yield store
        store.close()

    @pytest.fixture
    def webhook_id(self) -> str:
        return f"hook-{uuid.uuid4().hex[:12]}"

    def test_a_registration_is_kept_as_given_and_read_by_another_connection(
        self, store: WebhookStore, store_factory: StoreFactory, webhook_id: str
    ) -> None:
        store.put(record(webhook_id))
        with store_factory() as other:
            assert other.get(webhook_id) == record(webhook_id)
            assert webhook_id in [r.webhook_id for r in other.all()]
        assert store.get(webhook_id + "-none") is None

    def test_a_put_replaces_the_registration(self, store: WebhookStore, webhook_id: str) -> None:
        store.put(record(webhook_id))
        store.put(record(webhook_id, url="https://hooks.example.com/b"))
        found = store.get(webhook_id)
        assert found is not None and found.url == "https://hooks.example.com/b"
        assert [r.webhook_id for r in store.all()].count(webhook_id) == 1

    def test_all_lists_by_id(self, store: WebhookStore, webhook_id: str) -> None:
        for suffix in ("-b", "-a", "-c"):
            store.put(record(webhook_id + suffix))
        mine = [r.webhook_id for r in store.all() if r.webhook_id.startswith(webhook_id)]
        assert mine == [webhook_id + "-a", webhook_id + "-b", webhook_id + "-c"]

    def test_cursors_are_saved_per_generation_and_only_move_forward(
        self, store: WebhookStore, store_factory: StoreFactory, webhook_id: str
    ) -> None:
        store.put(record(webhook_id))
        store.save_cursors(
            webhook_id, "g1", [CursorRecord("p1", 3, b'{"capacity":3}'), CursorRecord("order~o", 2, b"{}")]
        )
        store.save_cursors(webhook_id, "g1", [CursorRecord("p1", 5, b'{"capacity":5}')])
        store.save_cursors(webhook_id, "g1", [CursorRecord("p1", 4, b'{"capacity":4}')])  # late: ignored
        store.save_cursors(webhook_id, "g0", [CursorRecord("p1", 99, b"{}")])  # an older generation's
        store.save_cursors(webhook_id, "g1", [])
        with store_factory() as other:
            assert other.cursors(webhook_id, "g1") == {
                "p1": CursorRecord("p1", 5, b'{"capacity":5}'),
                "order~o": CursorRecord("order~o", 2, b"{}"),
            }
        assert store.cursors(webhook_id, "g2") == {}

    def test_delete_removes_the_registration_and_its_cursors(self, store: WebhookStore, webhook_id: str) -> None:
        store.put(record(webhook_id))
        store.save_cursors(webhook_id, "g1", [CursorRecord("p1", 3, b"{}")])
        assert store.delete(webhook_id) is True
        assert store.get(webhook_id) is None
        assert store.cursors(webhook_id, "g1") == {}
        assert store.delete(webhook_id) is False

    def test_the_secret_is_not_in_the_records_repr(self, webhook_id: str) -> None:
        assert "the-secret" not in repr(record(webhook_id))
