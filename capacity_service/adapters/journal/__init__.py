"""The event journal: the port and its adapters, chosen by settings."""

from __future__ import annotations

from capacity_service.adapters.journal.port import (
    FIRST_EPOCH,
    AppendRequest,
    Journal,
    JournalError,
    JournalUnavailable,
    JournalUnusable,
    NewEvent,
    SequenceConflict,
    SnapshotRecord,
    StoredEvent,
    StreamExists,
    WriterFenced,
)
from capacity_service.settings import CassandraJournalSettings, SqlJournalSettings


def open_journal(settings: SqlJournalSettings | CassandraJournalSettings) -> Journal:
    """The adapter the settings name. Adapters are imported on demand: a SQLite deployment never loads
    the Cassandra driver."""
    if isinstance(settings, CassandraJournalSettings):
        from capacity_service.adapters.journal.cassandra import CassandraJournal

        return CassandraJournal(settings)
    from capacity_service.adapters.journal.sql import SqlJournal

    return SqlJournal(settings)


__all__ = [
    "FIRST_EPOCH",
    "AppendRequest",
    "Journal",
    "JournalError",
    "JournalUnavailable",
    "JournalUnusable",
    "NewEvent",
    "SequenceConflict",
    "SnapshotRecord",
    "StoredEvent",
    "StreamExists",
    "WriterFenced",
    "open_journal",
]
