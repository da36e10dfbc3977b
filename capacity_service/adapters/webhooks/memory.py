"""The webhook store in memory: unit tests and the in-process service only."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from capacity_service.adapters.webhooks.port import CursorRecord, WebhookRecord, WebhookStore, WebhookStoreError


class InMemoryWebhookStore(WebhookStore):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, WebhookRecord] = {}
        self._cursors: dict[tuple[str, str], dict[str, CursorRecord]] = {}
        self.available = True  # tests turn the store off

    def _check(self) -> None:
        if not self.available:
            raise WebhookStoreError("in-memory webhook store: switched off")

    def put(self, record: WebhookRecord) -> None:
        self._check()
        with self._lock:
            self._records[record.webhook_id] = record

    def get(self, webhook_id: str) -> WebhookRecord | None:
        self._check()
        with self._lock:
            return self._records.get(webhook_id)

    def all(self) -> list[WebhookRecord]:
        self._check()
        with self._lock:
            return [self._records[key] for key in sorted(self._records)]

    def delete(self, webhook_id: str) -> bool:
        self._check()
        with self._lock:
            for key in [key for key in self._cursors if key[0] == webhook_id]:
                del self._cursors[key]
            return self._records.pop(webhook_id, None) is not None

    def cursors(self, webhook_id: str, generation: str) -> dict[str, CursorRecord]:
        self._check()
        with self._lock:
            return dict(self._cursors.get((webhook_id, generation), {}))

    def save_cursors(self, webhook_id: str, generation: str, cursors: Sequence[CursorRecord]) -> None:
        self._check()
        with self._lock:
            saved = self._cursors.setdefault((webhook_id, generation), {})
            for cursor in cursors:
                old = saved.get(cursor.stream_id)
                if old is None or old.seq_nr <= cursor.seq_nr:
                    saved[cursor.stream_id] = cursor
