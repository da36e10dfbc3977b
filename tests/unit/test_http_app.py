"""The HTTP contract, status code by status code, against the app with the in-process backend (no Ray).
The same contract runs over real HTTP on Ray Serve in tests/e2e."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from capacity_service.adapters.journal import JournalUnavailable
from capacity_service.entrypoints.http.app import create_app
from capacity_service.settings import HttpSettings, WriteSideSettings
from tests.support.in_process import InProcessBackend


@pytest.fixture
def backend() -> InProcessBackend:
    return InProcessBackend()


@pytest.fixture
def http(backend: InProcessBackend) -> Iterator[TestClient]:
    with TestClient(create_app(backend, HttpSettings(max_body_bytes=4096))) as client:
        yield client


def error_code(response: object) -> str:
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"} and set(body["error"]) - {"request_id"} == {"code", "message"}, body
    return str(body["error"]["code"])


def put_pool(http: TestClient, pool_id: str = "north:0800", capacity: int = 10, **extra: object) -> dict:  # type: ignore[type-arg]
    response = http.put(f"/v1/pools/{pool_id}", json={"capacity": capacity, "zone": "north", **extra})
    assert response.status_code in (200, 201), response.text
    return dict(response.json())


def test_put_pool_creates_then_updates(http: TestClient) -> None:
    first = http.put(
        "/v1/pools/p1",
        json={
            "capacity": 5,
            "zone": "north",
            "slot_start": "2026-12-01T08:00:00Z",
            "slot_end": "2026-12-01T10:00:00+00:00",
        },
    )
    assert first.status_code == 201
    assert first.json() == {
        "pool_id": "p1",
        "zone": "north",
        "slot_start": "2026-12-01T08:00:00Z",
        "slot_end": "2026-12-01T10:00:00Z",
        "capacity": 5,
        "reserved": 0,
        "remaining": 5,
        "version": 1,
        "state": "active",
        "paused": False,
        "max_hold_seconds": 86_400,
        "waitlist_limit": 10_000,
        "waiting": 0,
    }
    again = http.put("/v1/pools/p1", json={"capacity": 7, "zone": "north"})
    assert again.status_code == 200 and again.json()["capacity"] == 7
    assert http.get("/v1/pools/p1").json()["capacity"] == 7


def test_unknown_pool_is_404(http: TestClient) -> None:
    response = http.get("/v1/pools/nope")
    assert response.status_code == 404 and error_code(response) == "pool_not_found"
    reserve = http.post("/v1/reservations", json={"pool_id": "nope"})
    assert reserve.status_code == 404 and error_code(reserve) == "pool_not_found"


def test_reserve_release_and_reservation_status(http: TestClient) -> None:
    put_pool(http, capacity=3)
    reserved = http.post("/v1/reservations", json={"pool_id": "north:0800", "quantity": 2})
    assert reserved.status_code == 201
    body = reserved.json()
    assert set(body) == {"reservation_id", "pool_id", "quantity", "remaining", "request_id", "status", "expires_at"}
    assert (body["pool_id"], body["quantity"], body["remaining"]) == ("north:0800", 2, 1)
    assert (body["status"], body["expires_at"]) == ("active", None)  # v1.1 fields: not a hold
    assert body["request_id"].startswith("auto:")  # made by the service: the id a retry would settle it with
    rid = body["reservation_id"]
    assert http.get(f"/v1/reservations/{rid}").json() == {
        "reservation_id": rid,
        "pool_id": "north:0800",
        "quantity": 2,
        "status": "active",
        "expires_at": None,
    }
    full = http.post("/v1/reservations", json={"pool_id": "north:0800", "quantity": 2})
    assert full.status_code == 409 and error_code(full) == "insufficient_capacity"
    for _ in range(2):
        released = http.delete(f"/v1/reservations/{rid}")
        assert released.status_code == 200
        assert released.json() == {"reservation_id": rid, "pool_id": "north:0800", "status": "released"}
    assert http.get(f"/v1/reservations/{rid}").json()["status"] == "released"
    assert http.get("/v1/pools/north:0800").json()["remaining"] == 3


def test_reserve_is_idempotent_on_request_id(http: TestClient) -> None:
    put_pool(http, capacity=10)
    first = http.post("/v1/reservations", json={"pool_id": "north:0800", "quantity": 4, "request_id": "o-1"})
    again = http.post("/v1/reservations", json={"pool_id": "north:0800", "quantity": 4, "request_id": "o-1"})
    assert first.status_code == again.status_code == 201
    assert first.json()["reservation_id"] == again.json()["reservation_id"]
    assert http.get("/v1/pools/north:0800").json()["reserved"] == 4
    other = http.post("/v1/reservations", json={"pool_id": "north:0800", "quantity": 5, "request_id": "o-1"})
    assert other.status_code == 409 and error_code(other) == "request_id_conflict"


def test_a_chosen_reserve_takes_the_best_fitting_pool_and_names_it(http: TestClient, backend: InProcessBackend) -> None:
    put_pool(http, "n-08", 1, slot_start="2026-12-01T08:00:00Z", slot_end="2026-12-01T10:00:00Z")
    put_pool(http, "n-10", 4, slot_start="2026-12-01T10:00:00Z", slot_end="2026-12-01T12:00:00Z")
    put_pool(http, "n-12", 3, slot_start="2026-12-01T12:00:00Z", slot_end="2026-12-01T14:00:00Z")
    window = {"zone": "north", "from": "2026-12-01T09:00:00Z", "to": "2026-12-01T13:00:00Z"}

    def reserve(**body: object) -> Any:
        return http.post("/v1/reservations", json=body)

    earliest = reserve(choose={**window, "quantity": 2}, request_id="c-1")
    assert earliest.status_code == 201, earliest.text
    body = earliest.json()
    assert (body["pool_id"], body["quantity"], body["remaining"], body["request_id"]) == ("n-10", 2, 2, "c-1")
    assert http.get(f"/v1/reservations/{body['reservation_id']}").json()["pool_id"] == "n-10"
    again = reserve(choose={**window, "quantity": 2}, request_id="c-1")
    assert again.status_code == 201 and again.json()["reservation_id"] == body["reservation_id"]
    most = reserve(choose={**window, "prefer": "most_remaining"}, hold_seconds=60)
    assert most.status_code == 201 and (most.json()["pool_id"], most.json()["status"]) == ("n-12", "held")
    assert most.json()["request_id"].startswith("auto:")
    assert [http.get(f"/v1/pools/{p}").json()["reserved"] for p in ("n-08", "n-10", "n-12")] == [0, 2, 1]

    none_left = reserve(choose={**window, "quantity": 3}, request_id="c-2")
    assert none_left.status_code == 409 and error_code(none_left) == "no_capacity_in_window"
    assert none_left.json()["error"]["request_id"] == "c-2"
    elsewhere = reserve(choose={"zone": "south"})
    assert elsewhere.status_code == 409 and error_code(elsewhere) == "no_capacity_in_window"
    assert [backend.journal.highest_seq_nr(p) for p in ("n-08", "n-10", "n-12")] == [1, 2, 2]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"pool_id": "p1", "choose": {"zone": "north"}}, "body: pool_id or choose, not both"),
        ({"request_id": "r"}, "body: pool_id (a named pool) or choose (any pool that fits) needed"),
        ({"choose": {"zone": "north"}, "quantity": 2}, "quantity goes inside it"),
        ({"choose": {"zone": "north", "prefer": "latest"}}, "choose.prefer"),
        ({"pool_id": "p1", "quantity": 0}, "quantity"),
    ],
)
def test_a_reserve_body_says_what_is_wrong_with_it_as_meant(http: TestClient, body: dict[str, Any], says: str) -> None:
    response = http.post("/v1/reservations", json=body)
    assert response.status_code == 422 and says in response.json()["error"]["message"], response.text


@pytest.mark.parametrize("rid", ["garbage", "cDE.short", "x" * 300, "bm9wZQ.AAAAAAAAAAAAAAAAAAAAAA"])
def test_unknown_or_malformed_reservation_ids_are_404(http: TestClient, rid: str) -> None:
    for response in (http.get(f"/v1/reservations/{rid}"), http.delete(f"/v1/reservations/{rid}")):
        assert response.status_code in (404, 422)
        assert error_code(response) in ("reservation_not_found", "invalid_request")


def test_availability_filters_by_zone_slot_and_quantity(http: TestClient) -> None:
    put_pool(http, "n-08", 5, slot_start="2026-12-01T08:00:00Z", slot_end="2026-12-01T10:00:00Z")
    put_pool(http, "n-10", 1, slot_start="2026-12-01T10:00:00Z", slot_end="2026-12-01T12:00:00Z")
    put_pool(http, "n-any", 3)
    http.put("/v1/pools/s-08", json={"capacity": 5, "zone": "south"})

    def ids(**query: object) -> list[str]:
        response = http.post("/v1/availability", json={"zone": "north", **query})
        assert response.status_code == 200, response.text
        return [p["pool_id"] for p in response.json()["pools"]]

    assert ids() == ["n-08", "n-10", "n-any"]
    assert ids(quantity=2) == ["n-08", "n-any"]
    assert ids(slot_from="2026-12-01T10:00:00Z") == ["n-10", "n-any"]
    assert ids(slot_to="2026-12-01T10:00:00Z") == ["n-08", "n-any"]
    assert ids(slot_from="2026-12-01T09:00:00Z", slot_to="2026-12-01T11:00:00Z") == ["n-08", "n-10", "n-any"]
    http.post("/v1/reservations", json={"pool_id": "n-10"})
    assert ids() == ["n-08", "n-any"]
    response = http.post("/v1/availability", json={"zone": "north"}).json()
    assert set(response["pools"][0]) == {"pool_id", "zone", "slot_start", "slot_end", "remaining"}


BAD_REQUESTS = [
    ("put", "/v1/pools/p1", b'{"capacity": 5, "zone": "n"', "malformed JSON"),
    ("put", "/v1/pools/p1", b'{"capacity": "5", "zone": "n"}', "string for int"),
    ("put", "/v1/pools/p1", b'{"capacity": 5.5, "zone": "n"}', "float for int"),
    ("put", "/v1/pools/p1", b'{"capacity": true, "zone": "n"}', "bool for int"),
    ("put", "/v1/pools/p1", b'{"capacity": -1, "zone": "n"}', "negative capacity"),
    ("put", "/v1/pools/p1", b'{"capacity": 5, "zone": "n", "colour": "red"}', "unknown field"),
    ("put", "/v1/pools/p1", b'{"capacity": 5}', "missing zone"),
    ("put", "/v1/pools/p1", b'{"capacity": 5, "zone": ""}', "empty zone"),
    ("put", "/v1/pools/p1", b'{"capacity": 5, "zone": "n", "slot_start": "tomorrow"}', "bad datetime"),
    (
        "put",
        "/v1/pools/p1",
        b'{"capacity": 5, "zone": "n", "slot_start": "2026-12-01T10:00:00Z", "slot_end": "2026-12-01T08:00:00Z"}',
        "slot ends before it starts",
    ),
    ("put", "/v1/pools/bad%20id", b'{"capacity": 5, "zone": "n"}', "pool id with a space"),
    ("put", "/v1/pools/" + "a" * 129, b'{"capacity": 5, "zone": "n"}', "pool id too long"),
    ("put", "/v1/pools/p1", b"[]", "array body"),
    ("put", "/v1/pools/p1", b"", "empty body"),
    ("post", "/v1/reservations", b'{"pool_id": "p1", "quantity": 0}', "zero quantity"),
    ("post", "/v1/reservations", b'{"pool_id": "p1", "quantity": 10000000000}', "huge quantity"),
    ("post", "/v1/reservations", b'{"pool_id": "bad/id"}', "bad pool id in body"),
    ("post", "/v1/reservations", b'{"pool_id": "p1", "request_id": ""}', "empty request id"),
    ("post", "/v1/reservations", b'{"quantity": 1}', "missing pool id"),
    ("post", "/v1/reservations", b'{"pool_id": "p1", "request_id": "a\\u0000b"}', "NUL in request id"),
    ("put", "/v1/pools/p1", b'{"capacity": 5, "zone": "n\\north"}', "newline in zone"),
    ("post", "/v1/availability", b'{"zone": "n", "quantity": 0}', "zero quantity"),
    ("post", "/v1/availability", b'{"zone": 7}', "number for zone"),
    ("post", "/v1/availability", b'{"zone": "n", "extra": 1}', "unknown field"),
    ("post", "/v1/reservations", b'{"pool_id": "p1", "choose": {"zone": "north"}}', "pool and choice"),
    ("post", "/v1/reservations", b'{"request_id": "r"}', "neither pool nor choice"),
    ("post", "/v1/reservations", b'{"choose": {"zone": "north"}, "quantity": 1}', "quantity beside choose"),
    ("post", "/v1/reservations", b'{"choose": {"zone": "north", "quantity": 0}}', "zero quantity chosen"),
    ("post", "/v1/reservations", b'{"choose": {"zone": "north", "prefer": "latest"}}', "unknown preference"),
    ("post", "/v1/reservations", b'{"choose": {"zone": "north", "slot_from": null}}', "slot_from in choose"),
    ("post", "/v1/reservations", b'{"choose": {"zone": "north", "from": "today"}}', "bad datetime in choose"),
    ("post", "/v1/reservations", b'{"choose": {"quantity": 1}}', "choose without zone"),
    (
        "post",
        "/v1/reservations",
        b'{"choose": {"zone": "north", "from": "0001-01-01T00:00:00+05:00"}}',
        "chosen moment out of range",
    ),
    ("get", "/v1/admin/pools/p1/history?at=0001-01-01T00:00:00%2B05:00", b"", "history moment out of range"),
    (
        "put",
        "/v1/pools/p1",
        b'{"capacity": 5, "zone": "north", "slot_start": "0001-01-01T00:00:00+05:00"}',
        "slot out of range",
    ),
    ("post", "/v1/reservations", b'{"choose": "north"}', "choose not an object"),
]


@pytest.mark.parametrize(("method", "path", "body", "why"), BAD_REQUESTS, ids=[b[3] for b in BAD_REQUESTS])
def test_bad_input_is_a_4xx_with_the_error_body_and_changes_nothing(
    http: TestClient, backend: InProcessBackend, method: str, path: str, body: bytes, why: str
) -> None:
    put_pool(http, "p1", 5)
    before = backend.journal.highest_seq_nr("p1")
    response = http.request(method.upper(), path, content=body, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, (why, response.status_code, response.text)
    assert error_code(response) == "invalid_request"
    assert backend.journal.highest_seq_nr("p1") == before
    assert http.get("/v1/pools/p1").json()["capacity"] == 5


@pytest.mark.parametrize("content_type", ["text/plain", None, "application/x-www-form-urlencoded"])
def test_a_body_that_is_not_declared_json_is_refused(
    http: TestClient, backend: InProcessBackend, content_type: str | None
) -> None:
    put_pool(http, "p1", 5)
    headers = {} if content_type is None else {"content-type": content_type}
    for path, body in [("/v1/reservations", b'{"pool_id": "p1"}'), ("/v1/availability", b'{"zone": "north"}')]:
        response = http.post(path, content=body, headers=headers)
        assert response.status_code == 422 and error_code(response) == "invalid_request", response.text
    assert backend.journal.highest_seq_nr("p1") == 1  # only the pool's creation


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/vnd.api+json"])
def test_json_media_types_with_parameters_or_suffixes_are_accepted(http: TestClient, content_type: str) -> None:
    put_pool(http, "p1", 5)
    response = http.post("/v1/reservations", content=b'{"pool_id": "p1"}', headers={"content-type": content_type})
    assert response.status_code == 201 and response.json()["remaining"] == 4


def test_oversized_bodies_are_413(http: TestClient, backend: InProcessBackend) -> None:
    huge = b'{"capacity": 5, "zone": "' + b"n" * 10_000 + b'"}'
    response = http.put("/v1/pools/p1", content=huge, headers={"content-type": "application/json"})
    assert response.status_code == 413 and error_code(response) == "payload_too_large"

    def chunks() -> Iterator[bytes]:  # no content-length: counted as it streams
        yield huge

    streamed = http.put("/v1/pools/p1", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413 and error_code(streamed) == "payload_too_large"
    assert backend.journal.highest_seq_nr("p1") == 0


def test_unknown_routes_and_methods_have_the_error_body(http: TestClient) -> None:
    assert error_code(http.get("/v2/nothing")) == "not_found"
    assert error_code(http.patch("/v1/pools/p1", json={})) == "method_not_allowed"


def test_health_and_readiness(http: TestClient, backend: InProcessBackend) -> None:
    assert http.get("/healthz").json()["status"] == "ok"
    assert http.get("/readyz").status_code == 200
    backend.ready_checks["cache"] = "bootstrapping"
    not_ready = http.get("/readyz")
    assert not_ready.status_code == 503 and not_ready.json()["checks"]["cache"] == "bootstrapping"


def test_openapi_document_describes_the_contract(http: TestClient) -> None:
    spec = http.get("/openapi.json").json()
    paths = spec["paths"]
    assert set(paths) >= {
        "/v1/pools/{pool_id}",
        "/v1/availability",
        "/v1/reservations",
        "/v1/reservations/{reservation_id}",
        "/healthz",
        "/readyz",
    }
    assert set(paths["/v1/pools/{pool_id}"]) == {"get", "put", "delete"}
    assert set(paths["/v1/reservations/{reservation_id}"]) == {"get", "delete"}
    assert {"409", "410"} <= set(paths["/v1/reservations"]["post"]["responses"])
    assert "no_capacity_in_window" in paths["/v1/reservations"]["post"]["responses"]["409"]["description"]
    assert "ErrorBody" in spec["components"]["schemas"]
    reserve_body = paths["/v1/reservations"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    named, chosen = reserve_body["anyOf"]  # one or the other: neither takes the other's fields
    assert named["required"] == ["pool_id"] and named["additionalProperties"] is False
    assert chosen["required"] == ["choose"] and chosen["additionalProperties"] is False
    assert set(chosen["properties"]) == {"choose", "request_id", "hold_seconds"}
    choose = chosen["properties"]["choose"]
    assert set(choose["properties"]) == {"zone", "from", "to", "quantity", "prefer"}
    assert choose["properties"]["prefer"]["enum"] == ["earliest", "most_remaining"]
    assert "$defs" not in json.dumps(spec)  # every nested schema resolves within the document


def test_api_keys_when_configured() -> None:
    settings = HttpSettings(api_keys=["user-key"], admin_keys=["admin-key"])  # type: ignore[list-item]
    with TestClient(create_app(InProcessBackend(), settings)) as http:
        body = {"capacity": 5, "zone": "n"}
        assert error_code(http.put("/v1/pools/p1", json=body)) == "unauthorized"
        user = {"authorization": "Bearer user-key"}
        forbidden = http.put("/v1/pools/p1", json=body, headers=user)
        assert forbidden.status_code == 403 and error_code(forbidden) == "forbidden"
        created = http.put("/v1/pools/p1", json=body, headers={"authorization": "Bearer admin-key"})
        assert created.status_code == 201
        assert http.get("/v1/pools/p1").status_code == 401
        assert http.get("/v1/pools/p1", headers={"authorization": "Bearer wrong"}).status_code == 401
        assert http.get("/v1/pools/p1", headers=user).status_code == 200
        assert http.get("/healthz").status_code == 200  # probes need no key


HOT_CALLS = [
    ("/v1/reservations", b'{"pool_id": "p1", "quantity": 1, "request_id": "r1"}', "application/json", "reserved"),
    ("/v1/reservations", b'{"pool_id": "p1", "quantity": 1, "request_id": "r1"}', "application/json", "repeated"),
    ("/v1/reservations", b'{"pool_id": "p1", "quantity": 1, "request_id": "r1", "x": 1}', "application/json", "extra"),
    ("/v1/reservations", b'{"pool_id": "p1", "quantity": 5}', "application/json", "too much"),
    ("/v1/reservations", b'{"pool_id": "nope"}', "application/json", "unknown pool"),
    ("/v1/reservations", b'{"pool_id": ', "application/json", "broken JSON"),
    ("/v1/reservations", b'{"pool_id": "p1"}', "text/plain", "not JSON"),
    ("/v1/reservations", b'{"choose": {"zone": "south"}, "request_id": "c1"}', "application/json", "none chosen"),
    ("/v1/reservations", b'{"choose": {"zone": "north"}, "pool_id": "p1"}', "application/json", "named and chosen"),
    ("/v1/reservations", b'{"choose": {"zone": "north"}}', "text/plain", "chosen, not JSON"),
    ("/v1/availability", b'{"zone": "north"}', "application/json; charset=utf-8", "available"),
    ("/v1/availability", b'{"zone": "north", "quantity": 2}', "application/json", "none left"),
    ("/v1/availability", b'{"zone": 7}', "application/json", "number for zone"),
]


class _Recorder:
    """An ASGI app in front of another that records which HTTP paths reach it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.paths: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.paths.append(scope["path"])
        await self.app(scope, receive, send)


def _answer(response: Any) -> tuple[int, str, object]:
    body = response.json()
    if isinstance(body, dict):
        body.pop("reservation_id", None)  # minted anew on each side
        for answer in (body, body.get("error", {})):  # made anew on each side when the caller gave none
            if str(answer.get("request_id", "")).startswith("auto:"):
                answer["request_id"] = "auto:"
    return response.status_code, response.headers["content-type"], body


def test_the_fast_lane_answers_the_hot_calls_exactly_as_the_framework_routes() -> None:
    """The edge serves availability and reserve itself (they never reach FastAPI), with the same status,
    content type and body as the FastAPI routes give for the same request, errors included."""
    fast_backend, framework_backend = InProcessBackend(), InProcessBackend()
    edge = create_app(fast_backend)
    recorder = _Recorder(edge.app)
    edge.app = cast(FastAPI, recorder)  # the edge only calls its app as an ASGI app
    framework = create_app(framework_backend).app
    with TestClient(edge) as fast, TestClient(framework) as slow:
        for http in (fast, slow):
            put_pool(http, "p1", 2)
        recorder.paths.clear()
        for path, body, content_type, why in HOT_CALLS:
            answers = [
                _answer(http.post(path, content=body, headers={"content-type": content_type})) for http in (fast, slow)
            ]
            assert answers[0] == answers[1], why
        assert recorder.paths == []
        assert fast_backend.index.query("north", None, None, 1)[0].remaining == 1


def test_an_unexpected_failure_in_the_fast_lane_is_a_500_with_the_error_body(
    backend: InProcessBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_: object) -> None:
        raise RuntimeError("boom: internal detail")

    monkeypatch.setattr(backend, "availability", broken)
    with TestClient(create_app(backend), raise_server_exceptions=False) as http:
        response = http.post("/v1/availability", json={"zone": "north"})
    assert response.status_code == 500 and error_code(response) == "internal_error"
    assert "boom" not in response.text


def test_the_fast_lane_checks_api_keys() -> None:
    settings = HttpSettings(api_keys=["user-key"])  # type: ignore[list-item]
    with TestClient(create_app(InProcessBackend(), settings)) as http:
        for path, body in [("/v1/reservations", {"pool_id": "p1"}), ("/v1/availability", {"zone": "n"})]:
            assert error_code(http.post(path, json=body)) == "unauthorized"
            wrong = http.post(path, json=body, headers={"authorization": "Bearer wrong"})
            assert wrong.status_code == 401
            allowed = http.post(path, json=body, headers={"authorization": "Bearer user-key"})
            assert allowed.status_code in (200, 404), allowed.text  # p1 does not exist: past auth


def test_an_append_the_journal_did_not_confirm_is_a_504_naming_the_request_id(
    backend: InProcessBackend, http: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    put_pool(http, "p1", 5)

    def broken(appends: Any) -> Any:
        raise JournalUnavailable("connection lost during commit")

    monkeypatch.setattr(backend.journal, "append_many", broken)
    unknown = http.post("/v1/reservations", json={"pool_id": "p1", "quantity": 1, "request_id": "order-7"})
    assert unknown.status_code == 504 and error_code(unknown) == "outcome_unknown"
    assert unknown.json()["error"]["request_id"] == "order-7"
    anonymous = http.post("/v1/reservations", json={"pool_id": "p1", "quantity": 1})
    assert anonymous.json()["error"]["request_id"].startswith("auto:")  # the id to repeat it with
    monkeypatch.undo()
    settled = http.post("/v1/reservations", json={"pool_id": "p1", "quantity": 1, "request_id": "order-7"})
    assert settled.status_code == 201 and settled.json()["request_id"] == "order-7"


def test_a_full_pool_queue_is_a_429_with_retry_after_and_takes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = InProcessBackend(WriteSideSettings(max_queued_per_pool=2))
    slow_append = backend.journal.append_many

    def slow(appends: Any) -> Any:
        time.sleep(0.2)
        return slow_append(appends)

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=create_app(backend))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            await http.put("/v1/pools/p1", json={"capacity": 100, "zone": "north"})
            monkeypatch.setattr(backend.journal, "append_many", slow)
            answers = await asyncio.gather(
                *(http.post("/v1/reservations", json={"pool_id": "p1", "quantity": 1}) for _ in range(8))
            )
        statuses = sorted(a.status_code for a in answers)
        assert 201 in statuses and 429 in statuses and set(statuses) == {201, 429}, statuses
        for answer in answers:
            if answer.status_code == 429:
                assert answer.headers["retry-after"] == "1" and error_code(answer) == "overloaded"
        taken = statuses.count(201)
        pool = await asyncio.to_thread(lambda: backend.journal.highest_seq_nr("p1"))
        assert pool == 1 + taken  # the refused ones took nothing

    asyncio.run(scenario())


def test_a_405_names_every_method_of_the_path(http: TestClient) -> None:
    answer = http.patch("/v1/reservations/abc")
    assert answer.status_code == 405 and answer.headers["allow"] == "DELETE, GET"
    assert http.get("/v1/availability").headers["allow"] == "POST"


@pytest.mark.parametrize(
    ("settings", "client", "status"),
    [
        (HttpSettings(), ("10.1.2.3", 4000), 403),  # no keys: a remote client gets nothing
        (HttpSettings(), ("127.0.0.1", 4000), 200),
        (HttpSettings(), ("::1", 4000), 200),
        (HttpSettings(allow_remote_without_keys=True), ("10.1.2.3", 4000), 200),  # said on purpose
        (HttpSettings(api_keys=[SecretStr("k")]), ("10.1.2.3", 4000), 200),  # keys: the key decides
    ],
)
def test_without_keys_only_loopback_clients_are_answered(
    settings: HttpSettings, client: tuple[str, int], status: int
) -> None:
    async def scenario() -> None:
        transport = httpx.ASGITransport(app=create_app(InProcessBackend(), settings), client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            headers = {"authorization": "Bearer k"}
            for answer in (
                await http.get("/v1/pools/p1", headers=headers),
                await http.post("/v1/availability", json={"zone": "north"}, headers=headers),  # the fast lane
            ):
                expected = 404 if status == 200 and answer.request.method == "GET" else status
                assert answer.status_code == expected, answer.text
                if status == 403:
                    assert "loopback clients only" in answer.json()["error"]["message"]

    asyncio.run(scenario())


def test_requests_over_the_replicas_bound_are_refused_at_once_and_probes_still_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend = InProcessBackend()
    slow_append = backend.journal.append_many

    def slow(appends: Any) -> Any:
        time.sleep(0.3)
        return slow_append(appends)

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=create_app(backend, HttpSettings(max_requests_in_flight=3)))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            await http.put("/v1/pools/p1", json={"capacity": 100, "zone": "north"})
            monkeypatch.setattr(backend.journal, "append_many", slow)
            reserves = [
                asyncio.ensure_future(http.post("/v1/reservations", json={"pool_id": "p1", "request_id": f"r{k}"}))
                for k in range(8)
            ]
            await asyncio.sleep(0.1)  # three are in flight now, waiting on the journal
            started = time.monotonic()
            assert (await http.get("/healthz")).status_code == 200
            assert time.monotonic() - started < 0.2  # a probe does not wait for the load
            answers = await asyncio.gather(*reserves)
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [201] * 3 + [429] * 5, statuses
        refused = [a for a in answers if a.status_code == 429]
        assert all(a.headers["retry-after"] in ("1", "2", "3") and error_code(a) == "overloaded" for a in refused)
        # Every reserve answer names the request_id it was handled under, refusals at the door included.
        assert {a.json()["error"]["request_id"] for a in refused} <= {f"r{k}" for k in range(8)}
        assert len({a.json()["error"]["request_id"] for a in refused}) == 5
        assert backend.journal.highest_seq_nr("p1") == 1 + 3  # the refused took nothing

    asyncio.run(scenario())


def test_every_answer_carries_a_request_id_the_clients_when_usable(http: TestClient) -> None:
    made = http.get("/healthz").headers["x-request-id"]
    assert len(made) == 32 and made != http.get("/healthz").headers["x-request-id"]
    assert http.get("/v1/pools/nope", headers={"x-request-id": "trace-7"}).headers["x-request-id"] == "trace-7"
    fast = http.post("/v1/reservations", json={"pool_id": "nope"}, headers={"x-request-id": "trace-8"})
    assert fast.status_code == 404 and fast.headers["x-request-id"] == "trace-8"  # the fast lane too
    unusable = http.get("/healthz", headers={"x-request-id": "x" * 200}).headers["x-request-id"]
    assert len(unusable) == 32  # too long: replaced, not echoed


def test_log_lines_written_while_answering_name_the_request(
    backend: InProcessBackend, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(backend, "get_pool", broken)
    app = create_app(backend, HttpSettings())
    with caplog.at_level("ERROR"), TestClient(app, raise_server_exceptions=False) as http:
        answer = http.get("/v1/pools/north:0800", headers={"x-request-id": "trace-500"})
    assert answer.status_code == 500 and answer.headers["x-request-id"] == "trace-500"
    assert any(r.getMessage().startswith("request_id=trace-500 ") for r in caplog.records), caplog.records
    logging.getLogger("capacity_service.test").error("outside any request")
    assert caplog.records[-1].getMessage() == "outside any request"
