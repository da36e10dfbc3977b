"""capacity_service: an event-sourced capacity reservation service on Ray."""

from capacity_service.journal import open_journal
from capacity_service.pool_writer import CommandOutcome, PoolWriter
from capacity_service.settings import CassandraJournalSettings, SnapshotSettings, SqlJournalSettings

__all__ = [
    "CassandraJournalSettings",
    "CommandOutcome",
    "PoolWriter",
    "SnapshotSettings",
    "SqlJournalSettings",
    "open_journal",
]
