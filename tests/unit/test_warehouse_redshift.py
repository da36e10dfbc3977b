"""The Redshift sink offline (no AWS here): the DDL compiled by sqlalchemy-redshift, and the bulk path's
statements and staged Parquet file, through a DB-API connection that records what it is sent. The same
sink's staging + MERGE path runs for real on PostgreSQL in tests/integration/test_warehouse_sinks.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from capacity_service.adapters.warehouse.redshift import RedshiftSink, ddl, redshift_dialect
from capacity_service.adapters.warehouse.rows import COLUMNS
from capacity_service.adapters.warehouse.sink import SinkUnavailable
from capacity_service.settings import RedshiftSinkSettings, ServiceSettings, service_settings
from tests.support.warehouse_rows import history

SETTINGS = RedshiftSinkSettings(
    host="example.redshift.amazonaws.com",
    schema_name="analytics",
    s3_staging_uri="s3://example-bucket/capacity/staging",
    iam_role_arn="arn:aws:iam::123456789012:role/copy",
    region="eu-west-1",
)


class RecordingConnection:
    """Records statements; ``on_execute`` may inspect or fail them."""

    def __init__(self, on_execute: Any = None) -> None:
        self.statements: list[str] = []
        self.commits = self.rollbacks = 0
        self.on_execute = on_execute or (lambda _sql: None)

    def cursor(self) -> RecordingConnection:
        return self

    def execute(self, sql: str, params: Any = None) -> None:
        self.statements.append(sql)
        self.on_execute(sql)

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        self.statements.append(f"{sql} x{len(rows)}")
        self.on_execute(sql)

    def commit(self) -> None:
        self.commits += 1

    def rollback(self) -> None:
        self.rollbacks += 1

    def close(self) -> None:
        pass


def test_ddl_is_redshift_with_distribution_and_sort_keys() -> None:
    events, cursors = ddl(SETTINGS, redshift_dialect())
    assert events.startswith("CREATE TABLE IF NOT EXISTS analytics.capacity_events (")
    assert events.endswith("DISTKEY (pool_id) SORTKEY (pool_id, seq_nr, part)")
    assert "PRIMARY KEY (pool_id, seq_nr, part)" in events  # informational in Redshift; MERGE dedups
    assert "occurred_at TIMESTAMP WITH TIME ZONE NOT NULL" in events
    assert cursors.startswith("CREATE TABLE IF NOT EXISTS analytics.capacity_event_deliveries (")


def test_the_bulk_path_stages_one_parquet_file_copies_merges_and_cleans_up(tmp_path: Path) -> None:
    rows = history("pool-a", 5) + history("pool-b", 3)
    staged: list[Any] = []

    def on_execute(sql: str) -> None:
        if sql.startswith("COPY"):  # the file exists, with the table's columns in order, while COPY runs
            uri = sql.split("'")[1]
            local = tmp_path / uri.removeprefix("s3://example-bucket/capacity/staging/")
            staged.append((uri, pq.read_table(local)))

    conn = RecordingConnection(on_execute)
    sink = RedshiftSink(SETTINGS, connect=lambda: conn, staging_fs=(pafs.LocalFileSystem(), str(tmp_path)))
    sink.write(rows)

    kinds = [s.split(" (")[0].split(" FROM")[0].split(" USING")[0] for s in conn.statements]
    assert kinds == [
        "CREATE TABLE IF NOT EXISTS analytics.capacity_events",
        "CREATE TABLE IF NOT EXISTS analytics.capacity_event_deliveries",
        'CREATE TEMP TABLE "capacity_events_staging"',
        'CREATE TEMP TABLE "capacity_event_deliveries_staging"',
        'COPY "capacity_events_staging"',
        'INSERT INTO "capacity_event_deliveries_staging"',
        'MERGE INTO "analytics"."capacity_events"',
        'MERGE INTO "analytics"."capacity_event_deliveries"',
        'DROP TABLE "capacity_events_staging"',
        'DROP TABLE "capacity_event_deliveries_staging"',
    ]
    copy = next(s for s in conn.statements if s.startswith("COPY"))
    assert "IAM_ROLE 'arn:aws:iam::123456789012:role/copy' FORMAT AS PARQUET REGION 'eu-west-1'" in copy
    assert conn.statements[5].count("), (") == 1  # one multi-row INSERT, one cursor row per pool
    assert conn.commits == 1 and conn.rollbacks == 0
    [(uri, table)] = staged
    assert uri.startswith("s3://example-bucket/capacity/staging/stream-0/") and uri.endswith(".parquet")
    assert table.column_names == list(COLUMNS) and table.num_rows == len(rows)
    assert not list((tmp_path / "stream-0").iterdir())  # deleted after the commit


def test_a_failed_merge_rolls_back_reports_unavailable_and_leaves_no_staged_file(tmp_path: Path) -> None:
    def fail_merge(sql: str) -> None:
        if sql.startswith("MERGE"):
            raise ConnectionError("connection reset")

    conn = RecordingConnection(fail_merge)
    sink = RedshiftSink(SETTINGS, connect=lambda: conn, staging_fs=(pafs.LocalFileSystem(), str(tmp_path)))
    with pytest.raises(SinkUnavailable, match="connection reset"):
        sink.write(history("pool-a", 3))
    assert conn.commits == 0 and conn.rollbacks == 1
    assert not list((tmp_path / "stream-0").iterdir())


def test_without_s3_rows_reach_staging_by_multi_row_inserts() -> None:
    conn = RecordingConnection()
    sink = RedshiftSink(SETTINGS.model_copy(update={"s3_staging_uri": None}), connect=lambda: conn)
    sink.write(history("pool-a", 1200))
    inserts = [s for s in conn.statements if s.startswith('INSERT INTO "capacity_events_staging"')]
    assert [s.count("), (") + 1 for s in inserts] == [500, 500, 200]  # rows per statement, not per row
    assert not any(s.startswith("COPY") for s in conn.statements)


def test_settings_need_an_iam_role_for_the_bulk_path_and_keep_the_password_out_of_config() -> None:
    with pytest.raises(ValidationError, match="iam_role_arn"):
        RedshiftSinkSettings(host="h", s3_staging_uri="s3://bucket/prefix")
    args = {"warehouse": {"sink": {"kind": "redshift", "host": "h"}}}
    settings = service_settings(args, {"CAPACITY_REDSHIFT_PASSWORD": "s3cr3t-value"})
    sink = settings.warehouse.sink
    assert isinstance(sink, RedshiftSinkSettings) and sink.password is not None
    assert sink.password.get_secret_value() == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(settings) and "s3cr3t-value" not in str(settings.model_dump())


def test_a_warehouse_url_from_the_environment_selects_the_sql_sink() -> None:
    settings = service_settings({}, {"CAPACITY_WAREHOUSE_URL": "postgresql+psycopg://u:pw@db/warehouse"})
    assert settings.warehouse.sink.kind == "sql"
    assert "pw@" not in repr(settings)
    assert ServiceSettings().warehouse.sink.kind == "parquet"  # the embedded default
