"""Many machines, on one: a Ray cluster of a head and three worker nodes (``ray.cluster_utils.Cluster``,
each node its own raylet and worker processes), the journal shared by all of them (SQLite file,
Cassandra). A worker is killed under load, a node is partitioned (its raylet frozen) while its pool
keeps running as a zombie, and Cassandra stops under load: every pool serves again by itself, and the
journal holds every acknowledged reservation, once, with no pool oversold.

Failure detection is tuned as in ``capacity_service.runtime.health``. Times are printed (run with -s),
never asserted: ``benchmarks/failover.py`` measures them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import pytest
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from capacity_service.adapters.journal import open_journal
from capacity_service.client import CapacityClient
from capacity_service.errors import CapacityError
from capacity_service.runtime import _ray
from capacity_service.runtime._ray import kill_namespace
from capacity_service.runtime.actor_api import PoolApi, call
from capacity_service.runtime.local import POOL_RESOURCES, LocalCluster, local_cluster, raylet_pid
from capacity_service.runtime.names import CACHE_PREFIX, SUPERVISOR_NAME, cache_name, shard_name
from capacity_service.runtime.router import actor_name
from capacity_service.runtime.supervisor import Supervisor
from capacity_service.settings import (
    CassandraJournalSettings,
    HostingSettings,
    ServiceSettings,
    SnapshotSettings,
    SqlJournalSettings,
    WarehouseSettings,
    WebhookSettings,
)
from devenv import LocalCassandra
from tests.support.history import History, check, events_in, holds_ended
from tests.support.multinode import (
    SETTLED,
    OrderStream,
    ReserveStream,
    actor_info,
    check_journal,
    check_orders,
    frozen,
    lose_busiest_worker,
    pools_by_node,
    try_actor_info,
    wait_until,
    worker_log_mentions,
    writer_epochs,
)

FENCED_LOG = "fenced: a newer incarnation"


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with local_cluster(workers=3) as local:
        yield local


def multinode_keyspace(cassandra_settings: CassandraJournalSettings) -> CassandraJournalSettings:
    """The session's Cassandra, in this module's keyspace, with a short request timeout: an outage shows
    within the scenarios' seconds. Its tables are made here first, as `start` makes them before any actor
    runs: Cassandra 2.1 gives tables created by several processes at once different ids."""
    settings = cassandra_settings.model_copy(update={"keyspace": "multinode", "request_timeout_s": 2.0})
    with open_journal(settings):
        pass
    return settings


@pytest.fixture(params=["sqlite", pytest.param("cassandra", marks=pytest.mark.cassandra)])
def journal(request: pytest.FixtureRequest) -> Iterator[SqlJournalSettings | CassandraJournalSettings]:
    """Each scenario on the embedded journal and on the production one (its append path, its fencing)."""
    if request.param == "cassandra":
        cassandra_settings: CassandraJournalSettings = request.getfixturevalue("cassandra_settings")
        yield multinode_keyspace(cassandra_settings)
        return
    with tempfile.TemporaryDirectory(prefix="multinode-") as tmp:
        yield SqlJournalSettings(url=f"sqlite:///{Path(tmp) / 'journal.db'}")


def settings_for(journal: SqlJournalSettings | CassandraJournalSettings) -> ServiceSettings:
    return ServiceSettings(
        journal=journal,
        hosting=HostingSettings(
            mode="actor_per_pool",  # what these scenarios were written for: a pool's actor lost on its own
            namespace=f"mn-{uuid.uuid4().hex[:8]}",
            actor_resources=POOL_RESOURCES,  # workers only: the head offers no pool_host
            call_timeout_s=30,  # longer than a failover: callers wait for the new incarnation
            watchdog_interval_s=1.0,
        ),
        warehouse=WarehouseSettings(enabled=False),  # not under test here; saves processes on 2 cores
        webhooks=WebhookSettings(enabled=False),  # likewise (tests/integration/test_webhooks*.py)
        snapshots=SnapshotSettings(every_n_events=100_000),  # no journal write but the reserves' own
    )


def sharded_settings_for(journal: SqlJournalSettings | CassandraJournalSettings) -> ServiceSettings:
    """``settings_for`` on two shard actors (orders need sharded hosting), with orders' own deadline."""
    base = settings_for(journal)
    hosting = base.hosting.model_copy(update={"mode": "sharded", "shards": 2, "call_timeout_s": 10})
    return base.model_copy(update={"hosting": hosting})


@pytest.fixture
def client(cluster: LocalCluster, journal: SqlJournalSettings | CassandraJournalSettings) -> Iterator[CapacityClient]:
    settings = settings_for(journal)
    with CapacityClient(settings) as client:
        yield client
    kill_namespace(settings.hosting.namespace)


def start_supervisor_on(settings: ServiceSettings, node_id: str) -> None:
    """The supervisor, as ``CapacityClient.start_watchdog`` makes it, but placed on ``node_id`` (softly:
    Ray may restart it on another node). The one the client made when it fixed the service's settings
    goes first (same settings)."""
    namespace = settings.hosting.namespace
    existing = _ray.lookup_actor(SUPERVISOR_NAME, namespace)
    if existing is not None:
        _ray.kill_actor(existing, restart=False)
        assert wait_until(lambda: _ray.lookup_actor(SUPERVISOR_NAME, namespace) is None, 30)
    ray.remote(Supervisor).options(
        name=SUPERVISOR_NAME,
        namespace=settings.hosting.namespace,
        lifetime="detached",
        max_restarts=-1,
        num_cpus=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=True),
    ).remote(settings)


def make_pools(client: CapacityClient, count: int, capacity: int) -> list[str]:
    pools = [f"mn-{uuid.uuid4().hex[:8]}" for _ in range(count)]
    for pool_id in pools:
        client.configure_pool(pool_id, capacity, "north")
    return pools


def test_a_worker_node_lost_under_load(cluster: LocalCluster, client: CapacityClient) -> None:
    settings = client.settings
    namespace = settings.hosting.namespace
    capacity = 60  # small enough that some pools fill up: "full" must still mean exactly full
    pools = make_pools(client, 20, capacity)
    idle_pool = make_pools(client, 1, 5)[0]  # nobody calls it: only the watchdog brings it back
    head = cluster.head.node_id
    placed = pools_by_node(settings, pools)
    assert head not in placed, "a pool runs on the head node"
    assert len(placed) >= 2, f"pools were not spread over the workers: {placed}"
    # The supervisor starts on the node about to die (the one with the most pools), so that Ray must
    # restart it elsewhere and it must resume its loops by itself.
    doomed = max(placed, key=lambda node_id: len(placed[node_id]))
    start_supervisor_on(settings, doomed)
    client.start_watchdog()
    # Checkouts in flight when the node goes: holds on pools of their own (every node), half confirmed.
    hold_pools = make_pools(client, 6, 10)
    holds = History()
    for pool_id in hold_pools:
        placed_holds = [holds.reserve(client, pool_id, 1, f"{pool_id}-hold-{k}", hold_seconds=4) for k in range(4)]
        for op in placed_holds[:2]:
            holds.confirm(client, pool_id, str(op.reservation_id))
    assert all(op.code == "ok" for op in holds.operations), holds.operations

    stream = ReserveStream(client, pools)
    stream.start()
    try:
        time.sleep(2.0)
        idle = _ray.lookup_actor(actor_name(settings, idle_pool), namespace)
        assert idle is not None
        _ray.kill_actor(idle, restart=False)  # gone for good: Ray will not bring it back
        failover = lose_busiest_worker(cluster, settings, stream)
        print(
            f"\nworker node killed: declared dead after {failover.detected_s:.2f} s, its "
            f"{failover.pools_moved} pools served again after {failover.seconds:.2f} s"
        )
        time.sleep(2.0)  # keep reserving on the relocated pools
    finally:
        stream.stop()

    totals = check_journal(settings, stream, capacity)
    assert totals["acknowledged"] > 100

    # Each hold ended once, wherever its pool went: the confirmed ones confirmed, the others expired.
    def holds_settled() -> bool:
        try:
            return all(client.get_pool(pool_id).reserved == 2 for pool_id in hold_pools)
        except CapacityError:  # a pool still starting on its new node
            return False

    assert wait_until(holds_settled, 60)
    hold_events = events_in(settings.journal, hold_pools)
    assert check(holds, hold_events, now=datetime.now(UTC)) == []
    for pool_id, events in hold_events.items():
        assert holds_ended(events) == {"HoldConfirmed": 2, "HoldExpired": 2}, (pool_id, events)
    alive = set(_ray.alive_node_ids())
    relocated = pools_by_node(settings, pools)
    assert head not in relocated and set(relocated) <= alive
    # Every call crossed nodes (the caller is on the head), so none took a same-node channel: on one
    # machine the channel's socket would be reachable anyway, and only the node check keeps it honest.
    assert all(actor_info(settings, pool_id)["channel_calls"] == 0 for pool_id in pools)
    # The watchdog revived the pool that Ray gave up on, with nobody calling it.
    assert wait_until(lambda: _ray.lookup_actor(actor_name(settings, idle_pool), namespace) is not None, 30)
    assert client.get_pool(idle_pool).capacity == 5
    # One availability cache replica per alive node: the lost node's is gone, the new node has one.
    expected = {cache_name(node_id) for node_id in alive}
    assert wait_until(lambda: set(_ray.named_actors(namespace, CACHE_PREFIX)) == expected, 30)


def test_a_partitioned_node_is_fenced_and_heals(cluster: LocalCluster, client: CapacityClient) -> None:
    """The raylet of the node hosting a pool is frozen (SIGSTOP): Ray declares the node dead and starts
    the pool's actor elsewhere, while the old actor process lives on: a zombie. Ray 2.60 stops sending
    calls to it once the node is declared dead, so what reaches it late are the calls sent before: the
    zombie is frozen a moment before its raylet, so that calls sent to it are waiting, unhandled, in its
    inbox. Thawed (its node still cut off), it handles them with its stale state and old epoch after the
    new incarnation has written: the journal rejects its writes, and it stops serving."""
    settings = client.settings
    pools = make_pools(client, 4, 100_000)
    stream = ReserveStream(client, pools)
    stream.start()
    try:
        time.sleep(1.5)
        target = pools[0]
        before = actor_info(settings, target)
        node = cluster.worker_of(before["node_id"])
        old_epoch = before["epochs"][target]

        def new_incarnation_writing() -> bool:
            info = try_actor_info(settings, target)
            return info is not None and info["pid"] != before["pid"] and target in info["epochs"]

        with ExitStack() as raylet_thawed_last:
            # Frozen between two writes: frozen inside one it would hold the SQLite journal's write lock,
            # and every pool of the cluster would wait for it (one lock per journal file; on Cassandra the
            # frozen write would simply time out and be settled).
            stream.pause()
            with frozen(before["pid"]):
                zombie_frozen_at = time.monotonic()
                stream.resume()
                # Calls begun now are sent to a frozen process: none of them can have been handled.
                assert wait_until(lambda: stream.last_attempt.get(target, 0.0) > zombie_frozen_at, 30)
                time.sleep(0.5)
                raylet_thawed_last.enter_context(frozen(raylet_pid(node)))
                partitioned_at = time.monotonic()
                assert wait_until(new_incarnation_writing, 90, 0.2), "Ray did not restart the pool elsewhere"
                print(f"\npartition: the pool's new incarnation serves after {time.monotonic() - partitioned_at:.2f} s")
                # Quiet for a moment, so that the zombie's late writes are not stuck behind others' on
                # SQLite's single write lock (it would then answer "unavailable" and write nothing either).
                stream.pause()
            # The zombie runs again, its node still cut off from Ray: its writes are rejected.
            fenced = wait_until(lambda: worker_log_mentions(cluster, before["pid"], FENCED_LOG), 60)
            stream.resume()
            assert fenced, "the old incarnation did not report being fenced"
        # Healed: the frozen raylet learns it was declared dead and exits; clear the node away.
        cluster.remove_worker(node)
        cluster.add_worker()
        time.sleep(1.0)
    finally:
        stream.stop()

    after = actor_info(settings, target)
    assert after["node_id"] != node.node_id and after["epochs"][target] > old_epoch
    epochs = writer_epochs(settings, target)
    # Fenced for real: once the new epoch wrote, nothing of the old one landed after it.
    assert epochs == sorted(epochs) and epochs[-1] > old_epoch
    check_journal(settings, stream, 100_000)
    assert client.reserve(target).remaining == 100_000 - len(stream.acknowledged[target]) - 1


@pytest.mark.cassandra
def test_cassandra_outage_on_many_nodes(
    cluster: LocalCluster, cassandra: LocalCassandra, cassandra_settings: CassandraJournalSettings
) -> None:
    settings = settings_for(multinode_keyspace(cassandra_settings))
    client = CapacityClient(settings)
    settings = client.settings  # as the running service fixed them (the shard count counted)
    pools = make_pools(client, 6, 100_000)
    assert len(pools_by_node(settings, pools)) >= 2
    stream = ReserveStream(client, pools, callers=3)
    try:
        stream.start()
        time.sleep(1.0)
        cassandra.stop()
        stopped_at = time.monotonic()
        time.sleep(4.0)
        cassandra.start()
        stream.mark(time.monotonic())
        healed = wait_until(lambda: set(stream.answered_after_mark) == set(pools), 120, 0.2)
        print(f"\nCassandra back: every pool served again {time.monotonic() - stopped_at - 4.0:.1f} s after restart")
        time.sleep(1.0)
    finally:
        stream.stop()
        cassandra.start()  # for the tests after this one, whatever happened
        client.close()
        kill_namespace(settings.hosting.namespace)

    assert healed, "pools did not serve again by themselves after Cassandra came back"
    during = [f for f in stream.failures if f.at >= stopped_at]
    assert during, "no call failed while Cassandra was down"
    # 503s, and 504s for the appends in flight when Cassandra stopped (settled by repeating them).
    assert {f.kind for f in stream.failures} <= {"unavailable", "outcome_unknown"}
    # Failing fast, structurally: the open circuit breaker answered without waiting on the journal.
    assert any("not trying for a moment" in f.message for f in during)
    print(
        f"during the outage: {len(during)} reserves failed with Unavailable, median "
        f"{statistics.median(f.seconds for f in during) * 1000:.0f} ms, max {max(f.seconds for f in during):.2f} s"
    )
    check_journal(settings, stream, 100_000)


@pytest.mark.cassandra
def test_cassandra_frozen_in_the_middle_of_batches_then_thawed(
    cluster: LocalCluster, cassandra: LocalCassandra, cassandra_settings: CassandraJournalSettings
) -> None:
    """Cassandra stops answering (SIGSTOP) while appends are in flight, past the driver's timeout, and then
    goes on where it stopped: the appends it had half done may land after their writers gave up. Every
    acknowledged reserve is in the journal once, every 504 is settled by its retry, nothing is oversold,
    and every pool serves again by itself."""
    settings = settings_for(multinode_keyspace(cassandra_settings))
    client = CapacityClient(settings)
    settings = client.settings
    capacity = 400
    pools = make_pools(client, 6, capacity)
    stream = ReserveStream(client, pools, callers=4)
    try:
        stream.start()
        time.sleep(1.5)
        cassandra.pause()
        frozen_at = time.monotonic()
        try:
            time.sleep(10.0)  # past request_timeout_s and the reload after it: unknown outcomes, then refusals
        finally:
            cassandra.resume()
        stream.mark(time.monotonic())
        healed = wait_until(lambda: set(stream.answered_after_mark) == set(pools), 120, 0.2)
        print(f"\nCassandra thawed: every pool served again {time.monotonic() - frozen_at - 10.0:.1f} s later")
        time.sleep(1.0)
    finally:
        stream.stop()
        cassandra.resume()
        client.close()
        kill_namespace(settings.hosting.namespace)

    assert healed, "pools did not serve again by themselves after Cassandra was thawed"
    assert any(f.at >= frozen_at for f in stream.failures), "no call failed while Cassandra was frozen"
    assert {f.kind for f in stream.failures} <= {"unavailable", "outcome_unknown"}
    totals = check_journal(settings, stream, capacity)
    assert totals["acknowledged"] > 50


def test_orders_while_their_hosts_are_killed(
    cluster: LocalCluster, journal: SqlJournalSettings | CassandraJournalSettings
) -> None:
    """Two-line orders under load on sharded hosting (orders and pools on the same two shard actors), while
    each shard actor's process is killed -9 in turn (Ray restarts it; the watchdog starts its live orders
    again): every order confirmed has every line taken, every other none, nothing oversold, and every
    answer that settled nothing is settled by repeating the order with its id."""
    sharded = sharded_settings_for(journal)
    capacity = 100  # most orders are taken; the last ones find pools full
    with CapacityClient(sharded) as client:
        try:
            client.start_watchdog()
            pools = make_pools(client, 8, capacity)
            stream = OrderStream(client, pools)
            stream.start()
            try:
                time.sleep(2.0)
                for shard in range(2):
                    handle = _ray.lookup_actor(shard_name(shard), sharded.hosting.namespace)
                    assert handle is not None
                    described = asyncio.run(_ray.ask(handle, call(PoolApi.describe), 30))
                    pid = described["pid"]
                    assert isinstance(pid, int)
                    os.kill(pid, signal.SIGKILL)
                    time.sleep(2.0)
                time.sleep(2.0)
            finally:
                stream.stop()
            stream.settle(90)
            totals = check_orders(sharded, stream, capacity)
        finally:
            kill_namespace(sharded.hosting.namespace)
    print(f"\norders: {totals}; answers: {dict(Counter(stream.answers.values()))}")
    assert totals["confirmed"] > 20


@pytest.mark.cassandra
def test_orders_while_cassandra_is_frozen_then_thawed(
    cluster: LocalCluster, cassandra: LocalCassandra, cassandra_settings: CassandraJournalSettings
) -> None:
    """Two-line orders while Cassandra stops answering (SIGSTOP) past the driver's timeout, then goes on:
    orders and their lines' appends half done may land after their writers gave up, and drivers find their
    steps' outcomes unknown. After the thaw every answer that settled nothing is settled by repeating the
    order, every confirmed order has all its lines, every other none, and nothing is oversold."""
    sharded = sharded_settings_for(multinode_keyspace(cassandra_settings))
    capacity = 100
    with CapacityClient(sharded) as client:
        try:
            client.start_watchdog()
            pools = make_pools(client, 8, capacity)
            stream = OrderStream(client, pools)
            stream.start()
            try:
                time.sleep(1.0)
                cassandra.pause()
                try:
                    time.sleep(5.0)  # past request_timeout_s (2 s): appends of unknown outcome, then refusals
                finally:
                    cassandra.resume()
                time.sleep(2.0)
            finally:
                stream.stop()
                cassandra.resume()
            stream.settle(120)
            totals = check_orders(sharded, stream, capacity)
        finally:
            kill_namespace(sharded.hosting.namespace)
    print(f"\norders: {totals}; answers before settling: {dict(Counter(stream.first_answers.values()))}")
    assert any(answer not in SETTLED for answer in stream.first_answers.values()), "nothing failed"
    assert totals["confirmed"] > 10
