"""The journal a benchmark runs the service on (``--journal sqlite|postgres|cassandra``): its server,
started on loopback by the test environment's code (devenv), and the environment that points
`capacity-service start` at it, as an operator's would; and that database's own limit, measured in the
same run: what its driver alone writes at the same concurrency, one row per write. Also the journal of a
benchmark that opens one in its own process (``journal_settings``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._common import local_cassandra, local_postgres, summarize, timed_calls
from capacity_service.settings import CassandraJournalSettings, SqlJournalSettings

JOURNALS = ("sqlite", "postgres", "cassandra")


def add_journal_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--journal", choices=JOURNALS, default="sqlite", help="the service's journal")


def results_name(benchmark: str, journal: str) -> str:
    """One current results file per benchmark and journal: ``ramp`` on the default SQLite journal,
    ``ramp-cassandra`` on Cassandra."""
    return benchmark if journal == "sqlite" else f"{benchmark}-{journal}"


@dataclass(frozen=True)
class JournalServer:
    """A running journal database: how `capacity-service start` finds it (its environment), and how the
    benchmark's own driver reaches it (None for SQLite, which has no server)."""

    kind: str
    environment: dict[str, str]
    cassandra: tuple[str, int] | None = None
    postgres_conninfo: str | None = None


@contextmanager
def journal_server(kind: str) -> Iterator[JournalServer]:
    """The journal ``kind`` ready for the service: nothing to start for SQLite (the default, in the data
    dir); a durable PostgreSQL (fsync per commit) or a single-node Cassandra 2.1 (commit log synced per
    batch, as devenv runs it) in a temporary directory, stopped afterwards."""
    if kind == "sqlite":
        yield JournalServer(kind, {})
    elif kind == "postgres":
        with local_postgres() as postgres:
            yield JournalServer(kind, {"CAPACITY_JOURNAL_URL": postgres.url}, postgres_conninfo=postgres.conninfo)
    elif kind == "cassandra":
        with local_cassandra() as (host, port):
            journal = {
                "kind": "cassandra",
                "contact_points": [host],
                "port": port,
                "protocol_version": 3,  # Cassandra 2.1
                "keyspace": "capacity",
            }
            yield JournalServer(kind, {"CAPACITY_JOURNAL": json.dumps(journal)}, cassandra=(host, port))
    else:
        raise ValueError(f"unknown journal {kind!r}: one of {', '.join(JOURNALS)}")


@contextmanager
def journal_settings(kind: str) -> Iterator[SqlJournalSettings | CassandraJournalSettings]:
    """The journal ``kind`` (sqlite or cassandra) for a benchmark that opens it in its own process, not
    through `capacity-service start`: SQLite in a temporary directory, or a keyspace of a local Cassandra
    started for it (``_common.local_cassandra``)."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="bench-sqlite-") as work_dir:
            yield SqlJournalSettings(url=f"sqlite:///{work_dir}/journal.db")
    elif kind == "cassandra":
        with local_cassandra() as (host, port):
            yield CassandraJournalSettings(
                contact_points=[host], port=port, protocol_version=3, keyspace="bench", request_timeout_s=30
            )
    else:
        raise ValueError(f"unknown journal {kind!r}: sqlite or cassandra")


def database_limits(server: JournalServer, concurrency: int = 16, seconds: float = 8.0) -> dict[str, Any]:
    """What the database does alone, through its driver, with ``concurrency`` writes in flight, each one
    row in its own partition or transaction: on Cassandra conditional (LWT) and plain inserts at QUORUM;
    on PostgreSQL conditional UPDATEs of one row (the yardstick's reserve) and plain INSERTs, each its own
    committed transaction; on SQLite one writer's INSERT + COMMIT (synchronous=FULL, as the journal)."""
    if server.cassandra is not None:
        return _cassandra_limits(*server.cassandra, concurrency, seconds)
    if server.postgres_conninfo is not None:
        return asyncio.run(_postgres_limits(server.postgres_conninfo, concurrency, seconds))
    return _sqlite_limits(seconds)


def _timed(write: Callable[[int, int], None], concurrency: int, seconds: float) -> dict[str, Any]:
    latencies, elapsed = timed_calls(write, concurrency, seconds)
    return {"writes_per_s": round(len(latencies) / elapsed), **summarize(latencies)}


def _cassandra_limits(host: str, port: int, concurrency: int, seconds: float) -> dict[str, Any]:
    from cassandra import ConsistencyLevel
    from cassandra.cluster import Cluster

    cluster = Cluster([host], port=port, protocol_version=3)
    session = cluster.connect()
    try:
        session.execute(
            "CREATE KEYSPACE IF NOT EXISTS driver_limit WITH replication = "
            "{'class': 'SimpleStrategy', 'replication_factor': 1}"
        )
        session.execute("CREATE TABLE IF NOT EXISTS driver_limit.rows (k text PRIMARY KEY, v blob)")
        plain = session.prepare("INSERT INTO driver_limit.rows (k, v) VALUES (?, ?)")
        conditional = session.prepare("INSERT INTO driver_limit.rows (k, v) VALUES (?, ?) IF NOT EXISTS")
        for statement in (plain, conditional):
            statement.consistency_level = ConsistencyLevel.QUORUM
        run = uuid.uuid4().hex[:8]
        payload = b"x" * 120
        return {
            "database": "cassandra",
            "concurrency": concurrency,
            "conditional": _timed(
                lambda k, i: session.execute(conditional, (f"{run}c{k}-{i}", payload)), concurrency, seconds
            ),
            "plain": _timed(lambda k, i: session.execute(plain, (f"{run}p{k}-{i}", payload)), concurrency, seconds),
        }
    finally:
        cluster.shutdown()


async def _postgres_limits(conninfo: str, concurrency: int, seconds: float) -> dict[str, Any]:
    import asyncpg

    connections = [await asyncpg.connect(conninfo) for _ in range(concurrency)]
    try:
        await connections[0].execute(
            "CREATE TABLE IF NOT EXISTS driver_limit (k text PRIMARY KEY, n bigint NOT NULL, v bytea)"
        )
        await connections[0].executemany(
            "INSERT INTO driver_limit (k, n) VALUES ($1, 0) ON CONFLICT DO NOTHING",
            [(f"row-{k}",) for k in range(concurrency)],
        )

        async def measure(statement: str, arguments: Callable[[int, int], tuple[Any, ...]]) -> dict[str, Any]:
            latencies: list[float] = []
            stop = time.monotonic() + seconds

            async def worker(k: int) -> None:
                i = 0
                while time.monotonic() < stop:
                    began = time.perf_counter()
                    await connections[k].execute(statement, *arguments(k, i))
                    latencies.append(time.perf_counter() - began)
                    i += 1

            began = time.monotonic()
            await asyncio.gather(*(worker(k) for k in range(concurrency)))
            return {"writes_per_s": round(len(latencies) / (time.monotonic() - began)), **summarize(latencies)}

        run = uuid.uuid4().hex[:8]
        return {
            "database": "postgres",
            "concurrency": concurrency,
            "conditional": await measure(
                "UPDATE driver_limit SET n = n + 1 WHERE k = $1 AND n < 1000000000", lambda k, i: (f"row-{k}",)
            ),
            "plain": await measure(
                "INSERT INTO driver_limit (k, n, v) VALUES ($1, 0, $2)", lambda k, i: (f"{run}-{k}-{i}", b"x" * 120)
            ),
        }
    finally:
        for connection in connections:
            await connection.close()


def _sqlite_limits(seconds: float) -> dict[str, Any]:
    import sqlite3

    with tempfile.TemporaryDirectory(prefix="bench-sqlite-") as work_dir:
        connection = sqlite3.connect(Path(work_dir) / "limit.db", isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("CREATE TABLE rows (k TEXT PRIMARY KEY, v BLOB)")
        payload = b"x" * 120

        def write(k: int, i: int) -> None:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("INSERT INTO rows VALUES (?, ?)", (f"{k}-{i}", payload))
            connection.execute("COMMIT")

        plain = _timed(write, 1, seconds)  # one writer at a time is all SQLite takes
        connection.close()
    return {"database": "sqlite", "concurrency": 1, "plain": plain}
