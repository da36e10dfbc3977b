"""The journal stops under load (Cassandra, PostgreSQL, or a SQLite file another process holds locked):
reserves fail fast (503, or 504 for the appends in flight), every answer agrees with the journal, and the
pools serve again by themselves once the journal is back."""

from __future__ import annotations

import sqlite3
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from capacity_service.client import CapacityClient
from capacity_service.runtime._ray import kill_namespace
from capacity_service.settings import (
    CassandraJournalSettings,
    HostingSettings,
    ServiceSettings,
    SqlJournalSettings,
    WarehouseSettings,
    WebhookSettings,
)
from tests.support.history import History, check, events_in

pytestmark = pytest.mark.usefixtures("ray_session")


class LockedSqliteFile:
    """A SQLite journal "stops" while another process holds its file locked for writing (a backup tool,
    an operator's shell), and "starts" when it lets go."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._holder: sqlite3.Connection | None = None

    def stop(self) -> None:
        self._holder = sqlite3.connect(self._path, isolation_level=None)
        self._holder.execute("BEGIN EXCLUSIVE")

    def start(self) -> None:
        if self._holder is not None:
            self._holder.execute("ROLLBACK")
            self._holder.close()
            self._holder = None


@pytest.fixture(params=["cassandra", "postgres", "sqlite_locked"])
def outage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, ServiceSettings]]:
    journal: SqlJournalSettings | CassandraJournalSettings
    if request.param == "cassandra":
        server: Any = request.getfixturevalue("cassandra")
        base: CassandraJournalSettings = request.getfixturevalue("cassandra_settings")
        journal = base.model_copy(update={"keyspace": "outage", "request_timeout_s": 2.0})
    elif request.param == "postgres":
        server = request.getfixturevalue("postgres")
        journal = request.getfixturevalue("postgres_settings")
    else:
        database = tmp_path / "journal.db"
        journal = SqlJournalSettings(url=f"sqlite:///{database}", sqlite_busy_timeout_ms=500)
        server = LockedSqliteFile(database)
    namespace = f"outage-{uuid.uuid4().hex[:8]}"
    settings = ServiceSettings(
        journal=journal,
        hosting=HostingSettings(namespace=namespace, call_timeout_s=20),
        warehouse=WarehouseSettings(enabled=False),  # tested on its own in test_warehouse_stream.py
        webhooks=WebhookSettings(enabled=False),  # tested on their own in test_webhooks*.py
    )
    yield server, settings
    kill_namespace(namespace)


def test_a_journal_outage_fails_fast_loses_nothing_and_heals(outage: tuple[Any, ServiceSettings]) -> None:
    """Every answer is checked against the journal afterwards (``tests/support/history.py``): the appends
    in flight when the journal stopped are 504s, settled by repeating them; the rest are fast 503s."""
    server, settings = outage
    client = CapacityClient(settings)
    pool_id = f"outage-{uuid.uuid4().hex[:8]}"
    client.configure_pool(pool_id, 100_000, "north")
    history = History()
    stop = threading.Event()

    def stream(worker: int) -> None:
        n = 0
        while not stop.is_set():
            operation = history.reserve(client, pool_id, 1, f"w{worker}-{n}")
            n += 1
            if operation.outcome != "ok":
                time.sleep(0.05)

    workers = [threading.Thread(target=stream, args=(w,)) for w in range(3)]
    try:
        for w in workers:
            w.start()
        time.sleep(1.0)
        server.stop()
        time.sleep(4.0)
        during_outage = [op for op in history.operations if op.outcome != "ok"]
        server.start()
        deadline = time.monotonic() + 90
        served_again = False
        while time.monotonic() < deadline and not served_again:
            served_again = history.reserve(client, pool_id, 1, f"after-{uuid.uuid4().hex}").outcome == "ok"
            if not served_again:
                time.sleep(0.5)
        stop.set()
        for w in workers:
            w.join(timeout=60)
        for _ in range(20):  # repeat the unknown outcomes until the pool decides them
            for op in history.unsettled():
                history.reserve(client, pool_id, op.quantity, str(op.request_id))
    finally:
        stop.set()
        server.start()  # for the tests after this one, whatever happened
        client.close()

    assert served_again, "the pool did not serve again after the journal came back"
    assert during_outage
    # Failing fast: an outage answer comes from the breaker / driver, not from waiting out the timeout.
    assert statistics.median(op.ended - op.started for op in during_outage) < settings.hosting.call_timeout_s / 4
    assert {op.code for op in during_outage} <= {"unavailable", "outcome_unknown"}
    assert check(history, events_in(settings.journal, [pool_id])) == []
