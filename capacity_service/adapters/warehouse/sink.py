"""The warehouse sink port: where rows go, written together with how far each pool was delivered.

A sink keeps, durably and atomically with the rows, one ``Delivery`` per pool. ``write`` skips rows at or
below a pool's delivered seq_nr, so a batch retried after an unknown outcome, or replayed from the journal
after a crash, leaves exactly one row per (pool_id, seq_nr). Adapters: ``ParquetSink``, ``SqlSink``
(PostgreSQL, SQLite), ``RedshiftSink``; one contract test suite covers them all.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from typing import Self

from capacity_service.adapters.warehouse.rows import Delivery, WarehouseRow


class SinkUnavailable(Exception):
    """The warehouse could not be written or read; the outcome of a write that raised this is unknown
    (retrying it is safe: delivered rows are skipped)."""


class WarehouseSink(ABC):
    @abstractmethod
    def deliveries(self) -> dict[str, Delivery]:
        """The durable delivery cursor of every pool this sink has rows of."""

    @abstractmethod
    def write(self, rows: Sequence[WarehouseRow]) -> None:
        """Store ``rows`` (each pool's rows contiguous and in seq_nr order, continuing its delivery) and
        advance the pools' deliveries to their last row, atomically. Rows already delivered are skipped."""

    @abstractmethod
    def rows(self) -> Iterator[WarehouseRow]:
        """Every stored row (for checks and tools; not fast)."""

    def maintain(self) -> None:  # noqa: B027 - optional hook
        """Periodic upkeep (Parquet: compaction of small files). Default: nothing."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def last_deliveries(rows: Iterable[WarehouseRow]) -> dict[str, Delivery]:
    """Each pool's delivery after ``rows`` (each pool's rows in seq_nr order)."""
    found: dict[str, Delivery] = {}
    for row in reversed(list(rows)):  # a Delivery for each pool's last row only, not for every row
        if row.pool_id not in found:
            found[row.pool_id] = Delivery.after(row)
    return found


def undelivered(rows: Sequence[WarehouseRow], delivered: dict[str, Delivery]) -> list[WarehouseRow]:
    """``rows`` without those already delivered (dedup on pool_id, seq_nr). Looked up row by row: the
    cursors are every stream ever delivered (every order is one), far more than a batch's."""
    fresh = []
    for row in rows:
        cursor = delivered.get(row.pool_id)
        if cursor is None or row.seq_nr > cursor.seq_nr:
            fresh.append(row)
    return fresh
