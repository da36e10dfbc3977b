"""Where webhook registrations and their delivery cursors are kept: a port, with one adapter per journal
store (the registrations live in the journal's own database, so they are exactly as durable as it).

A registration is a webhook's id, URL, event types and secret, and its ``generation``: a token made when
the id was first registered (or registered again after a delete), so that cursors saved late by a
delivery that had not yet heard of a delete are never taken up by a later webhook of the same id.

A cursor is how far one webhook has delivered one stream (a pool's or an order's): the last seq_nr it
has delivered, and the state its event mapping folded up to there (``application/webhook_events.py``),
as opaque bytes.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self


class WebhookStoreError(Exception):
    """The store could not be reached or did not answer: nothing is known to have changed."""


@dataclass(frozen=True, slots=True)
class WebhookRecord:
    webhook_id: str
    url: str
    event_types: tuple[str, ...]
    secret: str
    generation: str
    created_at: datetime  # when this generation was registered: it is sent what happened from then on

    def __repr__(self) -> str:  # never the secret, in a log line or a traceback
        return (
            f"WebhookRecord(webhook_id={self.webhook_id!r}, url={self.url!r}, event_types={self.event_types!r}, "
            f"generation={self.generation!r}, created_at={self.created_at.isoformat()})"
        )

    @classmethod
    def of_row(cls, row: Any) -> Self:
        """From a stored row (SQL or Cassandra: the same columns; event types as JSON, a naive time as UTC)."""
        created_at = row.created_at if row.created_at.tzinfo is not None else row.created_at.replace(tzinfo=UTC)
        return cls(
            webhook_id=row.webhook_id,
            url=row.url,
            event_types=tuple(json.loads(row.event_types)),
            secret=row.secret,
            generation=row.generation,
            created_at=created_at,
        )


@dataclass(frozen=True, slots=True)
class CursorRecord:
    stream_id: str
    seq_nr: int
    state: bytes


class WebhookStore(ABC):
    """Adapters: ``SqlWebhookStore`` (SQLite, PostgreSQL), ``CassandraWebhookStore``, ``InMemoryWebhookStore``."""

    @abstractmethod
    def put(self, record: WebhookRecord) -> None:
        """Create or replace the registration of ``record.webhook_id``."""

    @abstractmethod
    def get(self, webhook_id: str) -> WebhookRecord | None: ...

    @abstractmethod
    def all(self) -> list[WebhookRecord]:
        """Every registration, by id."""

    @abstractmethod
    def delete(self, webhook_id: str) -> bool:
        """Remove the registration and its cursors; False if there was none."""

    @abstractmethod
    def cursors(self, webhook_id: str, generation: str) -> dict[str, CursorRecord]:
        """The webhook's cursors saved by ``generation`` (others are left behind by a deleted one)."""

    @abstractmethod
    def save_cursors(self, webhook_id: str, generation: str, cursors: Sequence[CursorRecord]) -> None:
        """Create or move forward these cursors, in one write where the store can."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
