"""The schedules' calls over HTTP, in process: a put answered 202 (with where to follow it) whose pools are
then created, its progress read back, the same template put while it applies answered 200, and the errors
(422 for a bad template or a million pools, creating nothing; 404; admin only)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from capacity_service.entrypoints.http.app import create_app
from capacity_service.settings import HttpSettings
from tests.support.in_process import InProcessBackend

TEMPLATE: dict[str, Any] = {
    "zones": [{"zone": "north", "capacity": 20}, {"zone": "south", "capacity": 12, "slot_capacity": {"18:30": 6}}],
    "slot_starts": ["08:00", "18:30"],
    "slot_minutes": 120,
    "from": "2026-12-01",
    "to": "2026-12-10",
}


@pytest.fixture(scope="module")
def backend() -> InProcessBackend:
    return InProcessBackend()


@pytest.fixture(scope="module")
def http(backend: InProcessBackend) -> Iterator[TestClient]:  # one app for the module: building one takes 0.5 s
    with TestClient(create_app(backend, HttpSettings())) as client:
        yield client


def applied(http: TestClient, schedule_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        schedule: dict[str, Any] = http.get(f"/v1/schedules/{schedule_id}").json()
        if schedule["status"] == "applied":
            return schedule
        assert time.monotonic() < deadline, schedule
        time.sleep(0.01)


def test_a_put_is_accepted_and_applied_in_the_background_and_shows_its_progress(http: TestClient) -> None:
    put = http.put("/v1/schedules/december", json=TEMPLATE)
    assert put.status_code == 202, put.text
    assert put.headers["location"] == "/v1/schedules/december"
    started = put.json()
    assert (started["status"], started["generation"], started["total"]) == ("applying", 1, 40)
    assert started["template"]["from"] == "2026-12-01" and started["template"]["weekdays"][0] == "mon"
    done = applied(http, "december")
    assert (done["done"], done["created"], done["refused"], done["refusals"]) == (40, 40, 0, [])
    assert done["finished_at"] is not None and done["last_error"] is None
    pool = http.get("/v1/pools/south:2026-12-10T18:30").json()
    assert (pool["capacity"], pool["slot_start"], pool["slot_end"]) == (
        6,
        "2026-12-10T18:30:00Z",
        "2026-12-10T20:30:00Z",
    )
    again = http.put("/v1/schedules/december", json=TEMPLATE)
    assert again.status_code == 202 and again.json()["generation"] == 2
    assert (applied(http, "december")["unchanged"], http.get("/v1/pools/south:2026-12-10T18:30").json()["version"]) == (
        40,
        1,
    )


def test_the_same_template_put_while_it_applies_starts_nothing_new(http: TestClient, backend: InProcessBackend) -> None:
    backend.router.schedule_batches.held = True
    try:
        first = http.put("/v1/schedules/pickers", json={**TEMPLATE, "id_prefix": "pickers:"})
        repeat = http.put("/v1/schedules/pickers", json={**TEMPLATE, "id_prefix": "pickers:"})
    finally:
        backend.router.schedule_batches.held = False
    assert (first.status_code, repeat.status_code) == (202, 200)
    assert repeat.json()["generation"] == 1 and repeat.json()["status"] == "applying"
    assert applied(http, "pickers")["created"] == 40


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"to": "2026-11-30"}, "to must not be before from"),
        ({"from": "2026-12-01T00:00:00Z"}, "from"),
        ({"slot_starts": ["8:00"]}, "slot_starts.0"),
        ({"zones": [{"zone": "north", "capacity": "20"}]}, "zones.0.capacity"),
        ({"zones": [{"zone": "north", "capacity": 20}, {"zone": "north", "capacity": 1}]}, "each zone once"),
        ({"time_zone": "Mars/Olympus_Mons"}, "time_zone"),
        ({"surprise": 1}, "surprise"),
        (
            {
                "zones": [{"zone": f"zone-{k}", "capacity": 5} for k in range(200)],
                "slot_starts": [f"{h:02d}:00" for h in range(24)],
                "from": "2026-01-01",
                "to": "2026-12-31",
            },
            "the template describes 1,752,000 pools (200 zones x 24 slots a day x 365 days); one schedule may "
            "describe at most 100,000",
        ),
    ],
)
def test_a_bad_template_is_a_422_that_creates_nothing(
    http: TestClient, backend: InProcessBackend, change: dict[str, Any], says: str
) -> None:
    streams = list(backend.journal.pool_ids())
    answer = http.put("/v1/schedules/refused", json={**TEMPLATE, **change})
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "invalid_request" and says in answer.json()["error"]["message"]
    assert http.get("/v1/schedules/refused").status_code == 404
    assert list(backend.journal.pool_ids()) == streams


def test_a_schedule_never_put_is_a_404_that_creates_nothing(http: TestClient, backend: InProcessBackend) -> None:
    streams = list(backend.journal.pool_ids())
    missing = http.get("/v1/schedules/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "schedule_not_found"
    assert http.get("/v1/schedules/bad%20id").status_code == 422
    assert list(backend.journal.pool_ids()) == streams


def test_schedules_need_an_admin_key_when_keys_are_configured() -> None:
    settings = HttpSettings(api_keys=[SecretStr("user-key")], admin_keys=[SecretStr("admin-key")])
    with TestClient(create_app(InProcessBackend(), settings)) as http:
        user = {"authorization": "Bearer user-key"}
        admin = {"authorization": "Bearer admin-key"}
        assert http.put("/v1/schedules/december", json=TEMPLATE, headers=user).status_code == 403
        assert http.get("/v1/schedules/december", headers=user).status_code == 403
        assert http.put("/v1/schedules/december", json=TEMPLATE).status_code == 401
        assert http.put("/v1/schedules/december", json=TEMPLATE, headers=admin).status_code == 202


def test_the_schedule_routes_are_in_the_openapi_document(http: TestClient) -> None:
    paths = http.get("/openapi.json").json()["paths"]
    assert set(paths["/v1/schedules/{schedule_id}"]) == {"put", "get"}
