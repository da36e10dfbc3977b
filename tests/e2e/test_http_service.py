"""The HTTP contract over real HTTP, on Ray Serve on a local Ray, with the SQLite and the Cassandra
journal: status codes and bodies, bad input, concurrency, the availability cache, restarts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from capacity_service.adapters.journal import open_journal
from capacity_service.adapters.warehouse.parquet import ParquetSink
from capacity_service.client import AsyncCapacityClient, CapacityClient, SlotChoice
from capacity_service.errors import PoolRetired
from capacity_service.runtime import _ray
from capacity_service.runtime._ray import kill_namespace
from capacity_service.runtime.actor_api import CacheApi, call
from capacity_service.runtime.names import CACHE_PREFIX
from capacity_service.settings import CassandraJournalSettings, ParquetSinkSettings, SqlJournalSettings
from devenv._process import free_port
from tests.support.history import journal_events

pytestmark = pytest.mark.usefixtures("ray_session")


class Service:
    """One deployment of the app on Serve, reachable at ``url``."""

    def __init__(self, args: dict[str, Any], port: int) -> None:
        self.args, self.port = args, port
        self.url = f"http://127.0.0.1:{port}"
        self.namespace = args["hosting"]["namespace"]

    def deploy(self) -> None:
        from ray import serve

        from capacity_service.entrypoints.http.deployment import build_app

        serve.start(http_options={"host": "127.0.0.1", "port": self.port})
        serve.run(build_app(self.args), name="capacity", route_prefix="/")
        wait_until(lambda: httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200, 90, "service ready")

    def undeploy(self) -> None:
        from ray import serve

        shutdown: Callable[[], None] = serve.shutdown  # Ray leaves it unannotated
        shutdown()
        kill_namespace(self.namespace)


def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout} s (last error: {last})")


@pytest.fixture(scope="module", params=["sqlite", "cassandra"])
def service(request: pytest.FixtureRequest) -> Iterator[Service]:
    namespace = f"e2e-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="e2e-") as tmp:
        if request.param == "cassandra":
            base: CassandraJournalSettings = request.getfixturevalue("cassandra_settings")
            journal = base.model_copy(update={"keyspace": "e2e_http"}).model_dump(mode="json")
        else:
            journal = {"kind": "sql", "url": f"sqlite:///{Path(tmp) / 'capacity.db'}"}
        args = {
            "journal": journal,
            "hosting": {"namespace": namespace, "mode": "sharded", "shards": 2, "call_timeout_s": 20},
            "read_side": {"anti_entropy_interval_s": 1.0},
            "warehouse": {"sink": {"kind": "parquet", "path": str(Path(tmp) / "warehouse")}},
        }
        service = Service(args, free_port())
        service.deploy()
        try:
            yield service
        finally:
            service.undeploy()


@pytest.fixture
def http(service: Service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=30) as client:
        yield client


def new_pool(http: httpx.Client, capacity: int, zone: str = "north", **extra: Any) -> str:
    pool_id = f"p-{uuid.uuid4().hex[:10]}"
    response = http.put(f"/v1/pools/{pool_id}", json={"capacity": capacity, "zone": zone, **extra})
    assert response.status_code == 201, response.text
    return pool_id


def test_contract_round_trip(http: httpx.Client) -> None:
    pool_id = new_pool(http, 3, slot_start="2026-12-01T08:00:00Z", slot_end="2026-12-01T10:00:00Z")
    assert http.put(f"/v1/pools/{pool_id}", json={"capacity": 3, "zone": "north"}).status_code == 200
    assert http.get(f"/v1/pools/{pool_id}").json()["remaining"] == 3
    missing = http.get("/v1/pools/does-not-exist")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "pool_not_found"
    reserved = http.post("/v1/reservations", json={"pool_id": pool_id, "quantity": 2, "request_id": "r-1"})
    assert reserved.status_code == 201
    rid = reserved.json()["reservation_id"]
    again = http.post("/v1/reservations", json={"pool_id": pool_id, "quantity": 2, "request_id": "r-1"})
    assert again.status_code == 201 and again.json()["reservation_id"] == rid
    full = http.post("/v1/reservations", json={"pool_id": pool_id, "quantity": 2})
    assert full.status_code == 409 and full.json()["error"]["code"] == "insufficient_capacity"
    assert http.get(f"/v1/reservations/{rid}").json()["status"] == "active"
    assert http.delete(f"/v1/reservations/{rid}").status_code == 200
    assert http.delete(f"/v1/reservations/{rid}").json()["status"] == "released"
    assert http.get(f"/v1/reservations/{rid}").json()["status"] == "released"
    gone = http.delete("/v1/reservations/not-a-reservation")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "reservation_not_found"
    assert http.get("/healthz").status_code == 200
    assert "/v1/availability" in http.get("/openapi.json").json()["paths"]


def test_holds_over_http(http: httpx.Client) -> None:
    """A checkout: one hold confirmed in time, one left to expire, its units back on sale by themselves."""
    pool_id = new_pool(http, 3)
    kept = http.post("/v1/reservations", json={"pool_id": pool_id, "quantity": 2, "hold_seconds": 600})
    left = http.post("/v1/reservations", json={"pool_id": pool_id, "quantity": 1, "hold_seconds": 1})
    assert (kept.status_code, left.status_code) == (201, 201), (kept.text, left.text)
    assert kept.json()["status"] == "held" and kept.json()["expires_at"]
    assert left.json()["remaining"] == 0  # held units are taken
    full = http.post("/v1/reservations", json={"pool_id": pool_id})
    assert full.status_code == 409 and full.json()["error"]["code"] == "insufficient_capacity"
    confirmed = http.post(f"/v1/reservations/{kept.json()['reservation_id']}/confirm")
    assert confirmed.status_code == 200 and confirmed.json()["status"] == "active"
    deadline = time.monotonic() + 10
    while http.get(f"/v1/pools/{pool_id}").json()["remaining"] != 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert http.get(f"/v1/pools/{pool_id}").json()["remaining"] == 1  # the hold expired by itself
    left_id = left.json()["reservation_id"]
    assert http.get(f"/v1/reservations/{left_id}").json()["status"] == "expired"
    late = http.post(f"/v1/reservations/{left_id}/confirm")
    assert late.status_code == 409 and late.json()["error"]["code"] == "hold_expired"
    bad = http.post("/v1/reservations", json={"pool_id": pool_id, "hold_seconds": 0})
    assert bad.status_code == 422


@pytest.mark.parametrize(
    "body",
    [b'{"pool_id": ', b'{"pool_id": 5}', b'{"pool_id": "x", "quantity": -1}', b'{"pool_id": "x", "zzz": 1}'],
)
def test_bad_input_over_http_is_422_with_the_error_body(http: httpx.Client, body: bytes) -> None:
    response = http.post("/v1/reservations", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"


def test_oversized_body_is_413(http: httpx.Client) -> None:
    response = http.post(
        "/v1/availability", content=b'{"zone": "' + b"x" * 100_000 + b'"}', headers={"content-type": "application/json"}
    )
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"


def test_100_concurrent_reserves_on_capacity_20(http: httpx.Client, service: Service) -> None:
    pool_id = new_pool(http, 20)

    def reserve(_: int) -> int:
        with httpx.Client(base_url=service.url, timeout=60) as client:
            return client.post("/v1/reservations", json={"pool_id": pool_id}).status_code

    with ThreadPoolExecutor(max_workers=32) as pool:
        codes = list(pool.map(reserve, range(100)))
    assert codes.count(201) == 20 and codes.count(409) == 80, sorted(set(codes))
    assert http.get(f"/v1/pools/{pool_id}").json()["reserved"] == 20


def availability(http: httpx.Client, zone: str, **query: Any) -> dict[str, int]:
    response = http.post("/v1/availability", json={"zone": zone, **query})
    assert response.status_code == 200, response.text
    return {p["pool_id"]: p["remaining"] for p in response.json()["pools"]}


def test_availability_reflects_a_reserve_within_the_anti_entropy_bound(http: httpx.Client) -> None:
    zone = f"z-{uuid.uuid4().hex[:6]}"
    pools = [new_pool(http, 5, zone) for _ in range(3)]
    wait_until(lambda: availability(http, zone) == dict.fromkeys(pools, 5), 5, "new pools visible")
    http.post("/v1/reservations", json={"pool_id": pools[0], "quantity": 5})
    wait_until(lambda: availability(http, zone) == {pools[1]: 5, pools[2]: 5}, 5, "drained pool hidden")
    assert availability(http, zone, quantity=6) == {}


def test_a_chosen_reserve_takes_a_pool_with_room_names_it_and_repeats_as_it_was(http: httpx.Client) -> None:
    zone = f"z-{uuid.uuid4().hex[:6]}"
    early = new_pool(http, 1, zone, slot_start="2026-12-01T08:00:00Z", slot_end="2026-12-01T10:00:00Z")
    late = new_pool(http, 2, zone, slot_start="2026-12-01T10:00:00Z", slot_end="2026-12-01T12:00:00Z")
    wait_until(lambda: availability(http, zone) == {early: 1, late: 2}, 5, "new pools visible")
    assert http.post("/v1/reservations", json={"pool_id": early}).status_code == 201  # the cache may lag it
    body = {"choose": {"zone": zone, "from": "2026-12-01T09:00:00Z"}, "request_id": f"c-{uuid.uuid4().hex}"}
    taken = http.post("/v1/reservations", json=body)
    assert taken.status_code == 201 and (taken.json()["pool_id"], taken.json()["remaining"]) == (late, 1), taken.text
    again = http.post("/v1/reservations", json=body)
    assert again.status_code == 201 and again.json()["reservation_id"] == taken.json()["reservation_id"]
    none_left = http.post("/v1/reservations", json={"choose": {"zone": zone, "quantity": 2}})
    assert none_left.status_code == 409 and none_left.json()["error"]["code"] == "no_capacity_in_window"
    assert [http.get(f"/v1/pools/{p}").json()["reserved"] for p in (early, late)] == [1, 1]


def test_the_python_client_gives_the_http_operations_with_the_same_answers(
    http: httpx.Client, service: Service
) -> None:
    """The client attached to the running service: availability (from the same cache replicas) and holds
    included, agreeing with what HTTP answers."""
    zone = f"z-{uuid.uuid4().hex[:6]}"
    with CapacityClient(namespace=service.namespace) as client:
        pool_id = f"p-{uuid.uuid4().hex[:10]}"
        client.configure_pool(pool_id, 3, zone)
        wait_until(lambda: [p.pool_id for p in client.availability(zone)] == [pool_id], 5, "the pool in availability")
        assert availability(http, zone) == {p.pool_id: p.remaining for p in client.availability(zone)}
        receipt = client.reserve(pool_id, 2, hold_seconds=600)
        assert (receipt.status, receipt.remaining) == ("held", 1) and receipt.expires_at is not None
        assert http.get(f"/v1/reservations/{receipt.reservation_id}").json()["status"] == "held"
        assert client.confirm(receipt.reservation_id).status == "active"
        wait_until(lambda: client.availability(zone, quantity=2) == [], 5, "the pool leaves availability for 2")
        assert client.get_pool(pool_id).model_dump(mode="json") == http.get(f"/v1/pools/{pool_id}").json()
        client.release(receipt.reservation_id)
        assert client.get_reservation(receipt.reservation_id).status == "released"
        request_id = f"c-{uuid.uuid4().hex}"
        chosen = client.reserve_chosen(SlotChoice(zone), request_id)
        assert chosen.pool_id == pool_id
        assert client.reserve_chosen(SlotChoice(zone), request_id).reservation_id == chosen.reservation_id


def test_a_killed_cache_replica_comes_back_complete(http: httpx.Client, service: Service) -> None:
    zone = f"z-{uuid.uuid4().hex[:6]}"
    pools = [new_pool(http, 4, zone) for _ in range(5)]
    wait_until(lambda: len(availability(http, zone)) == 5, 5, "pools visible")
    [name] = _ray.named_actors(service.namespace, CACHE_PREFIX)
    handle = _ray.lookup_actor(name, service.namespace)
    assert handle is not None
    pid = asyncio.run(_ray.ask(handle, call(CacheApi.status), 10))["pid"]
    assert isinstance(pid, int)  # status() is typed as a dict of objects
    os.kill(pid, signal.SIGKILL)
    # Serve replicas answer from their mirror meanwhile; the replica itself must come back complete.
    assert availability(http, zone) == dict.fromkeys(pools, 4)

    def replica_back_complete() -> bool:
        status = asyncio.run(_ray.ask(handle, call(CacheApi.status), 10))
        return bool(status["pid"] != pid and status["ready"] and cast(int, status["pools"]) >= len(pools))

    wait_until(replica_back_complete, 30, "replica back with every pool")
    found = asyncio.run(_ray.ask(handle, call(CacheApi.query, zone, None, None, 1), 10))
    assert {v.pool_id: v.remaining for v in found} == dict.fromkeys(pools, 4)


def test_a_mirror_waiting_on_a_quiet_cache_replica_is_answered_by_the_next_change(
    http: httpx.Client, service: Service
) -> None:
    """How Serve replicas follow their cache replica: a pull with nothing new waits (a long poll), and
    the next change answers it at once."""
    [name] = _ray.named_actors(service.namespace, CACHE_PREFIX)
    handle = _ray.lookup_actor(name, service.namespace)
    assert handle is not None

    async def scenario() -> None:
        incarnation, change_nr, _, ready = await _ray.ask(handle, call(CacheApi.changes_since, "", 0), 10)
        assert ready
        while True:  # until the pushes of earlier writes have all arrived
            answer = await _ray.ask(handle, call(CacheApi.changes_since, incarnation, change_nr, 0.3), 10)
            if not answer[2]:
                break
            change_nr = answer[1]
        assert answer == (incarnation, change_nr, [], True)  # nothing new when the wait ends
        waiting = asyncio.ensure_future(
            _ray.ask(handle, call(CacheApi.changes_since, incarnation, change_nr, 120.0), 130)
        )
        pool_id = await asyncio.to_thread(new_pool, http, 3)
        # Answered by a change, not by the end of its wait (the test gives up long before that); a stray
        # change of another pool may come first.
        while True:
            _, change_nr, views, _ = await asyncio.wait_for(waiting, 60)
            if pool_id in {view.pool_id for view in views}:
                break
            waiting = asyncio.ensure_future(
                _ray.ask(handle, call(CacheApi.changes_since, incarnation, change_nr, 120.0), 130)
            )

    asyncio.run(scenario())


def test_the_service_restarted_on_the_same_journal_has_everything(http: httpx.Client, service: Service) -> None:
    """Pools and reservations, and a schedule put just before the service went down: its apply, cut off or
    not, goes on after the restart until every pool of its template is there."""
    pool_id = new_pool(http, 10)
    rid = http.post("/v1/reservations", json={"pool_id": pool_id, "quantity": 3}).json()["reservation_id"]
    schedule_id = f"restart-{uuid.uuid4().hex[:8]}"
    zones = [{"zone": f"{schedule_id}-{k}", "capacity": 3} for k in range(4)]
    template = {"zones": zones, "slot_starts": [f"{h:02d}:00" for h in range(8, 18)], "slot_minutes": 60}
    put = http.put(f"/v1/schedules/{schedule_id}", json={**template, "from": "2027-05-01", "to": "2027-05-05"})
    assert put.status_code == 202, put.text
    service.undeploy()
    service.deploy()
    with httpx.Client(base_url=service.url, timeout=30) as fresh:
        assert fresh.get(f"/v1/pools/{pool_id}").json()["reserved"] == 3
        assert fresh.get(f"/v1/reservations/{rid}").json()["status"] == "active"
        assert fresh.post("/v1/reservations", json={"pool_id": pool_id, "quantity": 7}).status_code == 201
        wait_until(
            lambda: fresh.get(f"/v1/schedules/{schedule_id}").json()["status"] == "applied", 60, "the schedule applied"
        )
        schedule = fresh.get(f"/v1/schedules/{schedule_id}").json()
        assert (schedule["total"], schedule["done"], schedule["refused"]) == (200, 200, 0)
        assert schedule["created"] + schedule["unchanged"] == 200  # a batch cut off before its record: unchanged
        assert fresh.get(f"/v1/pools/{schedule_id}-3:2027-05-05T17").json()["capacity"] == 3


def test_reserves_and_releases_over_http_reach_the_warehouse_with_the_state_after_each(
    http: httpx.Client, service: Service
) -> None:
    pool_id = new_pool(http, 10)
    rid = http.post("/v1/reservations", json={"pool_id": pool_id, "quantity": 4, "request_id": "wh-1"}).json()
    http.delete(f"/v1/reservations/{rid['reservation_id']}")
    warehouse = ParquetSink(ParquetSinkSettings(path=service.args["warehouse"]["sink"]["path"]), owner="e2e-reader")

    def rows_of_pool() -> list[tuple[Any, ...]]:
        rows = sorted((r for r in warehouse.rows() if r.pool_id == pool_id), key=lambda r: r.seq_nr)
        return [(r.seq_nr, r.event_type, r.quantity, r.request_id, r.capacity, r.reserved, r.remaining) for r in rows]

    expected = [
        (1, "PoolConfigured", None, None, 10, 0, 10),
        (2, "CapacityReserved", 4, "wh-1", 10, 4, 6),
        (3, "CapacityReleased", 4, None, 10, 0, 10),
    ]
    wait_until(lambda: rows_of_pool() == expected, 15, "the pool's three events in the warehouse")


def test_a_retired_pool_end_to_end(http: httpx.Client, service: Service) -> None:
    """Retired over HTTP: reserves refused (410), out of availability, releases and reads go on; once its
    last hold is released it is dormant (no longer hosted, out of the watchdog's sweep), and its events,
    the retirement included, reach the warehouse."""
    zone = f"z-{uuid.uuid4().hex[:6]}"
    pool_id = new_pool(http, 5, zone=zone)
    held = http.post("/v1/reservations", json={"pool_id": pool_id, "quantity": 2, "hold_seconds": 600}).json()
    wait_until(lambda: pool_id in availability(http, zone), 10, "the pool in availability")
    retired = http.delete(f"/v1/pools/{pool_id}")
    assert retired.status_code == 200 and retired.json()["state"] == "retired", retired.text
    refused = http.post("/v1/reservations", json={"pool_id": pool_id, "request_id": "too-late"})
    assert refused.status_code == 410 and refused.json()["error"] == {
        "code": "pool_retired",
        "message": f"pool {pool_id!r} is retired: it takes no new reservations",
        "request_id": "too-late",
    }
    wait_until(lambda: availability(http, zone) == {}, 10, "the retired pool out of availability")
    with open_journal(journal_settings(service)) as journal:
        assert pool_id in journal.live_pool_ids()  # a hold is still running in it
        assert http.delete(f"/v1/reservations/{held['reservation_id']}").status_code == 200
        wait_until(lambda: pool_id not in journal.live_pool_ids(), 10, "the pool dormant")
        assert pool_id in list(journal.pool_ids())  # its history stays
    assert http.get(f"/v1/pools/{pool_id}").json()["state"] == "retired"  # read back from the journal
    assert http.delete(f"/v1/reservations/{held['reservation_id']}").status_code == 200
    with CapacityClient(namespace=service.namespace) as client:
        with pytest.raises(PoolRetired):
            client.reserve(pool_id)
        assert client.retire_pool(pool_id).state == "retired"  # twice is fine
    warehouse = ParquetSink(ParquetSinkSettings(path=service.args["warehouse"]["sink"]["path"]), owner="e2e-reader")
    kinds = ["PoolConfigured", "CapacityHeld", "PoolRetired", "CapacityReleased"]
    wait_until(
        lambda: (
            [r.event_type for r in sorted(warehouse.rows(), key=lambda r: r.seq_nr) if r.pool_id == pool_id] == kinds
        ),
        15,
        "the pool's events in the warehouse",
    )


def journal_settings(service: Service) -> SqlJournalSettings | CassandraJournalSettings:
    journal = service.args["journal"]
    if journal["kind"] == "sql":
        return SqlJournalSettings(url=journal["url"])
    return CassandraJournalSettings.model_validate(journal)


def admin(service: Service, *arguments: str) -> subprocess.CompletedProcess[str]:
    """The operator's CLI, as an operator runs it against this service."""
    command = [str(Path(sys.executable).with_name("capacity-service")), "admin", *arguments]
    env = {**os.environ, "CAPACITY_URL": service.url}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def test_the_operators_tools_on_a_live_service(http: httpx.Client, service: Service) -> None:
    """Each admin command through the CLI: a pause answered 503 paused and recorded as events (journal and
    warehouse), the kill switch, the reservations of a pool by status, and a check against the journal."""
    pool_id = new_pool(http, 5)
    held = http.post("/v1/reservations", json={"pool_id": pool_id, "quantity": 2, "hold_seconds": 600}).json()
    paused = admin(service, "pause", pool_id, "--reason", "incident 7")
    assert paused.returncode == 0 and json.loads(paused.stdout)["paused"] is True, paused.stderr
    refused = http.post("/v1/reservations", json={"pool_id": pool_id})
    assert (refused.status_code, refused.json()["error"]["code"]) == (503, "paused")
    assert admin(service, "resume", pool_id).returncode == 0
    assert http.post("/v1/reservations", json={"pool_id": pool_id}).status_code == 201

    switched = admin(service, "pause-all", "--reason", "stop all sales")
    assert switched.returncode == 0 and pool_id in json.loads(switched.stdout)["done"], switched.stderr
    assert http.post("/v1/reservations", json={"pool_id": pool_id}).status_code == 503
    resumed = admin(service, "resume-all")
    assert resumed.returncode == 0 and not json.loads(resumed.stdout)["failed"], resumed.stdout

    listed = admin(service, "reservations", pool_id, "--status", "held")
    assert listed.returncode == 0, listed.stderr
    assert [r["reservation_id"] for r in json.loads(listed.stdout)["reservations"]] == [held["reservation_id"]]
    checked = admin(service, "check", pool_id)
    assert checked.returncode == 0 and json.loads(checked.stdout)["matches"] is True, checked.stdout
    reset = admin(service, "reset", pool_id, "--to-seq-nr", "2")  # back to the hold alone
    assert reset.returncode == 0 and json.loads(reset.stdout)["reserved"] == 2, reset.stderr
    assert json.loads(admin(service, "check", pool_id).stdout)["matches"] is True

    with open_journal(journal_settings(service)) as journal:
        kinds = [e.event_type for e in journal.read(pool_id)]
    assert kinds == [
        "PoolConfigured",
        "CapacityHeld",
        "PoolPaused",
        "PoolResumed",
        "CapacityReserved",
        "PoolPaused",
        "PoolResumed",
        "PoolReset",
    ]
    warehouse = ParquetSink(ParquetSinkSettings(path=service.args["warehouse"]["sink"]["path"]), owner="e2e-reader")
    wait_until(
        lambda: (
            [r.event_type for r in sorted(warehouse.rows(), key=lambda r: r.seq_nr) if r.pool_id == pool_id] == kinds
        ),
        15,
        "the pauses in the warehouse",
    )


def test_orders_over_http_across_shards_and_through_the_python_client(http: httpx.Client, service: Service) -> None:
    """Orders whose lines live on both shard actors: the order's host takes the lines of its own shard
    directly and the others through the router; all or nothing, and the client agrees with HTTP."""
    pools = [new_pool(http, 2) for _ in range(6)]  # crc32 spreads six pools over both shards
    lines = [{"pool_id": pool_id, "quantity": 1} for pool_id in pools]
    order_id = f"o-{uuid.uuid4().hex[:8]}"
    placed = http.post("/v1/orders", json={"order_id": order_id, "lines": lines, "hold_seconds": 600})
    assert placed.status_code == 201, placed.text
    assert placed.json()["status"] == "held" and all(line["reservation_id"] for line in placed.json()["lines"])
    assert http.post(f"/v1/orders/{order_id}/confirm").json()["status"] == "confirmed"
    assert [http.get(f"/v1/pools/{p}").json()["remaining"] for p in pools] == [1] * 6

    too_much = [*lines[:5], {"pool_id": pools[5], "quantity": 2}]
    refused = http.post("/v1/orders", json={"lines": too_much})
    assert refused.status_code == 409 and refused.json()["error"]["line"] == 5
    assert [http.get(f"/v1/pools/{p}").json()["remaining"] for p in pools] == [1] * 6  # nothing kept

    with CapacityClient(namespace=service.namespace) as client:
        assert client.get_order(order_id).model_dump(mode="json") == http.get(f"/v1/orders/{order_id}").json()
        assert client.cancel_order(order_id).status == "cancelled"
    assert [http.get(f"/v1/pools/{p}").json()["remaining"] for p in pools] == [2] * 6


def test_the_availability_stream_over_http_the_python_client_and_the_cli(http: httpx.Client, service: Service) -> None:
    """A zone's changes pushed as they happen, through Serve (Server-Sent Events), through the Python client
    (from a cache replica), and printed by `capacity-service watch` as a user runs it."""
    zone = f"z-{uuid.uuid4().hex[:6]}"
    pool_id = new_pool(http, 5, zone)
    wait_until(lambda: availability(http, zone) == {pool_id: 5}, 10, "the pool in availability")
    watcher = subprocess.Popen(
        [str(Path(sys.executable).parent / "capacity-service"), "--url", service.url, "watch", "--zone", zone],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout is not None
        assert json.loads(watcher.stdout.readline())["remaining"] == 5  # the CLI's picture
        with httpx.stream("GET", f"{service.url}/v1/availability/stream", params={"zone": zone}, timeout=30) as stream:
            lines = stream.iter_lines()
            first = next(json.loads(line[6:]) for line in lines if line.startswith("data: "))
            assert (first["pool_id"], first["remaining"]) == (pool_id, 5)
            assert http.post("/v1/reservations", json={"pool_id": pool_id, "quantity": 2}).status_code == 201
            change = next(json.loads(line[6:]) for line in lines if line.startswith("data: "))
            assert (change["pool_id"], change["remaining"]) == (pool_id, 3)
        assert json.loads(watcher.stdout.readline())["remaining"] == 3  # and the change, as it came
    finally:
        watcher.send_signal(signal.SIGINT)
        watcher.wait(timeout=30)

    async def first_two() -> list[int]:
        client = AsyncCapacityClient(namespace=service.namespace)
        remaining: list[int] = []
        try:
            async for pool in client.watch_availability(zone, wait_s=1.0):
                remaining.append(pool.remaining)
                if len(remaining) == 1:
                    async with httpx.AsyncClient(base_url=service.url) as other:
                        assert (await other.post("/v1/reservations", json={"pool_id": pool_id})).status_code == 201
                else:
                    break
        finally:
            await client.aclose()
        return remaining

    assert asyncio.run(first_two()) == [3, 2]


def cli(service: Service, *arguments: str) -> Any:
    """A client command of the CLI against this service, its JSON answer."""
    command = [str(Path(sys.executable).with_name("capacity-service")), *arguments]
    done = subprocess.run(
        command, env={**os.environ, "CAPACITY_URL": service.url}, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_waitlists_and_extends_over_http_the_python_client_and_the_cli_across_a_restart(
    http: httpx.Client, service: Service
) -> None:
    """A full pool's waitlist over HTTP, the Python client and the CLI: entries wait in order, a release
    offers the first that fits (the large one is skipped and keeps its place), an extend lengthens the
    offered hold; then the service is taken down while holds expire and brought back on the same journal:
    the offers due are made once at recovery, the large entry's among them, and the journal and the
    warehouse both have each offer once."""
    pool_id = new_pool(http, 3, max_hold_seconds=7_200, waitlist_limit=10)
    short_holds_expire = time.monotonic() + 15
    taken = [
        http.post("/v1/reservations", json={"pool_id": pool_id, "hold_seconds": hold}).json()["reservation_id"]
        for hold in (600, 15, 15)
    ]
    large = http.post(f"/v1/pools/{pool_id}/waitlist", json={"quantity": 2, "request_id": "large"})
    assert large.status_code == 202 and large.json()["position"] == 1, large.text
    with CapacityClient(namespace=service.namespace) as client:
        small = client.join_waitlist(pool_id, 1, "small", hold_seconds=600)
        assert small.position == 2 and small.status == "waiting"
        assert client.join_waitlist(pool_id, 1, "small", hold_seconds=600).entry_id == small.entry_id
    later = cli(service, "waitlist", "join", pool_id, "--request-id", "later")
    assert later["position"] == 3
    assert http.get(f"/v1/pools/{pool_id}").json()["waiting"] == 3

    http.delete(f"/v1/reservations/{taken[0]}")  # one unit: too few for the large entry, so the small one
    offered = http.get(f"/v1/pools/{pool_id}/waitlist/{small.entry_id}").json()
    assert offered["status"] == "offered" and offered["reservation_status"] == "held"
    extended = cli(service, "extend", offered["reservation_id"], "--hold-seconds", "7200")
    assert extended["expires_at"] > offered["expires_at"]
    too_long = http.post(f"/v1/reservations/{offered['reservation_id']}/extend", json={"hold_seconds": 7_201})
    assert too_long.status_code == 422
    assert cli(service, "waitlist", "get", pool_id, large.json()["entry_id"])["position"] == 1
    assert time.monotonic() < short_holds_expire, "too slow: the short holds expired before the restart"

    service.undeploy()  # down while the two short holds expire: the large entry's offer is due at recovery
    time.sleep(max(0.0, short_holds_expire + 1 - time.monotonic()))
    service.deploy()
    with httpx.Client(base_url=service.url, timeout=30) as fresh:

        def large_offered() -> bool:
            entry = fresh.get(f"/v1/pools/{pool_id}/waitlist/{large.json()['entry_id']}").json()
            return bool(entry["status"] == "offered")

        wait_until(large_offered, 30, "the large entry offered at recovery")
        assert fresh.get(f"/v1/pools/{pool_id}").json()["reserved"] == 3
        assert fresh.get(f"/v1/pools/{pool_id}/waitlist/{later['entry_id']}").json()["position"] == 1
        left = fresh.delete(f"/v1/pools/{pool_id}/waitlist/{later['entry_id']}")
        assert left.status_code == 200 and left.json()["status"] == "left"

    with open_journal(journal_settings(service)) as journal:
        types = [stored.event_type for stored in journal.read(pool_id)]
    assert types.count("WaitlistOffered") == 2 and types.count("WaitlistJoined") == 3
    assert types.count("HoldExtended") == 1 and types[-1] == "WaitlistLeft"
    warehouse = ParquetSink(ParquetSinkSettings(path=service.args["warehouse"]["sink"]["path"]), owner="e2e-reader")

    def offers_in_warehouse() -> list[str | None]:
        rows = sorted((r for r in warehouse.rows() if r.pool_id == pool_id), key=lambda r: r.seq_nr)
        return [r.request_id for r in rows if r.event_type == "WaitlistOffered"]

    wait_until(lambda: offers_in_warehouse() == ["small", "large"], 30, "both offers in the warehouse, once")


SCHEDULE = """\
# Two zones' slots for four days of March (UTC); YAML as an operator writes it: times unquoted.
from: 2027-03-01
to: 2027-03-04
slot_starts: [08:00, 12:30]
slot_minutes: 120
zones:
  - {{zone: {first}, capacity: 6}}
  - {{zone: {second}, capacity: 4, slot_capacity: {{12:30: 2}}}}
"""


def schedule_command(service: Service, *arguments: str, stderr: Any = subprocess.PIPE) -> subprocess.Popen[str]:
    command = [str(Path(sys.executable).with_name("capacity-service")), "--url", service.url, "schedule", *arguments]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True)


def test_a_schedule_applied_with_the_cli_over_http_and_through_the_python_client(
    http: httpx.Client, service: Service, tmp_path: Path
) -> None:
    """`capacity-service schedule apply FILE` as an operator runs it: progress as it goes (plain lines, or a
    bar on a terminal), a summary at the end, and the template's pools there over HTTP, spread over both
    shards; applied again, no pool changes; the Python client reads the schedule HTTP shows. A template of a
    million pools is refused with why, and creates nothing."""
    tag = uuid.uuid4().hex[:6]
    first, second = f"s1-{tag}", f"s2-{tag}"
    file = tmp_path / f"march-{tag}.yaml"
    file.write_text(SCHEDULE.format(first=first, second=second))
    schedule_id = file.stem
    applying = schedule_command(service, "apply", str(file))
    out, err = applying.communicate(timeout=120)
    assert applying.returncode == 0, err
    assert out.startswith(f"schedule {schedule_id} applied (generation 1) in "), out
    assert out.rstrip().endswith("16 pools: 16 created, 0 updated, 0 unchanged, 0 refused"), out
    assert f"schedule {schedule_id}: 0/16 pools (0 created, 0 updated, 0 unchanged, 0 refused)" in err
    pool = http.get(f"/v1/pools/{second}:2027-03-02T12:30").json()
    assert (pool["capacity"], pool["zone"], pool["slot_start"], pool["slot_end"]) == (
        2,
        second,
        "2027-03-02T12:30:00Z",
        "2027-03-02T14:30:00Z",
    )
    assert http.get(f"/v1/pools/{first}:2027-03-04T08").json()["capacity"] == 6

    terminal, its_end = pty.openpty()  # the same again, its progress on a terminal
    again = schedule_command(service, "apply", str(file), stderr=its_end)
    os.close(its_end)
    drawn = b""
    with contextlib.suppress(OSError):  # EIO once the command exits and the terminal closes
        while chunk := os.read(terminal, 4096):
            drawn += chunk
    os.close(terminal)
    out, _ = again.communicate(timeout=120)
    assert again.returncode == 0 and "16 pools: 0 created, 0 updated, 16 unchanged, 0 refused" in out
    assert b"\r" in drawn and b"/16 pools" in drawn and b"[" in drawn and drawn.endswith(b"\n")
    assert http.get(f"/v1/pools/{first}:2027-03-04T08").json()["version"] == 1  # written once

    with CapacityClient(namespace=service.namespace) as client:
        shown = client.get_schedule(schedule_id)
        assert shown.model_dump(mode="json") == http.get(f"/v1/schedules/{schedule_id}").json()
        assert (shown.generation, shown.status, shown.unchanged) == (2, "applied", 16)
    assert cli(service, "schedule", "show", schedule_id) == http.get(f"/v1/schedules/{schedule_id}").json()
    journal = service.args["journal"]
    stream = f"schedule~{schedule_id}"
    if journal["kind"] == "sql":  # as `capacity-service events` finds the journal: --data-dir, or the environment
        recorded = journal_events(stream, data_dir=Path(journal["url"].removeprefix("sqlite:///")).parent)
    else:
        recorded = journal_events(stream, env={"CAPACITY_JOURNAL": json.dumps(journal)})
    assert [e["type"] for e in recorded] == ["ScheduleApplying", "SchedulePoolsApplied", "ScheduleApplied"] * 2

    huge = tmp_path / "huge.yaml"
    zones = "".join(f"  - {{zone: h{k}-{tag}, capacity: 1}}\n" for k in range(200))
    huge.write_text(
        f"from: 2027-01-01\nto: 2027-12-31\nslot_starts: [08:00, 12:00, 16:00]\nslot_minutes: 60\nzones:\n{zones}"
    )
    refused = schedule_command(service, "apply", str(huge))
    _, err = refused.communicate(timeout=120)
    assert refused.returncode == 1 and '"status": 422' in err, err
    assert "describes 219,000 pools" in err and "at most 100,000" in err
    assert http.get("/v1/schedules/huge").status_code == 404
    assert http.get(f"/v1/pools/h0-{tag}:2027-01-01T08").status_code == 404
