"""The analytics stream on a real local Ray: pool actors hand events to the stream actor fire-and-forget,
and the warehouse (real Parquet files, real PostgreSQL) ends with exactly one row per journal event, also
when the stream actor is killed mid-batch and while PostgreSQL is down."""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from capacity_service.adapters.journal import Journal, open_journal
from capacity_service.adapters.warehouse import open_sink
from capacity_service.client import AsyncCapacityClient
from capacity_service.runtime import _ray
from capacity_service.runtime._ray import kill_namespace
from capacity_service.runtime.actor_api import WarehouseStreamApi, call
from capacity_service.runtime.names import stream_name
from capacity_service.settings import (
    HostingSettings,
    ParquetSinkSettings,
    ServiceSettings,
    SqlJournalSettings,
    SqlSinkSettings,
    WarehouseSettings,
)
from devenv import LocalPostgres

pytestmark = pytest.mark.usefixtures("ray_session")

POOLS = 50


def make_settings(tmp: Path, sink: ParquetSinkSettings | SqlSinkSettings) -> ServiceSettings:
    return ServiceSettings(
        journal=SqlJournalSettings(url=f"sqlite:///{tmp / 'journal.db'}"),
        hosting=HostingSettings(
            mode="sharded", shards=2, namespace=f"warehouse-{uuid.uuid4().hex[:8]}", call_timeout_s=30
        ),
        warehouse=WarehouseSettings(sink=sink, flush_interval_s=0.3, catch_up_interval_s=2.0),
    )


@pytest.fixture
def tmp() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="warehouse-ray-") as directory:
        yield Path(directory)


def postgres_sink(postgres: LocalPostgres) -> SqlSinkSettings:
    table = f"events_{uuid.uuid4().hex[:8]}"
    return SqlSinkSettings(url=postgres.url, table=table, deliveries_table=f"{table}_deliveries")


class Load:
    """Reserves and releases spread over pools; ``operations`` counts acknowledged ones."""

    def __init__(self, client: AsyncCapacityClient, pool_ids: list[str]) -> None:
        self.client, self.pool_ids = client, pool_ids
        self.operations = 0
        self.errors: list[str] = []
        self._held: list[str] = []

    async def run(self, operations: int, concurrency: int = 32, between: Callable[[int], Any] | None = None) -> None:
        counter = iter(range(operations))

        async def worker() -> None:
            for n in counter:
                try:
                    if n % 10 in (3, 6, 9) and self._held:
                        await self.client.release(self._held.pop())
                    else:
                        receipt = await self.client.reserve(self.pool_ids[n % len(self.pool_ids)], request_id=f"op-{n}")
                        self._held.append(receipt.reservation_id)
                    self.operations += 1
                except Exception as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))


async def configured_pools(client: AsyncCapacityClient) -> list[str]:
    pool_ids = [f"wh-{n}-{uuid.uuid4().hex[:6]}" for n in range(POOLS)]
    for pool_id in pool_ids:
        await client.configure_pool(pool_id, capacity=100_000, zone=f"zone-{hash(pool_id) % 5}")
    return pool_ids


def journal_keys(journal: Journal) -> Counter[tuple[str, int]]:
    return Counter((pool_id, e.seq_nr) for pool_id in list(journal.pool_ids()) for e in journal.read(pool_id))


def warehouse_keys(settings: ServiceSettings) -> Counter[tuple[str, int]]:
    with open_sink(settings.warehouse.sink, owner="test-reader") as sink:  # reads never recover or write
        return Counter((row.pool_id, row.seq_nr) for row in sink.rows())


def assert_exactly_once_eventually(settings: ServiceSettings, timeout: float = 90) -> Counter[tuple[str, int]]:
    with open_journal(settings.journal) as journal:
        expected = journal_keys(journal)
    deadline = time.monotonic() + timeout
    found: Counter[tuple[str, int]] = Counter()
    while time.monotonic() < deadline:
        found = warehouse_keys(settings)
        if set(found) == set(expected):
            break
        time.sleep(0.5)
    missing = set(expected) - set(found)
    assert not missing, f"{len(missing)} of {len(expected)} events never reached the warehouse"
    assert set(found) == set(expected)  # nothing the journal does not have
    assert set(found.values()) == {1}, "an event has more than one row"
    return found


def stream_status(settings: ServiceSettings) -> dict[str, Any]:
    handle = _ray.lookup_actor(stream_name(0), settings.hosting.namespace)
    assert handle is not None, "the pool actors never created the stream actor"
    status: dict[str, Any] = _ray.ask_now(handle, call(WarehouseStreamApi.status), 30)
    return status


@pytest.mark.parametrize("sink_kind", ["parquet", "postgres"])
def test_ten_thousand_reserves_and_releases_become_exactly_one_row_per_event(
    tmp: Path, sink_kind: str, request: pytest.FixtureRequest
) -> None:
    sink = (
        ParquetSinkSettings(path=str(tmp / "warehouse"))
        if sink_kind == "parquet"
        else postgres_sink(request.getfixturevalue("postgres"))
    )
    settings = make_settings(tmp, sink)

    async def scenario() -> Load:
        client = AsyncCapacityClient(settings)
        load = Load(client, await configured_pools(client))
        await load.run(10_000)
        return load

    try:
        load = asyncio.run(scenario())
        assert load.errors == [] and load.operations == 10_000
        rows = assert_exactly_once_eventually(settings)
        assert len(rows) == 10_000 + POOLS  # every reserve and release is one event, plus the pool's creation
    finally:
        kill_namespace(settings.hosting.namespace)


def test_a_stream_killed_mid_batch_comes_back_with_nothing_missing_or_duplicated(tmp: Path) -> None:
    settings = make_settings(tmp, ParquetSinkSettings(path=str(tmp / "warehouse")))

    async def scenario() -> tuple[Load, int]:
        client = AsyncCapacityClient(settings)
        load = Load(client, await configured_pools(client))
        running = asyncio.ensure_future(load.run(6_000, concurrency=16))
        killed_pid = 0
        while not running.done():
            status = await asyncio.to_thread(stream_status, settings)
            if status["buffered"] > 0 and status["flushes"] > 0:  # rows in hand, and a batch already out
                os.kill(int(status["pid"]), signal.SIGKILL)
                killed_pid = int(status["pid"])
                break
            await asyncio.sleep(0.05)
        await running
        return load, killed_pid

    try:
        load, killed_pid = asyncio.run(scenario())
        assert killed_pid, "the load finished before the stream could be killed mid-batch"
        assert load.errors == []  # a dead stream never fails a reservation
        assert_exactly_once_eventually(settings)
        assert stream_status(settings)["pid"] != killed_pid  # Ray restarted it; it caught up by itself
    finally:
        kill_namespace(settings.hosting.namespace)


@pytest.mark.postgres
def test_reserves_go_on_while_postgres_is_down_and_the_warehouse_catches_up(tmp: Path, postgres: LocalPostgres) -> None:
    settings = make_settings(tmp, postgres_sink(postgres))

    async def scenario() -> tuple[Load, int, int]:
        client = AsyncCapacityClient(settings)
        load = Load(client, await configured_pools(client))
        await load.run(1_000)
        before = load.operations
        await asyncio.to_thread(postgres.stop)
        try:
            await load.run(3_000)  # the warehouse is down all along
            during = load.operations - before
            # It says so once a write, or a read of its cursors (a stream started during the outage), failed.
            deadline = time.monotonic() + 10
            while stream_status(settings)["sink_healthy"] and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert stream_status(settings)["sink_healthy"] is False, stream_status(settings)
        finally:
            await asyncio.to_thread(postgres.start)
        await load.run(1_000)
        return load, before, during

    try:
        load, before, during = asyncio.run(scenario())
        assert load.errors == []
        assert (before, during) == (1_000, 3_000)
        assert_exactly_once_eventually(settings)
    finally:
        postgres.start()
        kill_namespace(settings.hosting.namespace)
