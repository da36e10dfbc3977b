"""The journal contract plus what only the SQL adapter (SQLite and PostgreSQL) has: its batched
``append_many`` falls back to one transaction per append when a row already sits beyond a head."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import insert

from capacity_service.adapters.journal import AppendRequest, SequenceConflict
from capacity_service.adapters.journal.sql import SqlJournal, events_table
from tests.journal_contract import JournalContract, events, payloads


class SqlJournalContract(JournalContract):
    def test_a_row_written_around_the_head_fails_only_its_own_append(self, journal: SqlJournal, pool_id: str) -> None:
        stray, clean = f"{pool_id}-stray", f"{pool_id}-clean"
        stray_epoch, clean_epoch = journal.claim_epoch(stray), journal.claim_epoch(clean)
        with journal.engine.begin() as conn:  # a writer that bypassed the head: seq_nr 1 exists, the head says 0
            conn.execute(
                insert(events_table).values(
                    pool_id=stray,
                    seq_nr=1,
                    event_type="TestEvent",
                    schema_version=1,
                    payload=b"around",
                    writer_epoch=stray_epoch,
                    recorded_at=datetime.now(UTC),
                )
            )
        results = journal.append_many(
            [AppendRequest(clean, 0, clean_epoch, events("c1")), AppendRequest(stray, 0, stray_epoch, events("s1"))]
        )
        assert results[0] == 1
        assert isinstance(results[1], SequenceConflict)
        assert payloads(journal, clean) == ["c1"]
        assert payloads(journal, stray) == ["around"]
