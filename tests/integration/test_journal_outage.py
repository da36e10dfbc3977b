"""Cassandra stops under load: reserves fail fast (503, or 504 for the appends in flight), every answer
agrees with the journal, and the pools serve again by themselves once Cassandra is back."""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from capacity_service.client import CapacityClient
from capacity_service.cluster._ray import kill_namespace
from capacity_service.settings import (
    CassandraJournalSettings,
    HostingSettings,
    ServiceSettings,
    WarehouseSettings,
)
from devenv import LocalCassandra
from tests.support.history import History, check, events_in

pytestmark = pytest.mark.usefixtures("ray_session")


@pytest.fixture
def settings(cassandra_settings: CassandraJournalSettings) -> Iterator[ServiceSettings]:
    namespace = f"outage-{uuid.uuid4().hex[:8]}"
    yield ServiceSettings(
        journal=cassandra_settings.model_copy(update={"keyspace": "outage", "request_timeout_s": 2.0}),
        hosting=HostingSettings(namespace=namespace, call_timeout_s=20),
        warehouse=WarehouseSettings(enabled=False),  # tested on its own in test_warehouse_stream.py
    )
    kill_namespace(namespace)


def test_cassandra_outage_fails_fast_loses_nothing_and_heals(
    cassandra: LocalCassandra, settings: ServiceSettings
) -> None:
    """Every answer is checked against the journal afterwards (``tests/support/history.py``): the appends
    in flight when Cassandra stopped are 504s, settled by repeating them; the rest are fast 503s."""
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
        cassandra.stop()
        time.sleep(4.0)
        during_outage = [op for op in history.operations if op.outcome != "ok"]
        cassandra.start()
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
        cassandra.start()  # for the tests after this one, whatever happened
        client.close()

    assert served_again, "the pool did not serve again after Cassandra came back"
    assert during_outage
    # Failing fast: an outage answer comes from the breaker / driver, not from waiting out the timeout.
    assert statistics.median(op.ended - op.started for op in during_outage) < settings.hosting.call_timeout_s / 4
    assert {op.code for op in during_outage} <= {"unavailable", "outcome_unknown"}
    assert check(history, events_in(settings.journal, [pool_id])) == []
