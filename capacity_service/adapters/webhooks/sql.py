"""Webhook registrations and cursors in the SQL journal's database (SQLite, PostgreSQL): two small tables
beside the journal's, written under the same writer's turn on SQLite as the journal's appends (so a
cursor save queues like one more writer instead of making a pool's append sleep in SQLite's busy handler)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, LargeBinary, MetaData, String, Table, Text, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from capacity_service.adapters.journal.sql import _create_engine, _SqliteWriterQueue
from capacity_service.adapters.webhooks.port import CursorRecord, WebhookRecord, WebhookStore, WebhookStoreError
from capacity_service.settings import SqlJournalSettings

metadata = MetaData()

webhooks_table = Table(
    "webhooks",
    metadata,
    Column("webhook_id", String(128), primary_key=True),
    Column("url", Text, nullable=False),
    Column("event_types", Text, nullable=False),  # a JSON list
    Column("secret", Text, nullable=False),
    Column("generation", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

cursors_table = Table(
    "webhook_cursors",
    metadata,
    Column("webhook_id", String(128), primary_key=True),
    Column("generation", String(64), primary_key=True),
    Column("stream_id", String(160), primary_key=True),
    Column("seq_nr", BigInteger, nullable=False),
    Column("state", LargeBinary, nullable=False),
)


class SqlWebhookStore(WebhookStore):
    def __init__(self, settings: SqlJournalSettings) -> None:
        self._engine = _create_engine(settings)
        self._dialect = self._engine.dialect.name
        self._write_lock: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
        database = self._engine.url.database
        if self._dialect == "sqlite" and database and database != ":memory:":
            self._write_lock = _SqliteWriterQueue(Path(database).with_suffix(".writer-lock"))
        with self._translated_errors(), self._write_lock:
            metadata.create_all(self._engine)

    def put(self, record: WebhookRecord) -> None:
        row = {
            "webhook_id": record.webhook_id,
            "url": record.url,
            "event_types": json.dumps(list(record.event_types)),
            "secret": record.secret,
            "generation": record.generation,
            "created_at": record.created_at,
        }
        statement = self._insert(webhooks_table).values(row)
        upsert = statement.on_conflict_do_update(
            index_elements=[webhooks_table.c.webhook_id],
            set_={key: statement.excluded[key] for key in row if key != "webhook_id"},
        )
        with self._translated_errors(), self._write_lock, self._engine.begin() as conn:
            conn.execute(upsert)

    def get(self, webhook_id: str) -> WebhookRecord | None:
        query = select(webhooks_table).where(webhooks_table.c.webhook_id == webhook_id)
        with self._translated_errors(), self._reader() as conn:
            row = conn.execute(query).first()
        return None if row is None else WebhookRecord.of_row(row)

    def all(self) -> list[WebhookRecord]:
        query = select(webhooks_table).order_by(webhooks_table.c.webhook_id)
        with self._translated_errors(), self._reader() as conn:
            return [WebhookRecord.of_row(row) for row in conn.execute(query)]

    def delete(self, webhook_id: str) -> bool:
        with self._translated_errors(), self._write_lock, self._engine.begin() as conn:
            conn.execute(delete(cursors_table).where(cursors_table.c.webhook_id == webhook_id))
            gone = conn.execute(delete(webhooks_table).where(webhooks_table.c.webhook_id == webhook_id))
            return bool(gone.rowcount)

    def cursors(self, webhook_id: str, generation: str) -> dict[str, CursorRecord]:
        query = select(cursors_table).where(
            cursors_table.c.webhook_id == webhook_id, cursors_table.c.generation == generation
        )
        with self._translated_errors(), self._reader() as conn:
            return {
                row.stream_id: CursorRecord(row.stream_id, int(row.seq_nr), bytes(row.state))
                for row in conn.execute(query)
            }

    def save_cursors(self, webhook_id: str, generation: str, cursors: Sequence[CursorRecord]) -> None:
        if not cursors:
            return
        statement = self._insert(cursors_table)
        upsert = statement.on_conflict_do_update(
            index_elements=[cursors_table.c.webhook_id, cursors_table.c.generation, cursors_table.c.stream_id],
            set_={"seq_nr": statement.excluded.seq_nr, "state": statement.excluded.state},
            where=cursors_table.c.seq_nr <= statement.excluded.seq_nr,  # only forward
        )
        rows = [
            {
                "webhook_id": webhook_id,
                "generation": generation,
                "stream_id": cursor.stream_id,
                "seq_nr": cursor.seq_nr,
                "state": cursor.state,
            }
            for cursor in cursors
        ]
        with self._translated_errors(), self._write_lock, self._engine.begin() as conn:
            conn.execute(upsert, rows)

    def close(self) -> None:
        self._engine.dispose()
        if isinstance(self._write_lock, _SqliteWriterQueue):
            self._write_lock.close()

    def _insert(self, table: Table) -> Any:
        return (postgresql.insert if self._dialect == "postgresql" else sqlite.insert)(table)

    def _reader(self) -> Any:
        return self._engine.connect().execution_options(read_only=True)

    @contextlib.contextmanager
    def _translated_errors(self) -> Iterator[None]:
        try:
            yield
        except SQLAlchemyError as exc:
            raise WebhookStoreError(f"{self._dialect} webhook store: {type(exc).__name__}") from exc
