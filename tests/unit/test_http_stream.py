"""The availability stream over the HTTP contract, against the app with the in-process backend (no Ray):
the zone's picture, then its changes, with ids a reconnect continues from; 429 beyond the clients bound."""

from __future__ import annotations

import json
from collections.abc import Iterator

from fastapi.testclient import TestClient

from capacity_service.entrypoints.http.app import create_app
from capacity_service.settings import HttpSettings
from tests.support.in_process import InProcessBackend


def events(lines: Iterator[str], count: int) -> list[tuple[str, dict[str, object]]]:
    """The next ``count`` events of an SSE stream, as (id, data)."""
    found: list[tuple[str, dict[str, object]]] = []
    event_id = ""
    for line in lines:
        if line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            found.append((event_id, json.loads(line[6:])))
            if len(found) == count:
                break
    return found


def test_a_client_gets_the_picture_then_each_change_and_continues_after_a_reconnect() -> None:
    with TestClient(create_app(InProcessBackend(), HttpSettings(stream_heartbeat_s=1))) as http:
        http.put("/v1/pools/a", json={"capacity": 3, "zone": "north"})
        http.put("/v1/pools/s", json={"capacity": 3, "zone": "south"})
        with http.stream("GET", "/v1/availability/stream", params={"zone": "north"}) as stream:
            assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.iter_lines()
            [(_, picture)] = events(lines, 1)
            assert (picture["pool_id"], picture["remaining"], picture["state"]) == ("a", 3, "active")
            http.post("/v1/reservations", json={"pool_id": "s"})  # another zone: not in this stream
            http.post("/v1/reservations", json={"pool_id": "a", "quantity": 2})
            [(change_id, change)] = events(lines, 1)
            assert (change["pool_id"], change["remaining"]) == ("a", 1)
        http.delete("/v1/pools/a")  # while the client is away
        headers = {"Last-Event-ID": change_id}
        with http.stream("GET", "/v1/availability/stream", params={"zone": "north"}, headers=headers) as again:
            [(_, missed)] = events(again.iter_lines(), 1)
            assert (missed["pool_id"], missed["state"]) == ("a", "retired")  # only what it missed


def test_stream_clients_beyond_the_bound_are_refused_with_429() -> None:
    backend = InProcessBackend()  # its feed takes 4 clients
    watchers = [backend.watch_availability(["north"], None) for _ in range(4)]
    with TestClient(create_app(backend)) as http:
        refused = http.get("/v1/availability/stream", params={"zone": "north"})
        assert (refused.status_code, refused.json()["error"]["code"]) == (429, "overloaded")
        assert http.get("/v1/availability/stream").status_code == 422  # zone is required
    for watcher in watchers:
        watcher.close()
