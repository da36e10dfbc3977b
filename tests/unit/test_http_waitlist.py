"""Waitlists and extending holds over the HTTP contract, against the app with the in-process backend (no
Ray): 202 with a place, offers when units come free (in order, the skip rule, an offered hold that
lapses), leave, every error (404, 409 waitlist_full / request_id_conflict / reservation_active, 410, 422,
503 paused), the pool settings on PUT, and the Python client's typed errors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from capacity_service.entrypoints.http.app import create_app
from capacity_service.errors import RequestIdConflict, ReservationActive, WaitlistEntryNotFound, WaitlistFull
from tests.support.in_process import InProcessBackend

POOL = "north:0800"


@pytest.fixture
def http() -> Iterator[TestClient]:
    with TestClient(create_app(InProcessBackend())) as client:
        assert client.put(f"/v1/pools/{POOL}", json={"capacity": 2, "zone": "north"}).status_code == 201
        yield client


def join(http: TestClient, request_id: str, quantity: int = 1, **extra: object) -> dict[str, Any]:
    answer = http.post(f"/v1/pools/{POOL}/waitlist", json={"quantity": quantity, "request_id": request_id, **extra})
    assert answer.status_code == 202, answer.text
    return dict(answer.json())


def entry(http: TestClient, entry_id: str) -> dict[str, Any]:
    answer = http.get(f"/v1/pools/{POOL}/waitlist/{entry_id}")
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def take(http: TestClient, quantity: int = 1, **extra: object) -> str:
    answer = http.post("/v1/reservations", json={"pool_id": POOL, "quantity": quantity, **extra})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["reservation_id"])


def error_of(answer: Any) -> str:
    return str(answer.json()["error"]["code"])


def test_a_join_waits_and_is_offered_a_hold_when_a_release_frees_units(http: TestClient) -> None:
    taken = take(http, 2)
    place = join(http, "w-1", hold_seconds=120)
    assert (place["status"], place["position"], place["quantity"], place["reservation_id"]) == ("waiting", 1, 1, None)
    assert http.get(f"/v1/pools/{POOL}").json()["waiting"] == 1
    assert http.delete(f"/v1/reservations/{taken}").status_code == 200
    offered = entry(http, place["entry_id"])
    assert offered["status"] == "offered" and offered["position"] is None
    assert offered["reservation_status"] == "held"
    expires_at = datetime.fromisoformat(offered["expires_at"])
    assert timedelta(seconds=100) < expires_at - datetime.now(UTC) <= timedelta(seconds=120)
    hold = http.get(f"/v1/reservations/{offered['reservation_id']}").json()
    assert (hold["status"], hold["quantity"]) == ("held", 1)
    assert http.post(f"/v1/reservations/{offered['reservation_id']}/confirm").json()["status"] == "active"
    assert entry(http, place["entry_id"])["reservation_status"] == "active"
    assert http.get(f"/v1/pools/{POOL}").json()["remaining"] == 1  # 1 offered and confirmed, 1 free


def test_a_join_that_fits_now_is_offered_at_once(http: TestClient) -> None:
    place = join(http, "now", 2)
    assert place["status"] == "offered" and place["reservation_id"] is not None
    assert http.get(f"/v1/pools/{POOL}").json()["remaining"] == 0


def test_offers_go_in_join_order_skipping_entries_too_large(http: TestClient) -> None:
    first, second = take(http), take(http)
    large = join(http, "large", 2)
    small = join(http, "small", 1)
    later = join(http, "later", 1)
    assert [large["position"], small["position"], later["position"]] == [1, 2, 3]
    http.delete(f"/v1/reservations/{first}")
    assert [entry(http, p["entry_id"])["status"] for p in (large, small, later)] == ["waiting", "offered", "waiting"]
    assert entry(http, large["entry_id"])["position"] == 1 and entry(http, later["entry_id"])["position"] == 2
    http.delete(f"/v1/reservations/{second}")
    assert entry(http, later["entry_id"])["status"] == "offered"  # 1 free: the large entry still does not fit


def test_an_offered_hold_that_lapses_goes_to_the_next_entry(http: TestClient) -> None:
    taken = take(http, 2)
    first = join(http, "first", 2, hold_seconds=1)
    second = join(http, "second", 2)
    http.delete(f"/v1/reservations/{taken}")
    assert entry(http, first["entry_id"])["status"] == "offered"
    deadline = time.monotonic() + 5
    while entry(http, second["entry_id"])["status"] != "offered" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert entry(http, second["entry_id"])["status"] == "offered"
    assert entry(http, first["entry_id"])["reservation_status"] == "expired"


def test_a_repeated_join_answers_the_same_entry_and_another_body_is_409(http: TestClient) -> None:
    take(http, 2)
    place = join(http, "same", 1)
    assert join(http, "same", 1)["entry_id"] == place["entry_id"]
    refused = http.post(f"/v1/pools/{POOL}/waitlist", json={"quantity": 2, "request_id": "same"})
    assert refused.status_code == 409 and error_of(refused) == "request_id_conflict"
    assert refused.json()["error"]["request_id"] == "same"
    assert http.get(f"/v1/pools/{POOL}").json()["waiting"] == 1


def test_a_full_waitlist_is_409_and_leaving_makes_room(http: TestClient) -> None:
    assert http.put(f"/v1/pools/{POOL}", json={"capacity": 0, "zone": "north", "waitlist_limit": 1}).status_code == 200
    place = join(http, "a")
    refused = http.post(f"/v1/pools/{POOL}/waitlist", json={"request_id": "b"})
    assert refused.status_code == 409 and error_of(refused) == "waitlist_full"
    for _ in range(2):  # leaving twice is fine
        left = http.delete(f"/v1/pools/{POOL}/waitlist/{place['entry_id']}")
        assert left.status_code == 200 and left.json()["status"] == "left"
    assert join(http, "b")["position"] == 1


def test_leaving_before_the_offer_means_no_offer(http: TestClient) -> None:
    taken = take(http, 2)
    place = join(http, "gone")
    http.delete(f"/v1/pools/{POOL}/waitlist/{place['entry_id']}")
    http.delete(f"/v1/reservations/{taken}")
    assert entry(http, place["entry_id"])["status"] == "left"
    assert http.get(f"/v1/pools/{POOL}").json()["remaining"] == 2


@pytest.mark.parametrize(
    "body",
    [
        {"quantity": 1},  # no request_id
        {"quantity": 0, "request_id": "r"},
        {"quantity": "1", "request_id": "r"},
        {"quantity": 1, "request_id": "r", "hold_seconds": 0},
        {"quantity": 1, "request_id": "r", "hold_seconds": 86_401},  # over the pool's max_hold_seconds
        {"quantity": 1, "request_id": "r", "extra": True},
        {"quantity": 1, "request_id": "waitlist:r"},
    ],
)
def test_a_malformed_join_is_422_and_adds_nothing(http: TestClient, body: dict[str, object]) -> None:
    answer = http.post(f"/v1/pools/{POOL}/waitlist", json=body)
    assert answer.status_code == 422, answer.text
    assert http.get(f"/v1/pools/{POOL}").json()["waiting"] == 0


def test_unknown_pools_and_entries_are_404(http: TestClient) -> None:
    assert error_of(http.post("/v1/pools/nope/waitlist", json={"request_id": "r"})) == "pool_not_found"
    assert http.get(f"/v1/pools/{POOL}/waitlist/AAAAAAAAAAAAAAAAAAAAAA").status_code == 404
    assert error_of(http.get(f"/v1/pools/{POOL}/waitlist/AAAAAAAAAAAAAAAAAAAAAA")) == "waitlist_entry_not_found"
    assert http.delete(f"/v1/pools/{POOL}/waitlist/AAAAAAAAAAAAAAAAAAAAAA").status_code == 404
    assert http.get(f"/v1/pools/{POOL}/waitlist/short").status_code in (404, 422)


def test_a_retired_pool_is_410_and_a_paused_one_503(http: TestClient) -> None:
    take(http, 2)
    place = join(http, "before")
    assert http.post(f"/v1/admin/pools/{POOL}/pause", json={"reason": "incident"}).status_code == 200
    paused = http.post(f"/v1/pools/{POOL}/waitlist", json={"request_id": "during"})
    assert paused.status_code == 503 and error_of(paused) == "paused"
    assert join(http, "before")["entry_id"] == place["entry_id"]  # a repeat is answered as before
    http.post(f"/v1/admin/pools/{POOL}/resume")
    assert http.delete(f"/v1/pools/{POOL}").status_code == 200
    retired = http.post(f"/v1/pools/{POOL}/waitlist", json={"request_id": "after"})
    assert retired.status_code == 410 and error_of(retired) == "pool_retired"
    assert entry(http, place["entry_id"])["pool_retired"] is True


# ---------------------------------------------------------------------- extending holds


def test_extend_lengthens_a_hold_up_to_the_pools_max_hold_seconds(http: TestClient) -> None:
    assert (
        http.put(f"/v1/pools/{POOL}", json={"capacity": 2, "zone": "north", "max_hold_seconds": 7_200}).json()[
            "max_hold_seconds"
        ]
        == 7_200
    )
    rid = take(http, hold_seconds=60)
    extended = http.post(f"/v1/reservations/{rid}/extend", json={"hold_seconds": 3_600})
    assert extended.status_code == 200, extended.text
    expires_at = datetime.fromisoformat(extended.json()["expires_at"])
    assert timedelta(seconds=3_500) < expires_at - datetime.now(UTC) <= timedelta(seconds=3_600)
    shorter = http.post(f"/v1/reservations/{rid}/extend", json={"hold_seconds": 10})
    assert shorter.status_code == 200 and shorter.json()["expires_at"] == extended.json()["expires_at"]
    over = http.post(f"/v1/reservations/{rid}/extend", json={"hold_seconds": 7_201})
    assert over.status_code == 422 and error_of(over) == "invalid_request"
    for bad in ({}, {"hold_seconds": 0}, {"hold_seconds": "60"}, {"hold_seconds": 60, "x": 1}):
        assert http.post(f"/v1/reservations/{rid}/extend", json=bad).status_code == 422
    assert http.put(f"/v1/pools/{POOL}", json={"capacity": 3, "zone": "north"}).json()["max_hold_seconds"] == 7_200


def test_extend_is_409_for_expired_released_and_active_and_404_for_unknown(http: TestClient) -> None:
    assert http.put(f"/v1/pools/{POOL}", json={"capacity": 5, "zone": "north"}).status_code == 200
    expired, released, active = take(http, hold_seconds=1), take(http, hold_seconds=60), take(http)
    http.delete(f"/v1/reservations/{released}")
    time.sleep(1.5)
    for rid, code in ((expired, "hold_expired"), (released, "reservation_released"), (active, "reservation_active")):
        refused = http.post(f"/v1/reservations/{rid}/extend", json={"hold_seconds": 60})
        assert refused.status_code == 409 and error_of(refused) == code, refused.text
    unknown = http.post("/v1/reservations/bm9wZQ.AAAAAAAAAAAAAAAAAAAAAA/extend", json={"hold_seconds": 60})
    assert unknown.status_code == 404


def test_put_pool_settings_out_of_range_are_422(http: TestClient) -> None:
    for extra in ({"max_hold_seconds": 0}, {"max_hold_seconds": 604_801}, {"waitlist_limit": -1}):
        answer = http.put(f"/v1/pools/{POOL}", json={"capacity": 2, "zone": "north", **extra})
        assert answer.status_code == 422, answer.text


def test_the_routes_are_in_the_openapi_document(http: TestClient) -> None:
    paths = http.get("/openapi.json").json()["paths"]
    assert "post" in paths["/v1/pools/{pool_id}/waitlist"]
    assert {"get", "delete"} <= set(paths["/v1/pools/{pool_id}/waitlist/{entry_id}"])
    assert "post" in paths["/v1/reservations/{reservation_id}/extend"]
    assert "202" in paths["/v1/pools/{pool_id}/waitlist"]["post"]["responses"]


def test_the_python_client_raises_typed_errors() -> None:
    async def scenario() -> None:
        backend = InProcessBackend()
        client = backend.client
        await client.configure_pool("p", 1, "z", waitlist_limit=1)
        receipt = await client.reserve("p")
        place = await client.join_waitlist("p", 1, "r1")
        assert place.status == "waiting" and place.position == 1
        with pytest.raises(RequestIdConflict):
            await client.join_waitlist("p", 1, "r1", hold_seconds=30)
        with pytest.raises(WaitlistFull):
            await client.join_waitlist("p", 1, "r2")
        with pytest.raises(WaitlistEntryNotFound):
            await client.get_waitlist_entry("p", "AAAAAAAAAAAAAAAAAAAAAA")
        await client.release(receipt.reservation_id)
        offered = await client.get_waitlist_entry("p", place.entry_id)
        assert offered.status == "offered" and offered.reservation_id is not None
        await client.confirm(offered.reservation_id)
        with pytest.raises(ReservationActive):
            await client.extend_hold(offered.reservation_id, 60)
        assert (await client.leave_waitlist("p", place.entry_id)).status == "offered"  # answered as it is

    asyncio.run(scenario())
