"""Amazon Redshift: staging table + MERGE, in one transaction with the delivery cursors.

Redshift enforces no primary keys and has no ``ON CONFLICT``, so deduplication on (pool_id, seq_nr, part) is a
``MERGE`` from a temporary staging table. Rows reach the staging table either by the bulk path (the batch
as one Parquet file on S3, then ``COPY ... FORMAT AS PARQUET``; the file is deleted after the commit) or,
without an S3 location, by a multi-row ``INSERT``. The DDL is compiled with sqlalchemy-redshift's dialect
(DISTKEY pool_id, SORTKEY (pool_id, seq_nr, part)); the statements are plain SQL that Redshift and PostgreSQL
15+ both run, which is how the MERGE path is tested here without AWS.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import astuple
from typing import Any, Protocol

import pyarrow.fs as pafs
import pyarrow.parquet as pq
from sqlalchemy import MetaData
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateTable

from capacity_service.adapters.warehouse.parquet import rows_to_table
from capacity_service.adapters.warehouse.rows import COLUMNS, DELIVERY_COLUMNS, Delivery, WarehouseRow
from capacity_service.adapters.warehouse.sink import SinkUnavailable, WarehouseSink, last_deliveries
from capacity_service.adapters.warehouse.sql import deliveries_table, events_table
from capacity_service.settings import RedshiftSinkSettings


class DbApiConnection(Protocol):
    def cursor(self) -> Any: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def close(self) -> None: ...


def redshift_dialect() -> Dialect:
    from sqlalchemy_redshift.dialect import RedshiftDialect_redshift_connector

    return RedshiftDialect_redshift_connector()  # type: ignore[no-any-return]


def ddl(settings: RedshiftSinkSettings, dialect: Dialect) -> list[str]:
    """CREATE TABLE statements of the target and the cursor table, in ``dialect``."""
    metadata = MetaData()
    events = events_table(metadata, settings.table, settings.schema_name)
    if dialect.name == "redshift":
        events.kwargs.update(redshift_distkey="pool_id", redshift_sortkey=("pool_id", "seq_nr", "part"))
    deliveries = deliveries_table(metadata, settings.deliveries_table, settings.schema_name)
    return [
        str(CreateTable(table, if_not_exists=True).compile(dialect=dialect)).strip() for table in (events, deliveries)
    ]


class RedshiftStatements:
    """The SQL of one batch, generated from the settings (tested offline)."""

    def __init__(self, settings: RedshiftSinkSettings) -> None:
        self._s = settings
        self.target = f'"{settings.schema_name}"."{settings.table}"'
        self.cursors = f'"{settings.schema_name}"."{settings.deliveries_table}"'
        self.staging = f'"{settings.table}_staging"'
        self.staging_cursors = f'"{settings.deliveries_table}_staging"'

    def create_staging(self) -> list[str]:
        return [
            f"CREATE TEMP TABLE {self.staging} (LIKE {self.target})",
            f"CREATE TEMP TABLE {self.staging_cursors} (LIKE {self.cursors})",
        ]

    def copy_from_s3(self, uri: str) -> str:
        if self._s.iam_role_arn is None:
            raise ValueError("the Redshift bulk path needs iam_role_arn to read from S3")
        region = f" REGION '{self._s.region}'" if self._s.region else ""
        return f"COPY {self.staging} FROM '{uri}' IAM_ROLE '{self._s.iam_role_arn}' FORMAT AS PARQUET{region}"

    def merge_rows(self) -> str:
        # Redshift's MERGE needs both clauses; a matched row is an event delivered before: a no-op update.
        return (
            f"MERGE INTO {self.target} USING {self.staging} s "
            f"ON {self.target}.pool_id = s.pool_id AND {self.target}.seq_nr = s.seq_nr AND {self.target}.part = s.part "
            "WHEN MATCHED THEN UPDATE SET event_id = s.event_id "
            f"WHEN NOT MATCHED THEN INSERT ({', '.join(COLUMNS)}) VALUES ({', '.join('s.' + c for c in COLUMNS)})"
        )

    def merge_cursors(self) -> str:
        # A cursor only moves forward: every column keeps its value unless the staged seq_nr is newer.
        newer = f"s.seq_nr > {self.cursors}.seq_nr"
        updates = ", ".join(
            f"{c} = CASE WHEN {newer} THEN s.{c} ELSE {self.cursors}.{c} END" for c in DELIVERY_COLUMNS[1:]
        )
        return (
            f"MERGE INTO {self.cursors} USING {self.staging_cursors} s ON {self.cursors}.pool_id = s.pool_id "
            f"WHEN MATCHED THEN UPDATE SET {updates} "
            f"WHEN NOT MATCHED THEN INSERT ({', '.join(DELIVERY_COLUMNS)}) "
            f"VALUES ({', '.join('s.' + c for c in DELIVERY_COLUMNS)})"
        )

    def drop_staging(self) -> list[str]:
        return [f"DROP TABLE {self.staging}", f"DROP TABLE {self.staging_cursors}"]

    def select_cursors(self) -> str:
        return f"SELECT {', '.join(DELIVERY_COLUMNS)} FROM {self.cursors}"

    def select_rows(self) -> str:
        return f"SELECT {', '.join(COLUMNS)} FROM {self.target} ORDER BY pool_id, seq_nr, part"


class RedshiftSink(WarehouseSink):
    def __init__(
        self,
        settings: RedshiftSinkSettings,
        owner: str = "stream-0",
        connect: Callable[[], DbApiConnection] | None = None,
        staging_fs: tuple[pafs.FileSystem, str] | None = None,
        ddl_dialect: Dialect | None = None,
    ) -> None:
        """``connect`` defaults to redshift-connector with the settings; ``staging_fs`` to the S3 location
        of ``s3_staging_uri``; ``ddl_dialect`` to Redshift's (tests substitute PostgreSQL's)."""
        self._settings = settings
        self._owner = owner
        self._connect = connect or (lambda: _redshift_connect(settings))
        self._sql = RedshiftStatements(settings)
        self._ddl = ddl(settings, ddl_dialect or redshift_dialect())
        self._staging_fs = staging_fs
        if staging_fs is None and settings.s3_staging_uri is not None:
            fs, root = pafs.FileSystem.from_uri(settings.s3_staging_uri)
            self._staging_fs = (fs, root.rstrip("/"))
        self._conn: DbApiConnection | None = None
        self._schema_ready = False

    def deliveries(self) -> dict[str, Delivery]:
        def read(cursor: Any) -> dict[str, Delivery]:
            cursor.execute(self._sql.select_cursors())
            return {r[0]: Delivery(*r) for r in cursor.fetchall()}

        found: dict[str, Delivery] = self._in_transaction(read)
        return found

    def write(self, rows: Sequence[WarehouseRow]) -> None:
        if not rows:
            return
        staged_file = self._stage_file(rows) if self._staging_fs is not None else None

        def load(cursor: Any) -> None:
            for statement in self._sql.create_staging():
                cursor.execute(statement)
            if staged_file is not None:
                cursor.execute(self._sql.copy_from_s3(staged_file[1]))
            else:
                _insert_in_chunks(cursor, self._sql.staging, COLUMNS, list(rows))
            _insert_in_chunks(
                cursor,
                self._sql.staging_cursors,
                DELIVERY_COLUMNS,
                [astuple(d) for d in last_deliveries(rows).values()],
            )
            cursor.execute(self._sql.merge_rows())
            cursor.execute(self._sql.merge_cursors())
            for statement in self._sql.drop_staging():
                cursor.execute(statement)

        try:
            self._in_transaction(load)
        finally:
            if staged_file is not None:
                self._delete_staged(staged_file[0])

    def rows(self) -> Iterator[WarehouseRow]:
        def read(cursor: Any) -> list[WarehouseRow]:
            cursor.execute(self._sql.select_rows())
            return [WarehouseRow(*r) for r in cursor.fetchall()]

        yield from self._in_transaction(read)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ------------------------------------------------------------------ internals

    def _stage_file(self, rows: Sequence[WarehouseRow]) -> tuple[str, str]:
        """The batch as one Parquet file under the staging prefix: (filesystem path, s3:// URI for COPY)."""
        assert self._staging_fs is not None
        fs, root = self._staging_fs
        name = f"{self._owner}/{uuid.uuid4().hex}.parquet"
        try:
            fs.create_dir(f"{root}/{self._owner}", recursive=True)
            pq.write_table(rows_to_table(rows), f"{root}/{name}", filesystem=fs, compression="zstd")
        except OSError as exc:
            raise SinkUnavailable(f"redshift staging on S3: {exc}") from exc
        uri = f"{(self._settings.s3_staging_uri or root).rstrip('/')}/{name}"
        return f"{root}/{name}", uri

    def _delete_staged(self, path: str) -> None:
        assert self._staging_fs is not None
        # A leftover staging file is harmless; an S3 lifecycle rule should expire the prefix.
        with contextlib.suppress(OSError):
            self._staging_fs[0].delete_file(path)

    def _in_transaction(self, work: Callable[[Any], Any]) -> Any:
        try:
            if self._conn is None:
                self._conn = self._connect()
            cursor = self._conn.cursor()
            try:
                if not self._schema_ready:
                    for statement in self._ddl:
                        cursor.execute(statement)
                result = work(cursor)
                self._conn.commit()
                self._schema_ready = True
                return result
            except BaseException:
                self._conn.rollback()
                raise
        except SinkUnavailable:
            raise
        except Exception as exc:  # the DB-API's errors: drop the connection, retry on a fresh one
            self.close()
            raise SinkUnavailable(f"redshift warehouse: {type(exc).__name__}: {exc}") from exc


def _insert_in_chunks(cursor: Any, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Multi-row INSERTs of ``_INSERT_CHUNK`` rows each: redshift-connector's executemany sends one
    statement per row, a round trip each."""
    for start in range(0, len(rows), _INSERT_CHUNK):
        chunk = rows[start : start + _INSERT_CHUNK]
        cursor.execute(multi_row_insert(table, columns, len(chunk)), [value for row in chunk for value in row])


_INSERT_CHUNK = 500


def multi_row_insert(table: str, columns: Sequence[str], rows: int) -> str:
    one_row = f"({', '.join(['%s'] * len(columns))})"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([one_row] * rows)}"


def _redshift_connect(settings: RedshiftSinkSettings) -> DbApiConnection:
    import redshift_connector

    connection: DbApiConnection = redshift_connector.connect(
        host=settings.host,
        port=settings.port,
        database=settings.database,
        user=settings.user,
        password=settings.password.get_secret_value() if settings.password else None,
        timeout=int(settings.timeout_s),
    )
    return connection
