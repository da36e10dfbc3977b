"""Webhook registrations and their delivery cursors: the port, and the adapter beside each journal store."""

from __future__ import annotations

from capacity_service.adapters.webhooks.port import CursorRecord, WebhookRecord, WebhookStore, WebhookStoreError
from capacity_service.settings import CassandraJournalSettings, SqlJournalSettings


def open_webhook_store(settings: SqlJournalSettings | CassandraJournalSettings) -> WebhookStore:
    """The store in the database the journal settings name (its driver imported on demand)."""
    if isinstance(settings, CassandraJournalSettings):
        from capacity_service.adapters.webhooks.cassandra import CassandraWebhookStore

        return CassandraWebhookStore(settings)
    from capacity_service.adapters.webhooks.sql import SqlWebhookStore

    return SqlWebhookStore(settings)


__all__ = ["CursorRecord", "WebhookRecord", "WebhookStore", "WebhookStoreError", "open_webhook_store"]
