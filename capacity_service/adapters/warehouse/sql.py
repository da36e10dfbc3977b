"""A SQL warehouse through SQLAlchemy Core: PostgreSQL (production-grade, tested for real) and SQLite.

One transaction per batch holds the rows and the delivery cursors. On PostgreSQL the rows go in with
``COPY`` straight into the target; should one exist already (a batch delivered again), the batch goes
again through a temporary staging table and ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``, which
deduplicates on (pool_id, seq_nr, part). On SQLite, an ``INSERT ... ON CONFLICT DO NOTHING`` of all rows.
Cursors are upserted and only ever move forward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict
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
    inspect,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from capacity_service.adapters.warehouse.rows import COLUMNS, Delivery, WarehouseRow
from capacity_service.adapters.warehouse.sink import SinkUnavailable, WarehouseSink, last_deliveries, undelivered
from capacity_service.settings import SqlSinkSettings

# A table made before events had parts (0.x, before holds expired in batches) is not changed behind its
# owner's back: the stream reports this until it is migrated.
OLD_TABLE = (
    "the warehouse table {table!r} has no column part (it predates events of several rows); migrate it: "
    "ALTER TABLE {table} ADD COLUMN part INTEGER NOT NULL DEFAULT 0, then make (pool_id, seq_nr, part) its "
    "primary key"
)


def events_table(metadata: MetaData, name: str, schema: str | None = None) -> Table:
    """The warehouse table, one row per journal event or part of one (see ``rows.COLUMNS``)."""
    return Table(
        name,
        metadata,
        Column("event_id", String(256), nullable=False),
        Column("pool_id", String(128), primary_key=True),
        Column("seq_nr", BigInteger, primary_key=True, autoincrement=False),
        Column("part", Integer, primary_key=True, autoincrement=False),
        Column("event_type", String(64), nullable=False),
        Column("event_version", Integer, nullable=False),
        Column("quantity", BigInteger),
        Column("reservation_id", String(256)),
        Column("request_id", String(512)),  # 128 characters of any script: VARCHAR counts bytes on Redshift
        Column("capacity", BigInteger, nullable=False),
        Column("reserved", BigInteger, nullable=False),
        Column("remaining", BigInteger, nullable=False),
        Column("zone", String(512), nullable=False),
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
        Column("zone", String(512), nullable=False),
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
            return self._cursors(conn, None)

    def write(self, rows: Sequence[WarehouseRow]) -> None:
        if not rows:
            return
        with self._translated(), self._engine.connect() as conn:
            self._ensure_schema(conn)
            with conn.begin():
                # The cursors of these pools, locked: rows at or below them are in the table already (they
                # were committed together), rows above are not. So only the rest is sent, straight into the
                # table; the primary key still guards against anything else.
                fresh = undelivered(rows, self._cursors(conn, {row.pool_id for row in rows}))
                if not fresh:
                    return
                if self._dialect == "postgresql":
                    self._copy_rows(conn, fresh)
                else:
                    conn.execute(sqlite.insert(self._events).on_conflict_do_nothing(), [r._asdict() for r in fresh])
                self._advance(conn, list(last_deliveries(fresh).values()))

    def rows(self) -> Iterator[WarehouseRow]:
        query = select(*(self._events.c[name] for name in COLUMNS)).order_by(
            self._events.c.pool_id, self._events.c.seq_nr, self._events.c.part
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
            try:
                columns = self._create_schema(conn)
            except IntegrityError:  # PostgreSQL: another process created the tables at the same moment
                columns = self._create_schema(conn)
            if "part" not in columns:
                raise SinkUnavailable(OLD_TABLE.format(table=self._settings.table))
            self._schema_ready = True

    def _create_schema(self, conn: Connection) -> set[str]:
        """The tables, where missing; the rows table's columns."""
        with conn.begin():
            self._metadata.create_all(conn)
            return {column["name"] for column in inspect(conn).get_columns(self._settings.table)}

    def _cursors(self, conn: Connection, pool_ids: set[str] | None) -> dict[str, Delivery]:
        query = select(self._deliveries)
        if pool_ids is not None:
            query = query.where(self._deliveries.c.pool_id.in_(sorted(pool_ids))).with_for_update()
        return {
            r.pool_id: Delivery(
                r.pool_id, r.seq_nr, r.capacity, r.reserved, r.zone, _utc(r.slot_start), _utc(r.slot_end)
            )
            for r in conn.execute(query)
        }

    def _copy_rows(self, conn: Connection, rows: Sequence[WarehouseRow]) -> None:
        """COPY the batch as CSV rendered by Arrow in C (several times faster than adapting row by row);
        should a row exist after all, the batch goes again through a staging table with ON CONFLICT."""
        from psycopg.errors import UniqueViolation  # COPY runs on the driver's cursor: its own error type

        conn.exec_driver_sql("SET LOCAL TIME ZONE 'UTC'")  # the CSV's timestamps are UTC without a zone
        data = rows_to_csv(rows)
        try:
            with conn.begin_nested():
                self._copy_csv(conn, self._settings.table, data)
        except (IntegrityError, UniqueViolation):
            staging = f"{self._settings.table}_staging"
            conn.exec_driver_sql(f'CREATE TEMP TABLE IF NOT EXISTS "{staging}" (LIKE "{self._settings.table}")')
            conn.exec_driver_sql(f'TRUNCATE "{staging}"')
            self._copy_csv(conn, staging, data)
            columns = ", ".join(COLUMNS)
            conn.exec_driver_sql(
                f'INSERT INTO "{self._settings.table}" ({columns}) SELECT {columns} FROM "{staging}" '
                "ON CONFLICT (pool_id, seq_nr, part) DO NOTHING"
            )

    @staticmethod
    def _copy_csv(conn: Connection, table: str, data: bytes) -> None:
        driver_connection: Any = conn.connection.driver_connection
        with (
            driver_connection.cursor() as cursor,  # psycopg 3: COPY needs the driver's cursor
            cursor.copy(f'COPY "{table}" ({", ".join(COLUMNS)}) FROM STDIN (FORMAT csv)') as copy,
        ):
            copy.write(data)

    def _advance(self, conn: Connection, deliveries: list[Delivery]) -> None:
        values = [asdict(d) for d in deliveries]
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
            if "does not exist" in str(exc):  # a table dropped under us: create it again next time
                self._schema_ready = False
            raise SinkUnavailable(f"{self._dialect} warehouse: {type(exc).__name__}: {exc}") from exc
        except OSError as exc:
            raise SinkUnavailable(f"{self._dialect} warehouse: {exc}") from exc


def rows_to_csv(rows: Sequence[WarehouseRow]) -> bytes:
    """CSV of ``rows`` in ``COLUMNS`` order, no header, timestamps in UTC without a zone; an empty field is
    NULL (PostgreSQL's CSV COPY)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from capacity_service.adapters.warehouse.parquet import rows_to_table

    table = rows_to_table(rows)
    for name in ("slot_start", "slot_end", "occurred_at"):  # zoned timestamps format much slower
        table = table.set_column(table.schema.get_field_index(name), name, table.column(name).cast(pa.timestamp("us")))
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False))
    return bytes(sink.getvalue())


def _create_engine(settings: SqlSinkSettings) -> Engine:
    url = make_url(settings.url)
    options: dict[str, Any] = {"pool_pre_ping": True}
    if url.get_backend_name() == "postgresql":
        connect_args = {
            "connect_timeout": max(1, int(settings.connect_timeout_s)),
            "options": f"-c statement_timeout={int(settings.statement_timeout_s * 1000)}",
            # A server or network that goes silent mid-transaction is noticed, not waited on forever.
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
            "tcp_user_timeout": int(settings.statement_timeout_s * 1000),
        }
        options |= {"pool_size": settings.pool_size, "connect_args": connect_args}
    return create_engine(url, **options)


def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; we only ever store UTC.
    return value if value is None or value.tzinfo is not None else value.replace(tzinfo=UTC)


__all__ = ["SqlSink", "deliveries_table", "events_table"]
