"""The write side on a real local Ray: pool actors with the SQLite and the Cassandra journal, in both
hosting modes (an actor per pool, pools sharded over a few actors)."""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy
from cassandra.cluster import Cluster

from capacity_service.adapters.codec import Codec
from capacity_service.adapters.journal import open_journal
from capacity_service.application.hosting import HostFenced
from capacity_service.application.recovery import recover_pool
from capacity_service.client import CapacityClient
from capacity_service.domain import PoolState, Reserve, new_reservation_id
from capacity_service.errors import InsufficientCapacity, PoolNotFound, ReservationNotFound
from capacity_service.runtime import _ray
from capacity_service.runtime._ray import kill_namespace
from capacity_service.runtime.actor_api import PoolApi, call
from capacity_service.runtime.pool_actor import PoolActor
from capacity_service.runtime.router import actor_name
from capacity_service.settings import (
    CassandraJournalSettings,
    HostingMode,
    HostingSettings,
    ServiceSettings,
    SqlJournalSettings,
    WarehouseSettings,
    WebhookSettings,
)
from tests.support.history import History, check, events_in, holds_ended

pytestmark = pytest.mark.usefixtures("ray_session")


@pytest.fixture(params=["sqlite", "cassandra"])
def journal_settings(
    request: pytest.FixtureRequest,
) -> Iterator[SqlJournalSettings | CassandraJournalSettings]:
    if request.param == "cassandra":
        # A keyspace of its own: the watchdog recovers every registered pool, so no foreign streams.
        base: CassandraJournalSettings = request.getfixturevalue("cassandra_settings")
        yield base.model_copy(update={"keyspace": "pool_actors"})
        return
    with tempfile.TemporaryDirectory(prefix="pool-actors-") as tmp:
        yield SqlJournalSettings(url=f"sqlite:///{Path(tmp) / 'journal.db'}")


@pytest.fixture(params=["actor_per_pool", "sharded"])
def settings(
    request: pytest.FixtureRequest, journal_settings: SqlJournalSettings | CassandraJournalSettings
) -> Iterator[ServiceSettings]:
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    hosting = HostingSettings(mode=request.param, shards=2, namespace=namespace, call_timeout_s=20)
    # The warehouse stream is tested on its own (test_warehouse_stream.py).
    # Webhooks likewise (test_webhooks*.py): neither costs every test here an actor process more.
    yield ServiceSettings(
        journal=journal_settings,
        hosting=hosting,
        warehouse=WarehouseSettings(enabled=False),
        webhooks=WebhookSettings(enabled=False),
    )
    kill_namespace(namespace)


# Waitlists and extended holds are the pool writer's (the same under either hosting, whose own recovery the
# tests above run on both): they run on the default hosting only, which keeps the suite within its time.
ON_THE_DEFAULT_HOSTING = pytest.mark.parametrize("settings", ["sharded"], indirect=True)


@pytest.fixture
def client(settings: ServiceSettings) -> Iterator[CapacityClient]:
    with CapacityClient(settings) as client:
        yield client


def journal_state(settings: ServiceSettings, pool_id: str) -> PoolState:
    with open_journal(settings.journal) as journal:
        return recover_pool(journal, Codec(), pool_id).state


def described(settings: ServiceSettings, pool_id: str) -> dict[str, object]:
    handle = _ray.lookup_actor(actor_name(settings, pool_id), settings.hosting.namespace)
    assert handle is not None
    answer: dict[str, object] = asyncio.run(_ray.ask(handle, call(PoolApi.describe), 30))
    return answer


def actor_pid(settings: ServiceSettings, pool_id: str) -> int:
    return int(str(described(settings, pool_id)["pid"]))


def new_pool(client: CapacityClient, capacity: int) -> str:
    pool_id = f"pool-{uuid.uuid4().hex[:10]}"
    client.configure_pool(pool_id, capacity, "north")
    return pool_id


def test_200_concurrent_reserves_on_capacity_50_exactly_50_succeed(
    client: CapacityClient, settings: ServiceSettings
) -> None:
    pool_id = new_pool(client, 50)
    results: list[str] = []

    def reserve() -> None:
        try:
            results.append(client.reserve(pool_id).reservation_id)
        except InsufficientCapacity:
            results.append("full")

    threads = [threading.Thread(target=reserve) for _ in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    accepted = {r for r in results if r != "full"}
    assert len(results) == 200 and len(accepted) == 50
    state = journal_state(settings, pool_id)
    assert set(state.reservations) == accepted
    assert state.reserved == 50
    pool = client.get_pool(pool_id)
    assert (pool.reserved, pool.remaining, pool.version) == (50, 0, 51)
    # The commands came over the same-node channel, not Ray's RPC (one call carries a batch of them).
    assert int(str(described(settings, pool_id)["channel_calls"])) > 0


def test_with_the_same_node_channel_off_commands_go_through_ray() -> None:
    with tempfile.TemporaryDirectory(prefix="pool-actors-") as tmp:
        namespace = f"test-{uuid.uuid4().hex[:8]}"
        settings = ServiceSettings(
            journal=SqlJournalSettings(url=f"sqlite:///{Path(tmp) / 'journal.db'}"),
            hosting=HostingSettings(namespace=namespace, call_timeout_s=20, same_node_channel=False),
            warehouse=WarehouseSettings(enabled=False),
        )
        try:
            with CapacityClient(settings) as client:
                pool_id = new_pool(client, 5)
                assert client.reserve(pool_id, 2).remaining == 3
                assert described(client.settings, pool_id)["channel_calls"] == 0
        finally:
            kill_namespace(namespace)


def settle(history: History, client: CapacityClient) -> None:
    """Repeat every reserve whose outcome is unknown, with its request id, until the pool decides it."""
    for _ in range(20):
        unsettled = history.unsettled()
        if not unsettled:
            return
        for op in unsettled:
            history.reserve(client, op.pool_id, op.quantity, str(op.request_id))
    raise AssertionError(f"still unsettled: {history.unsettled()}")


def test_kill_9_during_a_stream_of_reserves_loses_nothing_acknowledged(
    client: CapacityClient, settings: ServiceSettings
) -> None:
    pool_id = new_pool(client, 10_000)
    history = History()
    stop = threading.Event()

    def stream(worker: int) -> None:
        n = 0
        while not stop.is_set():
            history.reserve(client, pool_id, 1, f"w{worker}-{n}")
            n += 1

    workers = [threading.Thread(target=stream, args=(w,)) for w in range(4)]
    for w in workers:
        w.start()
    time.sleep(1.0)
    pid_before = actor_pid(settings, pool_id)
    os.kill(pid_before, signal.SIGKILL)
    time.sleep(2.0)
    stop.set()
    for w in workers:
        w.join(timeout=120)
    assert actor_pid(settings, pool_id) != pid_before  # Ray restarted it
    settle(history, client)
    events = events_in(settings.journal, [pool_id])
    assert check(history, events) == []
    acknowledged = [op for op in history.operations if op.outcome == "ok"]
    assert len(acknowledged) > 10
    # and the restarted actor serves, from the recovered state
    taken = sum(1 for e in events[pool_id] if e["type"] == "CapacityReserved")
    assert client.get_pool(pool_id).reserved == taken
    assert client.reserve(pool_id).remaining == 10_000 - taken - 1


@pytest.mark.parametrize("ids", ["client_request_ids", "service_made_ids"])
def test_a_host_paused_past_the_deadline_takes_nothing_it_was_not_asked_again_for(
    settings: ServiceSettings, ids: str
) -> None:
    """The pool's host is paused (SIGSTOP) while reserves wait for it, past their deadline, then resumed.
    The answers say 503 (nothing taken) or 504 (unknown), never a silent take: once it resumes, the late
    commands are not decided, and repeating the 504s with their request ids (the caller's, or the ones the
    service made and named in its answers) takes each at most once."""
    quick = settings.model_copy(
        update={"hosting": settings.hosting.model_copy(update={"call_timeout_s": 5.0, "answer_grace_s": 1.0})}
    )
    with CapacityClient(quick) as client:
        pool_id = new_pool(client, 100)
        history = History()
        history.reserve(client, pool_id, 1, "before")
        pid = actor_pid(quick, pool_id)
        os.kill(pid, signal.SIGSTOP)
        try:
            paused = [
                threading.Thread(
                    target=history.reserve,
                    args=(client, pool_id, 10, f"paused-{k}" if ids == "client_request_ids" else None),
                )
                for k in range(5)
            ]
            for thread in paused:
                thread.start()
            every_deadline_passed = time.time() + quick.hosting.call_timeout_s + 0.5
            for thread in paused:
                thread.join(timeout=60)
            # Paused past every deadline, whenever the callers got their answers.
            time.sleep(max(0.0, every_deadline_passed - time.time()))
        finally:
            os.kill(pid, signal.SIGCONT)
        during = [op for op in history.operations if op.request_id != "before"]
        assert len(during) == 5 and all(op.code in ("unavailable", "outcome_unknown") for op in during), during
        time.sleep(1.0)  # the resumed host works through what waited for it: late, so not decided
        assert client.get_pool(pool_id).reserved == 1
        settle(history, client)
        assert check(history, events_in(quick.journal, [pool_id])) == []
        assert client.get_pool(pool_id).reserved == 1 + 10 * sum(
            1 for op in history.operations if op.outcome == "ok" and op.request_id != "before"
        )


def test_holds_that_expire_while_their_host_is_down_expire_once_at_recovery(
    client: CapacityClient, settings: ServiceSettings
) -> None:
    """Holds whose host is frozen past their expiry and then killed -9: the next incarnation expires each
    of them once, at recovery; confirmed ones stay; a late confirm is 409 hold_expired; the history
    checker agrees with the journal."""
    pool_id = new_pool(client, 10)
    history = History()
    holds = [history.reserve(client, pool_id, 1, f"hold-{k}", hold_seconds=2) for k in range(6)]
    assert all(op.outcome == "ok" for op in holds), holds
    for op in holds[:2]:
        history.confirm(client, pool_id, str(op.reservation_id))
    pid = actor_pid(settings, pool_id)
    os.kill(pid, signal.SIGSTOP)  # down from before the expiry until after it...
    time.sleep(3.0)
    os.kill(pid, signal.SIGKILL)  # ...and then gone: Ray starts a new incarnation
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if client.get_pool(pool_id).reserved == 2:
                break
        except Exception:  # restarting
            pass
        time.sleep(0.2)
    assert client.get_pool(pool_id).reserved == 2
    assert actor_pid(settings, pool_id) != pid
    history.confirm(client, pool_id, str(holds[-1].reservation_id))
    assert history.operations[-1].code == "hold_expired"
    events = events_in(settings.journal, [pool_id])
    assert check(history, events, now=datetime.now(UTC)) == []
    assert holds_ended(events[pool_id]) == {"HoldConfirmed": 2, "HoldExpired": 4}


def wait_for_reserved(client: CapacityClient, pool_id: str, reserved: int) -> None:
    """Until the pool (restarting, perhaps) shows ``reserved`` units taken, for at most a minute."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if client.get_pool(pool_id).reserved == reserved:
                return
        except Exception:  # restarting
            pass
        time.sleep(0.2)
    assert client.get_pool(pool_id).reserved == reserved


@ON_THE_DEFAULT_HOSTING
def test_waitlist_offers_due_while_their_host_is_down_are_made_once_at_recovery_in_order(
    client: CapacityClient, settings: ServiceSettings
) -> None:
    """A full pool with a waitlist (a large entry first, small ones behind it); its holds expire while its
    host is frozen and then killed -9. The next incarnation expires them and offers the freed units once, in
    order (the large entry fits the two freed units); a release then offers the next entry; another kill -9
    offers nothing again. The history checker agrees with the journal (offers once, in order, never
    oversold)."""
    pool_id = new_pool(client, 3)
    history = History()
    holds = [history.reserve(client, pool_id, 1, f"hold-{k}", hold_seconds=2) for k in range(3)]
    assert all(op.outcome == "ok" for op in holds), holds
    history.confirm(client, pool_id, str(holds[0].reservation_id))
    joins = [history.join(client, pool_id, 2, "large", 60)]
    joins += [history.join(client, pool_id, 1, f"small-{k}", 60) for k in range(3)]
    assert all(op.outcome == "ok" for op in joins), joins
    large, first, second, third = (str(op.entry_id) for op in joins)
    assert [client.get_waitlist_entry(pool_id, e).position for e in (large, first, second, third)] == [1, 2, 3, 4]

    pid = actor_pid(settings, pool_id)
    os.kill(pid, signal.SIGSTOP)  # down from before the holds expire until after...
    time.sleep(3.0)
    os.kill(pid, signal.SIGKILL)  # ...and then gone: the offers are due when the next incarnation recovers
    wait_for_reserved(client, pool_id, 3)  # 1 confirmed + 2 offered to the large entry
    assert actor_pid(settings, pool_id) != pid
    offered = client.get_waitlist_entry(pool_id, large)
    assert offered.status == "offered" and offered.reservation_status == "held" and offered.reservation_id
    assert [client.get_waitlist_entry(pool_id, e).position for e in (first, second, third)] == [1, 2, 3]

    client.release(str(holds[0].reservation_id))  # one unit: to the first small entry
    assert client.get_waitlist_entry(pool_id, first).status == "offered"
    history.leave(client, pool_id, third)
    client.confirm(str(offered.reservation_id))

    pid = actor_pid(settings, pool_id)
    os.kill(pid, signal.SIGKILL)  # a restart replays the offers: none is made again
    wait_for_reserved(client, pool_id, 3)
    places = [client.get_waitlist_entry(pool_id, e) for e in (large, first, second, third)]
    assert [p.status for p in places] == ["offered", "offered", "waiting", "left"]
    assert places[0].reservation_status == "active" and places[2].position == 1
    events = events_in(settings.journal, [pool_id])
    assert [e["entry_id"] for e in events[pool_id] if e["type"] == "WaitlistOffered"] == [large, first]
    assert check(history, events, now=datetime.now(UTC)) == []


@ON_THE_DEFAULT_HOSTING
def test_a_waitlist_under_concurrent_joins_and_holds_with_a_kill_9_offers_each_entry_once_in_order(
    client: CapacityClient, settings: ServiceSettings
) -> None:
    """Workers hold units for a second and join the waitlist at once (up to its limit), on a pool far too
    small, while its host is killed -9. Every hold (the offered ones too) lapses after a second, so the waitlist drains
    through offers; once it is empty the history checker holds the answers against the journal: every
    acknowledged join there once, each entry offered once, in order, never oversold."""
    pool_id = new_pool(client, 4)
    client.configure_pool(pool_id, 4, "north", waitlist_limit=20)  # joins beyond are 409 waitlist_full
    history = History()
    stop = threading.Event()

    def work(worker: int) -> None:
        n = 0
        while not stop.is_set():
            history.reserve(client, pool_id, 1, f"h{worker}-{n}", hold_seconds=1)
            history.join(client, pool_id, 1 + (n % 2), f"j{worker}-{n}", 1)
            n += 1

    workers = [threading.Thread(target=work, args=(w,)) for w in range(3)]
    for w in workers:
        w.start()
    time.sleep(1.5)
    os.kill(actor_pid(settings, pool_id), signal.SIGKILL)
    time.sleep(2.0)
    stop.set()
    for w in workers:
        w.join(timeout=120)
    settle(history, client)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # each offer lapses in a second and goes to the next entry
        try:
            pool = client.get_pool(pool_id)
            if pool.waiting == 0 and pool.reserved == 0:
                break
        except Exception:  # restarting
            pass
        time.sleep(0.5)
    assert (client.get_pool(pool_id).waiting, client.get_pool(pool_id).reserved) == (0, 0)
    events = events_in(settings.journal, [pool_id])
    assert check(history, events, now=datetime.now(UTC)) == []
    joined = [op for op in history.operations if op.kind == "join" and op.outcome == "ok"]
    offered = [e for e in events[pool_id] if e["type"] == "WaitlistOffered"]
    assert len(joined) > 5 and len(offered) == len({e["entry_id"] for e in offered}) >= len(joined)
    assert any(op.code == "waitlist_full" for op in history.operations)


@ON_THE_DEFAULT_HOSTING
def test_an_extended_hold_expires_at_its_new_time_across_a_restart(
    client: CapacityClient, settings: ServiceSettings
) -> None:
    pool_id = new_pool(client, 1)
    receipt = client.reserve(pool_id, hold_seconds=2)
    extended = client.extend_hold(receipt.reservation_id, 6)
    assert extended.expires_at is not None and receipt.expires_at is not None
    assert extended.expires_at > receipt.expires_at
    os.kill(actor_pid(settings, pool_id), signal.SIGKILL)
    time.sleep(3.0)  # past the first expiry: the recovered pool keeps the extended one
    assert client.get_reservation(receipt.reservation_id).status == "held"
    wait_for_reserved(client, pool_id, 0)
    assert client.get_reservation(receipt.reservation_id).status == "expired"
    assert holds_ended(events_in(settings.journal, [pool_id])[pool_id]) == {"HoldConfirmed": 0, "HoldExpired": 1}


def test_a_stale_incarnation_is_fenced_and_stops(client: CapacityClient, settings: ServiceSettings) -> None:
    pool_id = new_pool(client, 10)
    namespace = settings.hosting.namespace
    # The zombie: a second incarnation of the pool that claimed its epoch before the current one.
    zombie = _ray.ensure_actor(PoolActor, f"zombie:{pool_id}", namespace, (settings,), {})
    assert isinstance(asyncio.run(_ray.ask(zombie, call(PoolApi.ensure_started, pool_id), 60)), int)
    canonical = _ray.lookup_actor(actor_name(settings, pool_id), namespace)
    assert canonical is not None
    asyncio.run(_ray.ask(canonical, call(PoolApi.describe), 30))
    _ray.kill_actor(canonical, restart=True)  # the current one restarts and claims a newer epoch
    client.reserve(pool_id, 2)

    rid = new_reservation_id(pool_id)
    answer = asyncio.run(_ray.ask(zombie, call(PoolApi.execute, pool_id, Reserve(5, rid, rid)), 60))
    assert isinstance(answer, HostFenced)
    again = asyncio.run(_ray.ask(zombie, call(PoolApi.view, pool_id), 60))
    assert isinstance(again, HostFenced)  # it stopped serving altogether
    assert client.reserve(pool_id, 3).remaining == 5
    state = journal_state(settings, pool_id)
    assert state.reserved == 5 and rid not in state.reservations


def test_a_request_id_takes_capacity_once_also_across_a_restart(
    client: CapacityClient, settings: ServiceSettings
) -> None:
    pool_id = new_pool(client, 10)
    receipts = []
    threads = [
        threading.Thread(target=lambda: receipts.append(client.reserve(pool_id, 3, request_id="order-7")))
        for _ in range(20)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len({r.reservation_id for r in receipts}) == 1
    handle = _ray.lookup_actor(actor_name(settings, pool_id), settings.hosting.namespace)
    assert handle is not None
    _ray.kill_actor(handle, restart=True)
    after = client.reserve(pool_id, 3, request_id="order-7")
    assert after.reservation_id == receipts[0].reservation_id
    assert client.get_pool(pool_id).reserved == 3
    assert journal_state(settings, pool_id).reserved == 3


def test_watchdog_sweep_revives_every_registered_pool(client: CapacityClient, settings: ServiceSettings) -> None:
    pools = [new_pool(client, 5) for _ in range(3)]
    for pool_id in pools:
        handle = _ray.lookup_actor(actor_name(settings, pool_id), settings.hosting.namespace)
        if handle is not None:
            _ray.kill_actor(handle, restart=False)  # gone for good, as if Ray had given up on it
    report = client.sweep()
    assert report.healthy and report.alive >= len(pools)
    for pool_id in pools:
        assert _ray.lookup_actor(actor_name(settings, pool_id), settings.hosting.namespace) is not None
        assert client.get_pool(pool_id).capacity == 5


def journal_rows(settings: SqlJournalSettings | CassandraJournalSettings) -> dict[str, int]:
    """Rows per table of the journal's store, read with the store's own driver (not the adapter's code)."""
    if isinstance(settings, SqlJournalSettings):
        engine = sqlalchemy.create_engine(settings.url)
        try:
            with engine.connect() as conn:
                tables = sqlalchemy.inspect(conn).get_table_names()
                return {t: conn.execute(sqlalchemy.text(f'SELECT count(*) FROM "{t}"')).scalar_one() for t in tables}
        finally:
            engine.dispose()
    cluster = Cluster(settings.contact_points, port=settings.port, protocol_version=settings.protocol_version)
    try:
        session = cluster.connect()
        rows = session.execute(  # Cassandra 2.1's schema table (system_schema.tables from 3.0 on)
            "SELECT columnfamily_name FROM system.schema_columnfamilies WHERE keyspace_name = %s", [settings.keyspace]
        )
        tables = [r.columnfamily_name for r in rows]
        return {t: session.execute(f"SELECT count(*) FROM {settings.keyspace}.{t}").one()[0] for t in tables}
    finally:
        cluster.shutdown()


@pytest.mark.parametrize("mode", ["actor_per_pool", "sharded"])
@pytest.mark.parametrize("store", ["sqlite", "postgres", "cassandra"])
def test_requests_for_unknown_ids_start_no_actor_and_write_nothing(
    request: pytest.FixtureRequest, store: str, mode: HostingMode, tmp_path: Path
) -> None:
    """200 requests naming pools that were never configured, or forged reservation ids: every one a
    not-found, and afterwards the same actors run and the journal holds the same rows."""
    journal: SqlJournalSettings | CassandraJournalSettings
    if store == "sqlite":
        journal = SqlJournalSettings(url=f"sqlite:///{tmp_path / 'journal.db'}")
    elif store == "postgres":
        journal = request.getfixturevalue("postgres_settings")
    else:
        base: CassandraJournalSettings = request.getfixturevalue("cassandra_settings")
        journal = base.model_copy(update={"keyspace": "unknown_ids"})
    namespace = f"ghosts-{uuid.uuid4().hex[:8]}"
    settings = ServiceSettings(
        journal=journal,
        hosting=HostingSettings(mode=mode, shards=2, namespace=namespace, call_timeout_s=20),
        warehouse=WarehouseSettings(enabled=False),
    )
    try:
        with CapacityClient(settings) as client:
            real = new_pool(client, 5)
            client.reserve(real, 1)
            actors, rows = _ray.named_actors(namespace, ""), journal_rows(journal)
            for i in range(50):
                ghost = f"ghost-{uuid.uuid4().hex[:8]}-{i}"
                with pytest.raises(PoolNotFound):
                    client.get_pool(ghost)
                with pytest.raises(PoolNotFound):
                    client.reserve(ghost, 1)
                with pytest.raises(ReservationNotFound):
                    client.release(new_reservation_id(ghost))
                with pytest.raises(ReservationNotFound):
                    client.get_reservation(new_reservation_id(real if i % 2 else ghost))
            assert _ray.named_actors(namespace, "") == actors
            assert journal_rows(journal) == rows
            assert client.get_pool(real).reserved == 1
    finally:
        kill_namespace(namespace)
