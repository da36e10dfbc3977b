"""The SQL warehouse sinks against real databases: SQLite, PostgreSQL (COPY path), and the Redshift
sink's staging + MERGE path run on PostgreSQL 15 (which speaks the same MERGE)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import cast

import psycopg
import pytest
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

from capacity_service.adapters.warehouse.redshift import RedshiftSink
from capacity_service.adapters.warehouse.sql import SqlSink
from capacity_service.settings import RedshiftSinkSettings, SqlSinkSettings
from devenv import LocalPostgres
from tests.support.warehouse_rows import history
from tests.warehouse_contract import SinkFactory, WarehouseSinkContract


def _table() -> str:
    return f"events_{uuid.uuid4().hex[:10]}"


class TestSqliteSink(WarehouseSinkContract):
    @pytest.fixture
    def sink_factory(self, tmp_path: Path) -> SinkFactory:
        settings = SqlSinkSettings(url=f"sqlite:///{tmp_path / 'warehouse.db'}")
        return lambda: SqlSink(settings)


@pytest.mark.postgres
class TestPostgresSink(WarehouseSinkContract):
    @pytest.fixture
    def sink_factory(self, postgres: LocalPostgres) -> SinkFactory:
        table = _table()
        settings = SqlSinkSettings(url=postgres.url, table=table, deliveries_table=f"{table}_deliveries")
        return lambda: SqlSink(settings)


@pytest.mark.postgres
class TestRedshiftMergeOnPostgres(WarehouseSinkContract):
    @pytest.fixture
    def sink_factory(self, postgres: LocalPostgres) -> SinkFactory:
        table = _table()
        settings = RedshiftSinkSettings(host="unused", table=table, deliveries_table=f"{table}_deliveries")
        # SQLAlchemy leaves the dialect class's __init__ unannotated; it does make a Dialect.
        pg_dialect = cast(Callable[[], Dialect], postgresql.dialect)
        return lambda: RedshiftSink(
            settings, connect=lambda: psycopg.connect(postgres.conninfo), ddl_dialect=pg_dialect()
        )


@pytest.mark.postgres
def test_postgres_rows_present_beyond_the_cursor_are_not_duplicated(postgres: LocalPostgres) -> None:
    """Should a row exist without its cursor (a table restored from a backup, say), the COPY hits the
    primary key and the batch goes through staging + ON CONFLICT DO NOTHING instead."""
    table = _table()
    with SqlSink(SqlSinkSettings(url=postgres.url, table=table, deliveries_table=f"{table}_deliveries")) as sink:
        rows = history("pool-a", 6)
        sink.write(rows[:2])
        with sink.engine.begin() as conn:  # row 3 lands behind the sink's back
            conn.execute(sink._events.insert(), [rows[2]._asdict()])
        sink.write(rows)
        assert [r.seq_nr for r in sink.rows()] == [1, 2, 3, 4, 5, 6]
        assert sink.deliveries()["pool-a"].seq_nr == 6


def test_a_table_made_before_events_had_parts_is_reported_not_changed(tmp_path: Path) -> None:
    import sqlite3

    from capacity_service.adapters.warehouse.sink import SinkUnavailable

    path = tmp_path / "warehouse.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE capacity_events (event_id TEXT, pool_id TEXT, seq_nr INTEGER, PRIMARY KEY (pool_id, seq_nr))"
        )
    with SqlSink(SqlSinkSettings(url=f"sqlite:///{path}")) as sink, pytest.raises(SinkUnavailable, match="migrate it"):
        sink.write(history("pool-a", 2))
    with sqlite3.connect(path) as db:
        assert [row[1] for row in db.execute("PRAGMA table_info(capacity_events)")] == ["event_id", "pool_id", "seq_nr"]
