"""Retiring a pool: the rules, their record, the availability they leave, the HTTP call, and the host
handing back a retired pool once nothing in it is held or active."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from capacity_service.adapters.codec import Codec, PoolSnapshotV2
from capacity_service.application.availability_index import AvailabilityIndex
from capacity_service.domain import (
    CapacityReleased,
    ConfigurePool,
    Confirm,
    ExpireHolds,
    PoolIsRetired,
    PoolState,
    PoolWasRetired,
    Release,
    Reserve,
    RetirePool,
    UnknownPool,
    apply_all,
    decide,
    new_reservation_id,
    view_of,
)
from capacity_service.entrypoints.http.app import create_app
from capacity_service.settings import HttpSettings
from tests.support.in_process import InProcessBackend

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def reserve(quantity: int = 1, hold_seconds: int | None = None, request_id: str | None = None) -> Reserve:
    reservation_id = new_reservation_id("p")
    return Reserve(quantity, request_id or reservation_id, reservation_id, hold_seconds)


def run(state: PoolState, command: object, now: datetime = T0) -> list[object]:
    decision = decide(state, command, now)  # type: ignore[arg-type]
    assert isinstance(decision, list), decision
    apply_all(state, decision)
    return list(decision)


def test_a_retired_pool_takes_no_new_reservations_but_ends_what_it_holds() -> None:
    state = PoolState("p")
    run(state, ConfigurePool(10, "z"))
    kept, held, expiring = reserve(2, request_id="kept"), reserve(1, hold_seconds=60), reserve(3, hold_seconds=5)
    for command in (kept, held, expiring):
        run(state, command)
    assert run(state, RetirePool()) == [PoolWasRetired()]
    assert run(state, RetirePool()) == []  # retiring twice changes nothing
    assert decide(state, reserve(1), T0) == PoolIsRetired("p")
    assert decide(state, reserve(1, hold_seconds=30), T0) == PoolIsRetired("p")
    assert decide(state, ConfigurePool(20, "z"), T0) == PoolIsRetired("p")
    assert run(state, kept) == []  # a retry of a reserve taken before is answered as before
    assert not state.dormant
    run(state, Release(kept.reservation_id))
    run(state, Confirm(held.reservation_id))
    run(state, ExpireHolds((expiring.reservation_id,)), T0 + timedelta(seconds=6))
    assert not state.dormant  # the confirmed hold is active
    run(state, Release(held.reservation_id))
    assert state.dormant and state.reserved == 0
    assert decide(PoolState("q"), RetirePool(), T0) == UnknownPool("q")


def test_retirement_is_kept_by_events_and_snapshots_and_old_snapshots_read_as_not_retired() -> None:
    codec = Codec()
    encoded = codec.encode_event(PoolWasRetired())
    assert codec.decode_event(encoded.event_type, encoded.schema_version, encoded.payload) == PoolWasRetired()
    state = PoolState("p")
    run(state, ConfigurePool(4, "z"))
    run(state, reserve(1))
    run(state, RetirePool())
    version, payload = codec.encode_snapshot(state)
    assert version == 4 and codec.decode_snapshot(version, payload) == state
    v2 = PoolSnapshotV2(
        pool_id="p",
        exists=True,
        capacity=3,
        zone="z",
        slot_start=None,
        slot_end=None,
        reserved=0,
        reservation_ids=[],
        quantities=[],
        request_ids=[],
        statuses=[],
        expires_at=[],
    )
    assert codec.decode_snapshot(2, v2.model_dump_json().encode()).retired is False


def test_a_retired_pool_leaves_availability_and_no_older_view_brings_it_back() -> None:
    index = AvailabilityIndex()
    state = PoolState("p")
    run(state, ConfigurePool(4, "north"))
    taken = reserve(1)
    run(state, taken)
    index.update(view_of(state, 2))
    assert [v.pool_id for v in index.query("north", None, None)] == ["p"]
    before = view_of(state, 2)
    run(state, RetirePool())
    assert index.update(view_of(state, 3))
    assert index.query("north", None, None) == []
    assert not index.update(before)  # a late push of the view before retirement
    run(state, Release(taken.reservation_id))
    assert index.update(view_of(state, 4))  # the retired pool changes again: still unlisted
    assert index.query("north", None, None) == [] and index.version_of("p") == 4


@pytest.fixture
def backend() -> InProcessBackend:
    return InProcessBackend()


@pytest.fixture
def http(backend: InProcessBackend) -> Iterator[TestClient]:
    with TestClient(create_app(backend, HttpSettings())) as client:
        yield client


def test_retiring_over_http(http: TestClient, backend: InProcessBackend) -> None:
    assert http.put("/v1/pools/p1", json={"capacity": 5, "zone": "north"}).status_code == 201
    taken = http.post("/v1/reservations", json={"pool_id": "p1", "quantity": 2, "request_id": "before"}).json()
    assert http.delete("/v1/pools/nope").status_code == 404
    retired = http.delete("/v1/pools/p1")
    assert retired.status_code == 200 and retired.json()["state"] == "retired"
    assert http.delete("/v1/pools/p1").status_code == 200  # twice: the same answer
    refused = http.post("/v1/reservations", json={"pool_id": "p1", "request_id": "after"})
    assert refused.status_code == 410, refused.text
    assert refused.json()["error"]["code"] == "pool_retired" and refused.json()["error"]["request_id"] == "after"
    again = http.post("/v1/reservations", json={"pool_id": "p1", "quantity": 2, "request_id": "before"})
    assert again.status_code == 201 and again.json()["reservation_id"] == taken["reservation_id"]
    assert http.post("/v1/availability", json={"zone": "north"}).json() == {"pools": []}
    assert http.put("/v1/pools/p1", json={"capacity": 9, "zone": "north"}).status_code == 410
    pool = http.get("/v1/pools/p1").json()
    assert (pool["state"], pool["reserved"], pool["capacity"]) == ("retired", 2, 5)
    assert http.delete(f"/v1/reservations/{taken['reservation_id']}").status_code == 200
    assert http.get("/v1/pools/p1").json()["reserved"] == 0
    kinds = [e.event_type for e in backend.journal.read("p1")]
    assert kinds == ["PoolConfigured", "CapacityReserved", "PoolRetired", "CapacityReleased"]


def test_retiring_needs_the_admin_key_when_keys_are_configured() -> None:
    settings = HttpSettings(api_keys=["user-key"], admin_keys=["admin-key"])  # type: ignore[list-item]
    with TestClient(create_app(InProcessBackend(), settings)) as http:
        admin, user = {"authorization": "Bearer admin-key"}, {"authorization": "Bearer user-key"}
        http.put("/v1/pools/p1", json={"capacity": 5, "zone": "n"}, headers=admin)
        assert http.delete("/v1/pools/p1", headers=user).status_code == 403
        assert http.get("/v1/pools/p1", headers=user).json()["state"] == "active"
        assert http.delete("/v1/pools/p1", headers=admin).status_code == 200


def test_the_host_hands_back_a_retired_pool_once_nothing_is_held_or_active(backend: InProcessBackend) -> None:
    host, client, journal = backend.host, backend.client, backend.journal

    async def scenario() -> None:
        await client.configure_pool("p", 5, "z")
        await client.configure_pool("other", 5, "z")
        held = await client.reserve("p", 2, hold_seconds=600)
        await client.retire_pool("p")
        await asyncio.sleep(0.05)
        assert "p" in host.pool_ids and "p" in journal.live_pool_ids()  # a hold is still running
        await client.release(held.reservation_id)
        for _ in range(100):
            if "p" not in host.pool_ids:
                break
            await asyncio.sleep(0.01)
        assert "p" not in host.pool_ids  # no longer hosted
        assert journal.live_pool_ids() == ["other"] and list(journal.dormant_pool_ids()) == ["p"]
        # Reads and late releases still work: the pool is read back from the journal for them.
        assert (await client.get_pool("p")).state == "retired"
        assert (await client.release(held.reservation_id)).reservation_id == held.reservation_id
        assert [e.event_type for e in journal.read("p")][-2:] == ["PoolRetired", "CapacityReleased"]

    asyncio.run(scenario())


def test_a_retired_pool_with_nothing_in_it_is_handed_back_at_once(backend: InProcessBackend) -> None:
    async def scenario() -> None:
        await backend.client.configure_pool("p", 5, "z")
        released = await backend.client.reserve("p", 1)
        await backend.client.release(released.reservation_id)
        assert (await backend.client.retire_pool("p")).state == "retired"
        for _ in range(100):
            if "p" not in backend.host.pool_ids:
                break
            await asyncio.sleep(0.01)
        assert "p" not in backend.host.pool_ids and backend.journal.live_pool_ids() == []
        events = [e for e in backend.journal.read("p")]
        assert [e.event_type for e in events][-1] == "PoolRetired"
        assert CapacityReleased.TYPE in [e.event_type for e in events]

    asyncio.run(scenario())
