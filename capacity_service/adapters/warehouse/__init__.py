"""The warehouse adapters: every journal event becomes exactly one row. ``rows`` (the table shape),
``sink`` (the port), and the sinks ``parquet`` (embedded default), ``sql`` (PostgreSQL, SQLite) and
``redshift``. The stream that feeds them is ``application/warehouse_stream.py``, on Ray in
``runtime/warehouse_stream_actor.py``."""

from __future__ import annotations

import zlib

from capacity_service.adapters.warehouse.rows import COLUMNS, Delivery, WarehouseRow
from capacity_service.adapters.warehouse.sink import SinkUnavailable, WarehouseSink
from capacity_service.settings import ParquetSinkSettings, RedshiftSinkSettings, SqlSinkSettings


def stream_of(pool_id: str, streams: int) -> int:
    """The stream that owns a pool's delivery (one owner per pool keeps its rows contiguous)."""
    return zlib.crc32(pool_id.encode()) % streams


def open_sink(settings: ParquetSinkSettings | SqlSinkSettings | RedshiftSinkSettings, owner: str) -> WarehouseSink:
    """The adapter the settings name; each imports its libraries on demand."""
    if isinstance(settings, ParquetSinkSettings):
        from capacity_service.adapters.warehouse.parquet import ParquetSink

        return ParquetSink(settings, owner)
    if isinstance(settings, SqlSinkSettings):
        from capacity_service.adapters.warehouse.sql import SqlSink

        return SqlSink(settings)
    from capacity_service.adapters.warehouse.redshift import RedshiftSink

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
