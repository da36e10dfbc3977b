"""The route table (``http/routes.py``) is what FastAPI serves, what the OpenAPI document lists, what the
edge's fast lane answers and which key each route asks for: the views of it cannot drift apart."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, cast

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import SecretStr
from starlette.types import Receive, Scope, Send

from capacity_service.entrypoints.http.app import create_app
from capacity_service.entrypoints.http.edge import Edge
from capacity_service.entrypoints.http.routes import ROUTES, Access, Route, route_of
from capacity_service.settings import HttpSettings
from tests.support.in_process import InProcessBackend

KEYS = HttpSettings(api_keys=[SecretStr("user-key")], admin_keys=[SecretStr("admin-key")])
DOCS_ROUTES = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
CONSOLE = "/console"  # the operator's console: static files, no API operation


def concrete(route: Route) -> str:
    """A path the route's template matches."""
    return re.sub(r"\{[^}]+\}", "x", route.path)


class Recorder:
    """The FastAPI app behind the edge, recording which requests reach it."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.requests: list[tuple[str, str]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.requests.append((scope["method"], scope["path"]))
        await self.app(scope, receive, send)


@pytest.fixture
def edge() -> Edge:
    return create_app(InProcessBackend(), KEYS)


def test_fastapi_serves_exactly_the_tables_routes_hot_ones_first(edge: Edge) -> None:
    served = [
        (route.methods, route.path, route.name, route.status_code, route.response_model, route.tags)
        for route in edge.app.routes
        if isinstance(route, APIRoute)
    ]
    table = [({r.method}, r.path, r.operation, r.status_code, r.response_model, list(r.tags)) for r in ROUTES]
    assert served == table
    others = [getattr(route, "path", None) for route in edge.app.routes if not isinstance(route, APIRoute)]
    assert set(others) == DOCS_ROUTES | {CONSOLE}
    hot = [route for route in ROUTES if route.fast_lane]
    assert [getattr(route, "path", None) for route in edge.app.routes[: len(hot)]] == [r.path for r in hot]


def test_the_openapi_document_lists_exactly_the_tables_operations(edge: Edge) -> None:
    spec: dict[str, Any] = edge.app.openapi()
    listed = {(method.upper(), path) for path, operations in spec["paths"].items() for method in operations}
    assert listed == {(r.method, r.path) for r in ROUTES}
    for route in ROUTES:
        operation = spec["paths"][route.path][route.method.lower()]
        assert operation["operationId"].startswith(route.operation + "_")
        assert set(operation["responses"]) >= {str(route.status_code or 200), *map(str, route.responses)}
        assert operation.get("tags", []) == list(route.tags)
        if route.json_body is not None:  # parsed by the handler itself, documented from the table
            schema = operation["requestBody"]["content"]["application/json"]["schema"]
            assert schema["title"] == route.json_body.__name__


def test_the_edge_answers_exactly_the_fast_lane_routes_itself(edge: Edge) -> None:
    recorder = Recorder(edge.app)
    edge.app = cast(FastAPI, recorder)  # the edge only calls its app as an ASGI app
    admin = {"authorization": "Bearer admin-key"}
    with TestClient(edge) as http:
        for route in ROUTES:
            http.request(route.method, concrete(route), json={}, headers=admin)
    reached = set(recorder.requests)
    assert {(r.method, concrete(r)) for r in ROUTES if not r.fast_lane} <= reached
    assert not {(r.method, concrete(r)) for r in ROUTES if r.fast_lane} & reached


def requests_by_access(http: TestClient) -> Iterator[tuple[Route, int, int, int]]:
    """Each route with the status it answers without a key, with an API key and with an admin key."""
    for route in ROUTES:
        statuses = [
            http.request(route.method, concrete(route), json={}, headers=headers).status_code
            for headers in ({}, {"authorization": "Bearer user-key"}, {"authorization": "Bearer admin-key"})
        ]
        yield route, statuses[0], statuses[1], statuses[2]


def test_each_route_asks_for_the_key_of_its_access(edge: Edge) -> None:
    with TestClient(edge) as http:
        for route, anonymous, user, operator in requests_by_access(http):
            refused = {
                Access.ANYONE: (False, False, False),
                Access.KEY: (True, False, False),
                Access.ADMIN: (True, True, False),
            }[route.access]
            assert (anonymous in (401, 403), user in (401, 403), operator in (401, 403)) == refused, route


def test_the_edge_counts_each_route_under_its_template() -> None:
    for route in ROUTES:
        assert route_of(concrete(route)) == route.path
    assert route_of("/console/pool.js") == route_of("/console") == CONSOLE
    assert route_of("/consoles") == "other"


def test_probes_are_the_routes_open_to_anyone() -> None:
    assert {r.path for r in ROUTES if r.probe} == {r.path for r in ROUTES if r.access is Access.ANYONE}
