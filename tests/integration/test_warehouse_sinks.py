"""The SQL warehouse sinks against real databases: SQLite, PostgreSQL (COPY path), and the Redshift
sink's staging + MERGE path run on PostgreSQL 15 (which speaks the same MERGE)."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.dialects import postgresql

from capacity_service.settings import RedshiftSinkSettings, SqlSinkSettings
from capacity_service.warehouse.redshift import RedshiftSink
from capacity_service.warehouse.sql import SqlSink
from devenv import LocalPostgres
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
        return lambda: RedshiftSink(
            settings, connect=lambda: psycopg.connect(postgres.conninfo), ddl_dialect=postgresql.dialect()
        )
