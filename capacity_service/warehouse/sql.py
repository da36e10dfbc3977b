"""A SQL warehouse through SQLAlchemy Core: PostgreSQL (production-grade, tested for real) and SQLite.

One transaction per batch holds the rows and the delivery cursors. On PostgreSQL the rows go in with
``COPY`` into a temporary staging table, then ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` into the
target (the fastest statement PostgreSQL offers that also deduplicates on (pool_id, seq_nr)); on SQLite,
an ``INSERT ... ON CONFLICT DO NOTHING`` of all rows. Cursors are upserted and only ever move forward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Date,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from capacity_service.settings import SqlSinkSettings
from capacity_service.warehouse.rows import COLUMNS, Delivery, WarehouseRow
from capacity_service.warehouse.sink import SinkUnavailable, WarehouseSink, last_deliveries


def events_table(metadata: MetaData, name: str, schema: str | None = None) -> Table:
    """The warehouse table, one row per journal event (see ``rows.COLUMNS``)."""
    return Table(
        name,
        metadata,
        Column("event_id", String(256), nullable=False),
        Column("pool_id", String(128), primary_key=True),
        Column("seq_nr", BigInteger, primary_key=True, autoincrement=False),
        Column("event_type", String(64), nullable=False),
        Column("event_version", Integer, nullable=False),
        Column("quantity", BigInteger),
        Column("reservation_id", String(256)),
        Column("request_id", String(256)),
        Column("capacity", BigInteger, nullable=False),
        Column("reserved", BigInteger, nullable=False),
        Column("remaining", BigInteger, nullable=False),
        Column("zone", String(256), nullable=False),
        Column("slot_start", DateTime(timezone=True)),
        Column("slot_end", DateTime(timezone=True)),
        Column("occurred_at", DateTime(timezone=True), nullable=False),
        Column("event_date", Date, nullable=False),
        schema=schema,
    )


def deliveries_table(metadata: MetaData, name: str, schema: str | None = None) -> Table:
    """Each pool's delivery cursor: its last delivered seq_nr and its state after it."""
    return Table(
        name,
        metadata,
        Column("pool_id", String(128), primary_key=True),
        Column("seq_nr", BigInteger, nullable=False),
        Column("capacity", BigInteger, nullable=False),
        Column("reserved", BigInteger, nullable=False),
        Column("zone", String(256), nullable=False),
        Column("slot_start", DateTime(timezone=True)),
        Column("slot_end", DateTime(timezone=True)),
        schema=schema,
    )


class SqlSink(WarehouseSink):
    def __init__(self, settings: SqlSinkSettings) -> None:
        self._settings = settings
        self._metadata = MetaData()
        self._events = events_table(self._metadata, settings.table)
        self._deliveries = deliveries_table(self._metadata, settings.deliveries_table)
        self._engine = _create_engine(settings)
        self._dialect = self._engine.dialect.name
        if self._dialect not in ("postgresql", "sqlite"):
            raise ValueError(f"unsupported SQL warehouse {self._dialect!r}: use postgresql or sqlite (or redshift)")
        self._schema_ready = False

    @property
    def engine(self) -> Engine:
        return self._engine

    def deliveries(self) -> dict[str, Delivery]:
        with self._translated(), self._engine.connect() as conn:
            self._ensure_schema(conn)
            return {
                r.pool_id: Delivery(
                    r.pool_id, r.seq_nr, r.capacity, r.reserved, r.zone, _utc(r.slot_start), _utc(r.slot_end)
                )
                for r in conn.execute(select(self._deliveries))
            }

    def write(self, rows: Sequence[WarehouseRow]) -> None:
        if not rows:
            return
        with self._translated(), self._engine.connect() as conn:
            self._ensure_schema(conn)
            with conn.begin():
                if self._dialect == "postgresql":
                    self._copy_rows(conn, rows)
                else:
                    conn.execute(
                        sqlite.insert(self._events).on_conflict_do_nothing(),
                        [row._asdict() for row in rows],
                    )
                self._advance(conn, list(last_deliveries(rows).values()))

    def rows(self) -> Iterator[WarehouseRow]:
        query = select(*(self._events.c[name] for name in COLUMNS)).order_by(
            self._events.c.pool_id, self._events.c.seq_nr
        )
        with self._translated(), self._engine.connect() as conn:
            self._ensure_schema(conn)
            for r in conn.execute(query):
                values = list(r)
                for i in (COLUMNS.index("slot_start"), COLUMNS.index("slot_end"), COLUMNS.index("occurred_at")):
                    values[i] = _utc(values[i])
                yield WarehouseRow(*values)

    def close(self) -> None:
        self._engine.dispose()

    # ------------------------------------------------------------------ internals

    def _ensure_schema(self, conn: Connection) -> None:
        if not self._schema_ready:
            with conn.begin():
                self._metadata.create_all(conn)
            self._schema_ready = True

    def _copy_rows(self, conn: Connection, rows: Sequence[WarehouseRow]) -> None:
        staging = f"{self._settings.table}_staging"
        conn.exec_driver_sql(f'CREATE TEMP TABLE IF NOT EXISTS "{staging}" (LIKE "{self._settings.table}")')
        conn.exec_driver_sql(f'TRUNCATE "{staging}"')
        columns = ", ".join(COLUMNS)
        driver_connection: Any = conn.connection.driver_connection
        cursor = driver_connection.cursor()  # psycopg 3: COPY needs the raw cursor
        with cursor.copy(f'COPY "{staging}" ({columns}) FROM STDIN') as copy:
            for row in rows:
                copy.write_row(row)
        conn.exec_driver_sql(
            f'INSERT INTO "{self._settings.table}" ({columns}) SELECT {columns} FROM "{staging}" '
            "ON CONFLICT (pool_id, seq_nr) DO NOTHING"
        )

    def _advance(self, conn: Connection, deliveries: list[Delivery]) -> None:
        values = [
            {
                "pool_id": d.pool_id,
                "seq_nr": d.seq_nr,
                "capacity": d.capacity,
                "reserved": d.reserved,
                "zone": d.zone,
                "slot_start": d.slot_start,
                "slot_end": d.slot_end,
            }
            for d in deliveries
        ]
        upsert = (postgresql.insert if self._dialect == "postgresql" else sqlite.insert)(self._deliveries)
        table = self._deliveries
        statement = upsert.on_conflict_do_update(
            index_elements=[table.c.pool_id],
            set_={name: upsert.excluded[name] for name in values[0] if name != "pool_id"},
            where=upsert.excluded.seq_nr > table.c.seq_nr,  # a cursor never moves back
        )
        conn.execute(statement, values)

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except SQLAlchemyError as exc:
            self._schema_ready = False if "does not exist" in str(exc) else self._schema_ready
            raise SinkUnavailable(f"{self._dialect} warehouse: {type(exc).__name__}: {exc}") from exc
        except OSError as exc:
            raise SinkUnavailable(f"{self._dialect} warehouse: {exc}") from exc


def _create_engine(settings: SqlSinkSettings) -> Engine:
    url = make_url(settings.url)
    options: dict[str, Any] = {"pool_pre_ping": True}
    if url.get_backend_name() == "postgresql":
        connect_args = {"connect_timeout": max(1, int(settings.connect_timeout_s))}
        options |= {"pool_size": settings.pool_size, "connect_args": connect_args}
    return create_engine(url, **options)


def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; we only ever store UTC.
    return value if value is None or value.tzinfo is not None else value.replace(tzinfo=UTC)


__all__ = ["SqlSink", "deliveries_table", "events_table"]
