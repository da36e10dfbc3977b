"""The operator's tools over HTTP, in process: pause and resume (one pool, every pool), list a pool's
reservations, check a pool against its journal. Each acts through the pool's writer; pauses are events."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from capacity_service.adapters.journal import AppendRequest, NewEvent
from capacity_service.domain import (
    ConfigurePool,
    ExpireHolds,
    PausePool,
    PoolPaused,
    PoolState,
    Release,
    Reserve,
    ResumePool,
    apply_all,
    decide,
    new_reservation_id,
)
from capacity_service.entrypoints.http.app import create_app
from capacity_service.settings import HttpSettings
from tests.support.in_process import InProcessBackend

T0 = datetime(2026, 12, 3, 12, tzinfo=UTC)


@pytest.fixture
def backend() -> InProcessBackend:
    return InProcessBackend()


@pytest.fixture
def http(backend: InProcessBackend) -> Iterator[TestClient]:
    with TestClient(create_app(backend, HttpSettings())) as client:
        yield client


def reserve(http: TestClient, pool_id: str, **extra: object) -> dict:  # type: ignore[type-arg]
    answer = http.post("/v1/reservations", json={"pool_id": pool_id, **extra})
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def test_a_pause_stops_every_write_but_the_pools_own_expiry() -> None:
    state = PoolState("p")
    apply_all(state, decide(state, ConfigurePool(5, "z")))  # type: ignore[arg-type]
    rid = new_reservation_id("p")
    held = Reserve(1, "r", rid, hold_seconds=5)
    apply_all(state, decide(state, held, T0))  # type: ignore[arg-type]
    assert decide(state, PausePool("incident 42"), T0) == [PoolPaused("incident 42")]
    apply_all(state, [PoolPaused("incident 42")])
    assert decide(state, PausePool("again"), T0) == []
    for write in (Reserve(1, "new", new_reservation_id("p")), Release(rid), ConfigurePool(9, "z")):
        assert type(decide(state, write, T0)).__name__ == "PoolIsPaused"
    assert decide(state, held, T0) == []  # a retried reserve is answered as before
    expired = decide(state, ExpireHolds((rid,)), T0 + timedelta(seconds=6))
    assert isinstance(expired, list)  # events, not a rejection
    assert [type(e).__name__ for e in expired] == ["HoldsExpired"]  # holds still end on time
    assert type(decide(state, PausePool(""), T0)).__name__ == "InvalidCommand"
    assert [type(e).__name__ for e in decide(state, ResumePool(), T0)] == ["PoolResumed"]  # type: ignore[union-attr]


def test_pause_and_resume_one_pool(http: TestClient, backend: InProcessBackend) -> None:
    http.put("/v1/pools/p1", json={"capacity": 5, "zone": "north"})
    taken = reserve(http, "p1", quantity=2)
    paused = http.post("/v1/admin/pools/p1/pause", json={"reason": "incident 42"})
    assert paused.status_code == 200 and paused.json()["paused"] is True
    refused = http.post("/v1/reservations", json={"pool_id": "p1", "request_id": "during"})
    assert refused.status_code == 503, refused.text
    error = refused.json()["error"]
    assert error["code"] == "paused" and "incident 42" in error["message"] and error["request_id"] == "during"
    assert http.delete(f"/v1/reservations/{taken['reservation_id']}").json()["error"]["code"] == "paused"
    assert http.get("/v1/pools/p1").json()["reserved"] == 2  # reads go on; nothing was taken or given back
    assert http.post("/v1/admin/pools/p1/resume").json()["paused"] is False
    reserve(http, "p1", request_id="after")
    kinds = [e.event_type for e in backend.journal.read("p1")]
    assert kinds == ["PoolConfigured", "CapacityReserved", "PoolPaused", "PoolResumed", "CapacityReserved"]
    assert http.post("/v1/admin/pools/nope/pause", json={"reason": "x"}).status_code == 404
    assert http.post("/v1/admin/pools/p1/pause", json={"reason": ""}).status_code == 422


def test_the_kill_switch_pauses_and_resumes_every_live_pool(http: TestClient) -> None:
    for pool_id in ("a", "b", "c"):
        http.put(f"/v1/pools/{pool_id}", json={"capacity": 5, "zone": "north"})
    http.delete("/v1/pools/c")  # retired with nothing in it: dormant, not live
    asyncio.run(asyncio.sleep(0.05))
    switched = http.post("/v1/admin/pause", json={"reason": "stop all sales"})
    assert switched.status_code == 200 and switched.json() == {"done": ["a", "b"], "failed": {}}
    for pool_id in ("a", "b"):
        assert http.post("/v1/reservations", json={"pool_id": pool_id}).status_code == 503
    assert http.post("/v1/availability", json={"zone": "north"}).status_code == 200  # reads go on
    assert http.post("/v1/admin/resume").json() == {"done": ["a", "b"], "failed": {}}
    reserve(http, "a")


def test_a_pools_reservations_by_status(http: TestClient) -> None:
    http.put("/v1/pools/p1", json={"capacity": 10, "zone": "north"})
    active = reserve(http, "p1", quantity=1)
    held = reserve(http, "p1", quantity=2, hold_seconds=600)
    released = reserve(http, "p1", quantity=3)
    http.delete(f"/v1/reservations/{released['reservation_id']}")

    def listed(**query: object) -> list[tuple[str, str]]:
        answer = http.get("/v1/admin/pools/p1/reservations", params=query)
        assert answer.status_code == 200, answer.text
        return [(r["reservation_id"], r["status"]) for r in answer.json()["reservations"]]

    everything = [
        (active["reservation_id"], "active"),
        (held["reservation_id"], "held"),
        (released["reservation_id"], "released"),
    ]
    assert listed() == everything
    assert listed(status="held") == [(held["reservation_id"], "held")]
    assert listed(limit=2) == everything[:2]
    assert listed(status="expired") == []
    assert http.get("/v1/admin/pools/p1/reservations", params={"status": "gone"}).status_code == 422
    assert http.get("/v1/admin/pools/p1/reservations", params={"limit": 0}).status_code == 422
    assert http.get("/v1/admin/pools/nope/reservations").json() == {"reservations": []}


def test_checking_a_pool_finds_a_state_that_its_journal_does_not_give(
    http: TestClient, backend: InProcessBackend
) -> None:
    http.put("/v1/pools/p1", json={"capacity": 10, "zone": "north"})
    taken = reserve(http, "p1", quantity=4)
    clean = http.post("/v1/admin/pools/p1/check").json()
    assert clean == {"pool_id": "p1", "seq_nr": 2, "matches": True, "differences": []}
    # An event written behind the writer's back (what the admin tools never do): the check sees it.
    epoch = backend.journal.claim_epoch("p1")
    payload = f'{{"reservation_id":"{taken["reservation_id"]}","quantity":4}}'.encode()
    backend.journal.append(*AppendRequest("p1", 2, epoch, [NewEvent("CapacityReleased", 1, payload)]))
    found = http.post("/v1/admin/pools/p1/check").json()
    assert found["matches"] is False and found["differences"][0] == "seq_nr: live 2, journal 3"
    assert "reserved: live 4, replayed 0" in found["differences"]
    backend.journal.append(
        *AppendRequest("p1", 3, epoch, [NewEvent("CapacityReleased", 1, b'{"reservation_id":"x","quantity":1}')])
    )
    broken = http.post("/v1/admin/pools/p1/check").json()
    assert broken["matches"] is False and broken["differences"][0].startswith("the journal does not replay")
    assert http.post("/v1/admin/pools/nope/check").status_code == 404


def test_the_operators_calls_need_the_admin_key_when_keys_are_configured() -> None:
    settings = HttpSettings(api_keys=["user-key"], admin_keys=["admin-key"])  # type: ignore[list-item]
    with TestClient(create_app(InProcessBackend(), settings)) as http:
        admin, user = {"authorization": "Bearer admin-key"}, {"authorization": "Bearer user-key"}
        http.put("/v1/pools/p1", json={"capacity": 5, "zone": "n"}, headers=admin)
        assert http.post("/v1/admin/pools/p1/pause", json={"reason": "x"}, headers=user).status_code == 403
        assert http.get("/v1/admin/pools/p1/reservations", headers=user).status_code == 403
        assert http.post("/v1/admin/pause", json={"reason": "x"}).status_code == 401
        assert http.post("/v1/admin/pools/p1/check", headers=admin).json()["matches"] is True


def test_resetting_a_pool_to_an_earlier_state_is_one_more_event(http: TestClient, backend: InProcessBackend) -> None:
    """Pause, reset to seq_nr 2, check, resume: what was taken after event 2 is free again (its request
    ids too), the hold of that state is pending again, and the history keeps every event."""
    http.put("/v1/pools/p1", json={"capacity": 10, "zone": "north"})
    kept = reserve(http, "p1", quantity=2, request_id="kept")  # seq_nr 2
    held = reserve(http, "p1", quantity=1, hold_seconds=600)  # 3
    http.post(f"/v1/reservations/{held['reservation_id']}/confirm")  # 4
    reserve(http, "p1", quantity=5, request_id="mistake")  # 5
    http.delete(f"/v1/reservations/{kept['reservation_id']}")  # 6
    http.post("/v1/admin/pools/p1/pause", json={"reason": "repair"})  # 7
    reset = http.post("/v1/admin/pools/p1/reset", json={"to_seq_nr": 3})  # 8
    assert reset.status_code == 200, reset.text
    assert (reset.json()["reserved"], reset.json()["version"], reset.json()["paused"]) == (3, 8, True)
    assert http.get(f"/v1/reservations/{kept['reservation_id']}").json()["status"] == "active"
    assert http.get(f"/v1/reservations/{held['reservation_id']}").json()["status"] == "held"
    assert http.post("/v1/admin/pools/p1/check").json()["matches"] is True
    http.post("/v1/admin/pools/p1/resume")
    again = reserve(http, "p1", quantity=5, request_id="mistake")  # its id is free again: taken anew
    assert again["remaining"] == 2
    kinds = [e.event_type for e in backend.journal.read("p1")]
    assert kinds[5:] == ["CapacityReleased", "PoolPaused", "PoolReset", "PoolResumed", "CapacityReserved"]
    beyond = http.post("/v1/admin/pools/p1/reset", json={"to_seq_nr": 99})
    assert (beyond.status_code, beyond.json()["error"]["code"]) == (409, "seq_nr_out_of_range")
    assert http.post("/v1/admin/pools/p1/reset", json={"to_seq_nr": 0}).status_code == 422
    assert http.post("/v1/admin/pools/nope/reset", json={"to_seq_nr": 1}).status_code == 404


def test_a_reset_survives_recovery_and_reaches_the_warehouse_rows() -> None:
    from capacity_service.adapters.codec import Codec
    from capacity_service.adapters.journal.memory import InMemoryJournal
    from capacity_service.adapters.warehouse.rows import Delivery, next_rows, rows_of
    from capacity_service.application.pool_writer import PoolWriter
    from capacity_service.domain import ResetPool

    journal = InMemoryJournal()
    writer = PoolWriter("p", journal, clock=lambda: T0)
    writer.start()
    writer.execute([ConfigurePool(10, "z")])
    first = new_reservation_id("p")
    writer.execute([Reserve(3, "a", first)])
    writer.execute([Reserve(4, "b", new_reservation_id("p"), hold_seconds=60)])
    target = PoolState("p")
    apply_all(
        target,
        [e for s in journal.read("p") for e in [Codec().decode_event(s.event_type, s.schema_version, s.payload)]][:2],
    )
    [persisted] = writer.execute_batch([ResetPool(2, target)]).persisted
    assert rows_of(persisted)[-1].reserved == 3 and writer.state.reserved == 3
    assert writer.next_expiry() is None  # the hold made after event 2 is gone with it
    recovered = PoolWriter("p", journal)
    recovered.start()
    assert recovered.state == writer.state and recovered.seq_nr == 4
    delivered, codec = Delivery("p"), Codec()
    for stored in journal.read("p"):
        [row] = next_rows(
            delivered,
            stored.seq_nr,
            codec.decode_event(stored.event_type, stored.schema_version, stored.payload),
            stored.recorded_at,
        )
        delivered = Delivery.after(row)
    assert (row.event_type, row.reserved, row.capacity) == ("PoolReset", 3, 10)
