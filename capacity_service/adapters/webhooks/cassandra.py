"""Webhook registrations and cursors in the Cassandra journal's keyspace: ``webhooks`` (one row each) and
``webhook_cursors`` (one partition per webhook). A webhook's cursors have one writer, its delivery (the
webhooks actor), so no lightweight transaction guards them: a save reads the partition and writes the
cursors that move forward."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence

from cassandra import DriverException
from cassandra.cluster import NoHostAvailable, Session
from cassandra.query import BatchStatement, BatchType

from capacity_service.adapters.journal.cassandra import _make_cluster
from capacity_service.adapters.webhooks.port import CursorRecord, WebhookRecord, WebhookStore, WebhookStoreError
from capacity_service.settings import CassandraJournalSettings


class CassandraWebhookStore(WebhookStore):
    def __init__(self, settings: CassandraJournalSettings) -> None:
        self._settings = settings
        self._cluster = _make_cluster(settings)
        with self._translated_errors():
            self._session: Session = self._cluster.connect()
            self._create_schema()
            ks = settings.keyspace
            prepare = self._session.prepare
            self._put = prepare(
                f"INSERT INTO {ks}.webhooks (webhook_id, url, event_types, secret, generation, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)"
            )
            self._get = prepare(f"SELECT * FROM {ks}.webhooks WHERE webhook_id = ?")
            self._all = prepare(f"SELECT * FROM {ks}.webhooks")
            self._delete = prepare(f"DELETE FROM {ks}.webhooks WHERE webhook_id = ?")
            self._delete_cursors = prepare(f"DELETE FROM {ks}.webhook_cursors WHERE webhook_id = ?")
            self._cursors = prepare(
                f"SELECT stream_id, seq_nr, state FROM {ks}.webhook_cursors WHERE webhook_id = ? AND generation = ?"
            )
            self._save_cursor = prepare(
                f"INSERT INTO {ks}.webhook_cursors (webhook_id, generation, stream_id, seq_nr, state) "
                "VALUES (?, ?, ?, ?, ?)"
            )

    def _create_schema(self) -> None:
        s = self._settings
        timeout = max(30.0, s.request_timeout_s)
        replication = ", ".join(f"'{k}': '{v}'" for k, v in s.replication.items())
        self._session.execute(
            f"CREATE KEYSPACE IF NOT EXISTS {s.keyspace} WITH replication = {{{replication}}}", timeout=timeout
        )
        self._session.execute(
            f"""CREATE TABLE IF NOT EXISTS {s.keyspace}.webhooks (
                webhook_id text PRIMARY KEY, url text, event_types text, secret text, generation text,
                created_at timestamp)""",
            timeout=timeout,
        )
        self._session.execute(
            f"""CREATE TABLE IF NOT EXISTS {s.keyspace}.webhook_cursors (
                webhook_id text, generation text, stream_id text, seq_nr bigint, state blob,
                PRIMARY KEY ((webhook_id), generation, stream_id))""",
            timeout=timeout,
        )
        self._cluster.control_connection.wait_for_schema_agreement()

    def put(self, record: WebhookRecord) -> None:
        row = (
            record.webhook_id,
            record.url,
            json.dumps(list(record.event_types)),
            record.secret,
            record.generation,
            record.created_at,
        )
        with self._translated_errors():
            self._session.execute(self._put, row)

    def get(self, webhook_id: str) -> WebhookRecord | None:
        with self._translated_errors():
            row = self._session.execute(self._get, (webhook_id,)).one()
        return None if row is None else WebhookRecord.of_row(row)

    def all(self) -> list[WebhookRecord]:
        with self._translated_errors():
            records = [WebhookRecord.of_row(row) for row in self._session.execute(self._all)]
        return sorted(records, key=lambda record: record.webhook_id)

    def delete(self, webhook_id: str) -> bool:
        with self._translated_errors():
            existed = self._session.execute(self._get, (webhook_id,)).one() is not None
            self._session.execute(self._delete_cursors, (webhook_id,))
            self._session.execute(self._delete, (webhook_id,))
        return existed

    def cursors(self, webhook_id: str, generation: str) -> dict[str, CursorRecord]:
        with self._translated_errors():
            rows = self._session.execute(self._cursors, (webhook_id, generation))
            return {row.stream_id: CursorRecord(row.stream_id, int(row.seq_nr), bytes(row.state)) for row in rows}

    def save_cursors(self, webhook_id: str, generation: str, cursors: Sequence[CursorRecord]) -> None:
        """Only cursors that move forward are written: read first, then one batch (a webhook's cursors have
        one writer, the delivery, so nothing moves them between the read and the write)."""
        if not cursors:
            return
        with self._translated_errors():
            saved = self.cursors(webhook_id, generation)
            forward = [c for c in cursors if c.stream_id not in saved or saved[c.stream_id].seq_nr <= c.seq_nr]
            if not forward:
                return
            batch = BatchStatement(batch_type=BatchType.UNLOGGED)  # one partition: applied together
            for cursor in forward:
                batch.add(self._save_cursor, (webhook_id, generation, cursor.stream_id, cursor.seq_nr, cursor.state))
            self._session.execute(batch)

    def close(self) -> None:
        self._cluster.shutdown()

    @contextlib.contextmanager
    def _translated_errors(self) -> Iterator[None]:
        try:
            yield
        except (NoHostAvailable, DriverException, OSError) as exc:
            raise WebhookStoreError(f"cassandra webhook store: {type(exc).__name__}: {exc}") from exc
