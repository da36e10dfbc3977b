"""Orders over the HTTP contract, against the app with the in-process backend (no Ray): 201 with every
line, 409 naming the line that could not be served with nothing taken, 422 for a malformed order,
confirm, cancel, read, idempotent repeats."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from capacity_service.application.order_operations import new_order_id
from capacity_service.entrypoints.http.app import create_app
from tests.support.in_process import InProcessBackend


@pytest.fixture
def http() -> Iterator[TestClient]:
    with TestClient(create_app(InProcessBackend())) as client:
        for pool_id, capacity in (("van", 3), ("picker", 1)):
            assert client.put(f"/v1/pools/{pool_id}", json={"capacity": capacity, "zone": "north"}).status_code == 201
        yield client


def remaining(http: TestClient, pool_id: str) -> int:
    return int(http.get(f"/v1/pools/{pool_id}").json()["remaining"])


def test_an_order_takes_every_line_and_a_repeat_answers_the_same(http: TestClient) -> None:
    body = {"order_id": "o1", "lines": [{"pool_id": "van", "quantity": 2}, {"pool_id": "picker"}]}
    placed = http.post("/v1/orders", json=body)
    assert placed.status_code == 201, placed.text
    order = placed.json()
    assert order["status"] == "confirmed" and [line["pool_id"] for line in order["lines"]] == ["van", "picker"]
    assert http.post("/v1/orders", json=body).json() == order
    assert (remaining(http, "van"), remaining(http, "picker")) == (1, 0)
    assert http.get("/v1/orders/o1").json() == order
    van = http.get(f"/v1/reservations/{order['lines'][0]['reservation_id']}").json()
    assert (van["status"], van["quantity"]) == ("active", 2)


def test_a_line_that_cannot_be_served_is_named_and_nothing_is_taken(http: TestClient) -> None:
    body = {"order_id": "o1", "lines": [{"pool_id": "van", "quantity": 1}, {"pool_id": "picker", "quantity": 2}]}
    refused = http.post("/v1/orders", json=body)
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert (error["code"], error["line"], error["pool_id"], error["line_error"]) == (
        "order_line_refused",
        1,
        "picker",
        "insufficient_capacity",
    )
    assert (remaining(http, "van"), remaining(http, "picker")) == (3, 1)
    other = http.post("/v1/orders", json={"order_id": "o1", "lines": [{"pool_id": "van"}]})
    assert (other.status_code, other.json()["error"]["code"]) == (409, "order_id_conflict")


def test_a_held_order_is_confirmed_or_cancelled_whole(http: TestClient) -> None:
    held = http.post("/v1/orders", json={"order_id": "o1", "lines": [{"pool_id": "van"}], "hold_seconds": 600})
    assert (held.status_code, held.json()["status"]) == (201, "held") and held.json()["expires_at"]
    assert http.post("/v1/orders/o1/confirm").json()["status"] == "confirmed"
    assert http.post("/v1/orders/o1/confirm").status_code == 200  # twice is fine
    assert http.delete("/v1/orders/o1").json()["status"] == "cancelled"
    assert remaining(http, "van") == 3
    again = http.post("/v1/orders/o1/confirm")
    assert (again.status_code, again.json()["error"]["code"]) == (409, "order_not_held")
    assert http.get("/v1/orders/nope").status_code == 404
    assert http.delete("/v1/orders/nope").status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"lines": []}, 422, "invalid_request"),
        ({"lines": [{"pool_id": "van"}, {"pool_id": "van"}]}, 422, "invalid_request"),
        ({"lines": [{"pool_id": f"p{i}"} for i in range(21)]}, 422, "invalid_request"),
        ({"lines": [{"pool_id": "van", "quantity": 0}]}, 422, "invalid_request"),
        ({"lines": [{"pool_id": "van"}], "extra": 1}, 422, "invalid_request"),
        ({"order_id": "bad id", "lines": [{"pool_id": "van"}]}, 422, "invalid_request"),
        ({"lines": [{"pool_id": "van"}, {"pool_id": "ghost"}]}, 409, "order_line_refused"),
    ],
    ids=["empty", "pool-twice", "21-lines", "zero", "unknown-field", "bad-order-id", "unknown-pool"],
)
def test_a_bad_order_is_a_4xx_and_takes_nothing(
    http: TestClient, body: dict[str, object], status: int, code: str
) -> None:
    answer = http.post("/v1/orders", json=body)
    assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), answer.text
    assert remaining(http, "van") == 3


def test_the_order_routes_are_in_the_openapi_document(http: TestClient) -> None:
    paths = http.get("/openapi.json").json()["paths"]
    assert {"post"} <= set(paths["/v1/orders"]) and {"get", "delete"} <= set(paths["/v1/orders/{order_id}"])
    assert "post" in paths["/v1/orders/{order_id}/confirm"]


def test_an_order_mixes_named_and_chosen_lines_and_names_the_pool_each_took(http: TestClient) -> None:
    for hour in ("08", "10"):
        body = {"capacity": 1, "zone": "south", "slot_start": f"2026-12-01T{hour}:00:00Z"}
        assert http.put(f"/v1/pools/south:{hour}", json=body).status_code == 201
    chosen = {"choose": {"zone": "south", "quantity": 1, "prefer": "earliest"}}
    first = http.post("/v1/orders", json={"order_id": "o1", "lines": [{"pool_id": "van"}, chosen]})
    assert first.status_code == 201, first.text
    assert [line["pool_id"] for line in first.json()["lines"]] == ["van", "south:08"]
    second = http.post("/v1/orders", json={"order_id": "o2", "lines": [chosen]})
    assert second.json()["lines"][0]["pool_id"] == "south:10"  # the earliest is full now
    none_left = http.post("/v1/orders", json={"order_id": "o3", "lines": [{"pool_id": "van"}, chosen]})
    error = none_left.json()["error"]
    assert (none_left.status_code, error["line"], error["line_error"]) == (409, 1, "no_capacity_in_window")
    assert remaining(http, "van") == 2  # o3 took nothing
    both = http.post("/v1/orders", json={"lines": [{"pool_id": "van", "choose": chosen["choose"]}]})
    assert both.status_code == 422


def test_an_order_placed_without_an_id_gets_one_that_sorts_after_earlier_ones(http: TestClient) -> None:
    placed = http.post("/v1/orders", json={"lines": [{"pool_id": "van"}]})
    order_id = placed.json()["order_id"]
    assert placed.status_code == 201 and re.fullmatch(r"auto-[0-9a-f]{32}", order_id)
    assert http.get(f"/v1/orders/{order_id}").json()["status"] == "confirmed"
    earlier, later = new_order_id(lambda: 1_800_000_000.0), new_order_id(lambda: 1_800_000_000.001)
    assert earlier < later and earlier[:17] == f"auto-{1_800_000_000_000:012x}"
    assert len({new_order_id(lambda: 1_800_000_000.0) for _ in range(100)}) == 100  # random after the time


def test_a_reserve_may_not_use_an_orders_request_id(http: TestClient) -> None:
    taken = http.post("/v1/reservations", json={"pool_id": "van", "request_id": "order:o1:0:0"})
    assert (taken.status_code, taken.json()["error"]["code"]) == (422, "invalid_request")
    assert remaining(http, "van") == 3


def test_pools_the_local_cache_lists_as_selling_are_not_asked_before_an_order() -> None:
    backend = InProcessBackend()
    asked: list[str] = []
    view = backend.router.view

    async def counted_view(pool_id: str) -> object:
        asked.append(pool_id)
        return await view(pool_id)

    backend.router.view = counted_view  # type: ignore[method-assign,assignment]
    with TestClient(create_app(backend)) as http:
        for pool_id in ("van", "old"):
            http.put(f"/v1/pools/{pool_id}", json={"capacity": 3, "zone": "north"})
        http.delete("/v1/pools/old")
        assert http.post("/v1/orders", json={"lines": [{"pool_id": "van"}]}).status_code == 201
        assert asked == []  # listed and selling in the cache: the pool decides, no question first
        refused = http.post("/v1/orders", json={"lines": [{"pool_id": "old"}]})
        assert (refused.status_code, refused.json()["error"]["line_error"]) == (409, "pool_retired")
        assert asked == ["old"]  # retired in the cache: the pool itself is asked
