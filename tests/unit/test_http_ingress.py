"""The fast lane ahead of Serve (``http/ingress.py``): which requests it answers itself and which it leaves
to Serve, with a stand-in for Serve's per-request wrapper (no Ray)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from capacity_service.entrypoints.http import ingress
from capacity_service.entrypoints.http.app import create_app
from capacity_service.entrypoints.http.edge import Edge
from tests.support.in_process import InProcessBackend


class StandInForServe:
    """What Serve's wrapper does for this test: count the request, then call the deployment's app."""

    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        self.paths: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.paths.append(f"{scope['method']} {scope['path']}")
        await self.edge(scope, receive, send)


@pytest.fixture(autouse=True)
def nothing_mounted() -> Iterator[None]:
    ingress._mounted = None
    yield
    ingress._mounted = None


def client(app: ingress.FastLaneMiddleware) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def reserve_and_query(serve: StandInForServe) -> list[int]:
    async with client(ingress.FastLaneMiddleware(serve)) as http:
        statuses = [(await http.put("/v1/pools/north:0800", json={"capacity": 2, "zone": "north"})).status_code]
        for body in ({"pool_id": "north:0800", "quantity": 1}, {"pool_id": "north:0800", "quantity": 5}, {"x": 1}):
            statuses.append((await http.post("/v1/reservations", json=body)).status_code)
        statuses.append((await http.post("/v1/availability", json={"zone": "north"})).status_code)
        statuses.append((await http.get("/v1/pools/north:0800")).status_code)
    return statuses


def test_a_mounted_edge_answers_every_request_ahead_of_serve() -> None:
    serve = StandInForServe(create_app(InProcessBackend()))

    async def scenario() -> list[int]:
        ingress.serve_fast_lane(serve.edge)
        return await reserve_and_query(serve)

    # Same answers as through Serve: created, reserved, over capacity, bad input, availability, the pool.
    assert asyncio.run(scenario()) == [201, 201, 409, 422, 200, 200]
    assert serve.paths == []  # Serve's per-request wrapper saw none of them


def test_without_a_mounted_edge_every_request_goes_through_serve() -> None:
    serve = StandInForServe(create_app(InProcessBackend()))
    assert asyncio.run(reserve_and_query(serve)) == [201, 201, 409, 422, 200, 200]
    assert len(serve.paths) == 6


def test_an_edge_mounted_on_another_event_loop_is_not_called_from_this_one() -> None:
    # Its router's futures and channels belong to its own loop.
    serve = StandInForServe(create_app(InProcessBackend()))

    async def mount() -> None:
        ingress.serve_fast_lane(serve.edge)

    asyncio.run(mount())
    assert asyncio.run(reserve_and_query(serve)) == [201, 201, 409, 422, 200, 200]
    assert len(serve.paths) == 6


def test_serve_gets_the_middleware_through_its_callback() -> None:
    [middleware] = ingress.middlewares()
    cls: object = middleware.cls  # starlette types it as a middleware factory
    assert cls is ingress.FastLaneMiddleware
