"""The analytics stream: every journal event becomes exactly one warehouse row.

``rows`` (the table shape), ``sink`` (the port), adapters ``parquet`` (embedded default), ``sql``
(PostgreSQL, SQLite) and ``redshift``; ``stream`` (buffer, flush, catch up; no Ray), ``feed`` (the pool
actors' fire-and-forget publisher) and ``stream_actor`` (the Ray shell).
"""

from __future__ import annotations

import zlib

from capacity_service.settings import ParquetSinkSettings, RedshiftSinkSettings, SqlSinkSettings
from capacity_service.warehouse.rows import COLUMNS, Delivery, WarehouseRow
from capacity_service.warehouse.sink import SinkUnavailable, WarehouseSink


def stream_of(pool_id: str, streams: int) -> int:
    """The stream that owns a pool's delivery (one owner per pool keeps its rows contiguous)."""
    return zlib.crc32(pool_id.encode()) % streams


def open_sink(settings: ParquetSinkSettings | SqlSinkSettings | RedshiftSinkSettings, owner: str) -> WarehouseSink:
    """The adapter the settings name; each imports its libraries on demand."""
    if isinstance(settings, ParquetSinkSettings):
        from capacity_service.warehouse.parquet import ParquetSink

        return ParquetSink(settings, owner)
    if isinstance(settings, SqlSinkSettings):
        from capacity_service.warehouse.sql import SqlSink

        return SqlSink(settings)
    from capacity_service.warehouse.redshift import RedshiftSink

    return RedshiftSink(settings, owner)


__all__ = [
    "COLUMNS",
    "Delivery",
    "SinkUnavailable",
    "WarehouseRow",
    "WarehouseSink",
    "open_sink",
    "stream_of",
]
