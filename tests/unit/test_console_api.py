"""What the operator's console reads, over HTTP in process: a pool's history (its events with the times the
journal recorded them, the pool at a past moment), the zones, several zones in one availability stream, and
the console's own files (served without a key, holding no data, shipped in the package)."""

from __future__ import annotations

import asyncio
import re
import tomllib
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from capacity_service.entrypoints.http.app import create_app
from capacity_service.entrypoints.http.operator_console import FILES
from capacity_service.settings import HttpSettings
from tests.support.in_process import InProcessBackend
from tests.unit.test_http_stream import events

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def http() -> Iterator[TestClient]:
    with TestClient(create_app(InProcessBackend(), HttpSettings(stream_heartbeat_s=1))) as client:
        yield client


def history(http: TestClient, pool_id: str, **query: Any) -> dict[str, Any]:
    answer = http.get(f"/v1/admin/pools/{pool_id}/history", params=query)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def reserve(http: TestClient, pool_id: str, **extra: Any) -> dict[str, Any]:
    answer = http.post("/v1/reservations", json={"pool_id": pool_id, **extra})
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def test_a_pools_history_lists_its_events_newest_first_with_their_recorded_times(http: TestClient) -> None:
    http.put("/v1/pools/p1", json={"capacity": 5, "zone": "north"})
    taken = reserve(http, "p1", quantity=2)
    http.post("/v1/admin/pools/p1/pause", json={"reason": "van broke down"})
    now = history(http, "p1")
    assert [e["type"] for e in now["events"]] == ["PoolPaused", "CapacityReserved", "PoolConfigured"]
    assert [e["seq_nr"] for e in now["events"]] == [3, 2, 1]
    assert now["events"][0]["data"] == {"reason": "van broke down"}
    assert now["events"][1]["data"]["reservation_id"] == taken["reservation_id"]
    times = [datetime.fromisoformat(e["recorded_at"]) for e in now["events"]]
    assert times == sorted(times, reverse=True) and times[0] <= datetime.now(times[0].tzinfo)
    oldest, newest = now["events"][2]["recorded_at"], now["events"][0]["recorded_at"]
    assert (now["first_recorded_at"], now["last_recorded_at"]) == (oldest, newest)
    assert (now["at"], now["seq_nr"], now["last_seq_nr"], now["paused_reason"]) == (None, 3, 3, "van broke down")
    assert (now["pool"]["capacity"], now["pool"]["reserved"], now["pool"]["paused"]) == (5, 2, True)
    assert now["reservations"] == [http.get(f"/v1/reservations/{taken['reservation_id']}").json()]


def test_a_pools_history_shows_it_as_it_was_at_a_past_moment(http: TestClient) -> None:
    http.put("/v1/pools/p1", json={"capacity": 5, "zone": "north"})
    reserve(http, "p1", quantity=2)
    http.put("/v1/pools/p1", json={"capacity": 9, "zone": "north"})
    recorded = [e["recorded_at"] for e in reversed(history(http, "p1")["events"])]
    at_first = history(http, "p1", at=recorded[0])
    assert (at_first["seq_nr"], at_first["last_seq_nr"]) == (1, 3)
    assert (at_first["pool"]["capacity"], at_first["pool"]["reserved"], at_first["pool"]["version"]) == (5, 0, 1)
    assert [e["seq_nr"] for e in at_first["events"]] == [1] and at_first["reservations"] == []
    assert at_first["last_recorded_at"] == recorded[2]  # the slider's range is the whole stream's
    at_second = history(http, "p1", at=recorded[1])
    assert (at_second["pool"]["capacity"], at_second["pool"]["reserved"]) == (5, 2)
    assert history(http, "p1")["pool"]["capacity"] == 9
    before = datetime.fromisoformat(recorded[0]) - timedelta(seconds=1)
    not_yet = history(http, "p1", at=before.isoformat())
    assert (not_yet["seq_nr"], not_yet["pool"], not_yet["events"]) == (0, None, [])
    naive = history(http, "p1", at=datetime.fromisoformat(recorded[2]).replace(tzinfo=None).isoformat())
    assert naive["seq_nr"] == 3  # a moment without an offset is UTC


def test_a_pools_history_lists_its_holds_waitlist_and_reservations_then(http: TestClient) -> None:
    http.put("/v1/pools/p1", json={"capacity": 3, "zone": "north"})
    active = reserve(http, "p1", quantity=1)
    late = reserve(http, "p1", quantity=1, hold_seconds=900)
    soon = reserve(http, "p1", quantity=1, hold_seconds=300)
    joined = http.post("/v1/pools/p1/waitlist", json={"quantity": 2, "request_id": "cust-7"})
    assert joined.status_code == 202, joined.text
    now = history(http, "p1")
    assert [h["reservation_id"] for h in now["holds"]] == [soon["reservation_id"], late["reservation_id"]]
    assert [r["reservation_id"] for r in now["reservations"]] == [
        soon["reservation_id"],
        late["reservation_id"],
        active["reservation_id"],
    ]
    assert [(w["request_id"], w["position"], w["status"]) for w in now["waitlist"]] == [("cust-7", 1, "waiting")]
    assert now["pool"]["waiting"] == 1
    short = history(http, "p1", limit=1)
    assert [len(short[k]) for k in ("holds", "reservations", "waitlist", "events")] == [1, 1, 1, 1]


def test_a_long_history_is_paged_back_with_before(http: TestClient) -> None:
    http.put("/v1/pools/p1", json={"capacity": 50, "zone": "north"})
    for _ in range(6):
        reserve(http, "p1")
    first = history(http, "p1", limit=3)
    assert [e["seq_nr"] for e in first["events"]] == [7, 6, 5]
    older = history(http, "p1", limit=3, before=5)
    assert [e["seq_nr"] for e in older["events"]] == [4, 3, 2]
    assert older["pool"]["reserved"] == 6  # the pool at `at` (now), whatever page of events
    assert [e["seq_nr"] for e in history(http, "p1", limit=3, before=2)["events"]] == [1]
    fourth = history(http, "p1", limit=1, before=5)["events"][0]
    then = history(http, "p1", at=fourth["recorded_at"], limit=2)
    assert ([e["seq_nr"] for e in then["events"]], then["pool"]["reserved"], then["last_seq_nr"]) == ([4, 3], 3, 7)
    earlier = history(http, "p1", at=fourth["recorded_at"], limit=2, before=3)
    assert [e["seq_nr"] for e in earlier["events"]] == [2, 1]


def test_a_retired_pool_that_is_no_longer_hosted_keeps_its_history(http: TestClient) -> None:
    http.put("/v1/pools/p1", json={"capacity": 5, "zone": "north"})
    http.delete("/v1/pools/p1")
    asyncio.run(asyncio.sleep(0.05))
    retired = history(http, "p1")
    assert retired["pool"]["state"] == "retired" and retired["events"][0]["type"] == "PoolRetired"


def test_bad_history_requests_are_refused_in_words(http: TestClient) -> None:
    http.put("/v1/pools/p1", json={"capacity": 5, "zone": "north"})
    unknown = http.get("/v1/admin/pools/nope/history")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "pool_not_found")
    for query in ({"at": "1700000000"}, {"at": "yesterday"}, {"limit": 0}, {"limit": 501}, {"before": 0}):
        refused = http.get("/v1/admin/pools/p1/history", params=query)
        assert (refused.status_code, refused.json()["error"]["code"]) == (422, "invalid_request"), query
    assert "RFC 3339" in http.get("/v1/admin/pools/p1/history", params={"at": "1700000000"}).text


def test_the_zones_are_listed_by_name_with_their_pools_counts_and_paged(http: TestClient) -> None:
    for pool_id, capacity, zone in [("a1", 5, "alpha"), ("a2", 1, "alpha"), ("b1", 3, "beta"), ("c1", 2, "gamma")]:
        http.put(f"/v1/pools/{pool_id}", json={"capacity": capacity, "zone": zone})
    reserve(http, "a2")
    http.post("/v1/admin/pools/b1/pause", json={"reason": "x"})
    http.put("/v1/pools/r1", json={"capacity": 4, "zone": "retired-only"})
    http.delete("/v1/pools/r1")
    every = http.get("/v1/admin/zones").json()
    assert every == {
        "zones": [
            {"zone": "alpha", "pools": 2, "remaining": 5, "sold_out": 1, "paused": 0},
            {"zone": "beta", "pools": 1, "remaining": 3, "sold_out": 0, "paused": 1},
            {"zone": "gamma", "pools": 1, "remaining": 2, "sold_out": 0, "paused": 0},
        ],
        "next_after": None,
    }
    first = http.get("/v1/admin/zones", params={"limit": 2}).json()
    assert ([z["zone"] for z in first["zones"]], first["next_after"]) == (["alpha", "beta"], "beta")
    rest = http.get("/v1/admin/zones", params={"limit": 2, "after": "beta"}).json()
    assert ([z["zone"] for z in rest["zones"]], rest["next_after"]) == (["gamma"], None)
    assert http.get("/v1/admin/zones", params={"after": "zzz"}).json() == {"zones": [], "next_after": None}
    for query in ({"limit": 0}, {"limit": 1001}, {"after": ""}):
        assert http.get("/v1/admin/zones", params=query).status_code == 422, query


def test_one_stream_follows_several_zones(http: TestClient) -> None:
    for pool_id, zone in [("n", "north"), ("s", "south"), ("e", "east")]:
        http.put(f"/v1/pools/{pool_id}", json={"capacity": 3, "zone": zone})
    with http.stream("GET", "/v1/availability/stream", params=[("zone", "south"), ("zone", "north")]) as stream:
        lines = stream.iter_lines()
        assert sorted(str(data["pool_id"]) for _, data in events(lines, 2)) == ["n", "s"]
        reserve(http, "e")  # a zone not watched
        reserve(http, "s")
        reserve(http, "n", quantity=2)
        changes = [(data["pool_id"], data["remaining"]) for _, data in events(lines, 2)]
        assert changes == [("s", 2), ("n", 1)]
    too_many = [("zone", f"z{k}") for k in range(51)]
    assert http.get("/v1/availability/stream", params=too_many).status_code == 422


def test_the_console_is_served_without_a_key_and_holds_no_data() -> None:
    keys = HttpSettings(api_keys=[SecretStr("user-key")], admin_keys=[SecretStr("k-51c2e9d4")])
    with TestClient(create_app(InProcessBackend(), keys)) as http:
        admin = {"authorization": "Bearer k-51c2e9d4"}
        http.put("/v1/pools/p-7f3a9", json={"capacity": 5, "zone": "z-0c4e1"}, headers=admin)
        assert http.get("/console", follow_redirects=False).headers["location"].endswith("/console/")
        page = http.get("/console/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        for name in re.findall(r'(?:src|href)="([\w.]+\.(?:js|css))"', page.text):
            assert http.get(f"/console/{name}").status_code == 200, name
        served = "".join(http.get(f"/console/{path.name}").text for path in FILES.iterdir())
        assert not {"p-7f3a9", "z-0c4e1", "k-51c2e9d4"} & set(re.findall(r"[\w-]+", served))
        assert http.get("/v1/admin/zones").status_code == 401  # the data needs the key
        assert http.get("/v1/admin/zones", headers={"authorization": "Bearer user-key"}).status_code == 403
        missing = http.get("/console/nothing.js")
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")


def test_the_package_ships_every_console_file() -> None:
    """The wheel takes the files that ``[tool.setuptools.package-data]`` names (the package's Python files
    aside): each console file must match one of its patterns."""
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    package = FILES.parent
    patterns = package_data[".".join(package.relative_to(ROOT).parts)]
    files = [path.relative_to(package) for path in FILES.iterdir()]
    assert {"index.html", "console.js", "console.css"} <= {path.name for path in files}
    assert all(any(path.match(pattern) for pattern in patterns) for path in files)
