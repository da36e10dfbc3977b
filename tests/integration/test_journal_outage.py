"""Cassandra stops under load: reserves fail fast with Unavailable, nothing acknowledged is lost, and
the pools serve again by themselves once Cassandra is back."""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from capacity_service.client import CapacityClient
from capacity_service.cluster._ray import kill_namespace
from capacity_service.errors import Unavailable
from capacity_service.journal import open_journal
from capacity_service.recovery import recover_pool
from capacity_service.serialization import Codec
from capacity_service.settings import (
    CassandraJournalSettings,
    HostingSettings,
    ServiceSettings,
    WarehouseSettings,
)
from devenv import LocalCassandra

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
    client = CapacityClient(settings)
    pool_id = f"outage-{uuid.uuid4().hex[:8]}"
    client.configure_pool(pool_id, 100_000, "north")
    acknowledged: set[str] = set()
    attempted: set[str] = set()
    failure_seconds: list[float] = []
    stop = threading.Event()

    def stream(worker: int) -> None:
        n = 0
        while not stop.is_set():
            request_id = f"w{worker}-{n}"
            n += 1
            attempted.add(request_id)
            began = time.monotonic()
            try:
                client.reserve(pool_id, request_id=request_id)
                acknowledged.add(request_id)
            except Unavailable:
                failure_seconds.append(time.monotonic() - began)
                time.sleep(0.05)

    workers = [threading.Thread(target=stream, args=(w,)) for w in range(3)]
    try:
        for w in workers:
            w.start()
        time.sleep(1.0)
        cassandra.stop()
        time.sleep(4.0)
        during_outage = len(failure_seconds)
        cassandra.start()
        deadline = time.monotonic() + 90
        served_again = False
        while time.monotonic() < deadline and not served_again:
            try:
                client.reserve(pool_id)
                served_again = True
            except Unavailable:
                time.sleep(0.5)
        stop.set()
        for w in workers:
            w.join(timeout=60)
    finally:
        stop.set()
        cassandra.start()  # for the tests after this one, whatever happened
        client.close()

    assert served_again, "the pool did not serve again after Cassandra came back"
    assert during_outage > 0
    # Failing fast: an outage answer comes from the breaker / driver, not from waiting out the timeout.
    assert statistics.median(failure_seconds) < settings.hosting.call_timeout_s / 4
    with open_journal(settings.journal) as journal:
        stored = set(recover_pool(journal, Codec(), pool_id).state.reservation_by_request)
    assert acknowledged <= stored
    assert {r for r in stored if not r.startswith("auto:")} <= attempted
