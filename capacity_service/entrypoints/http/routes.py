"""The HTTP routes of the contract, written once. FastAPI's routes (and with them the OpenAPI document,
``app.py`` and ``admin.py`` give each its handler), the edge's fast lane and probes, and the route
templates the edge counts requests by (``route_of``) are all made from ``ROUTES``."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from capacity_service.entrypoints.http.schemas import (
    AvailabilityBody,
    AvailabilityEvent,
    AvailabilityRequest,
    ErrorBody,
    HealthBody,
    PlaceOrderRequest,
    PutPoolRequest,
    PutScheduleRequest,
    ReserveBody,
)
from capacity_service.models import (
    Order,
    Pool,
    PoolCheck,
    PoolHistory,
    PoolsChanged,
    ReleaseReceipt,
    ReservationInfo,
    ReservationList,
    ReservationReceipt,
    Schedule,
    WaitlistPlace,
    Webhook,
    WebhookList,
    ZoneList,
)

Method = Literal["GET", "POST", "PUT", "DELETE"]
Responses = dict[int | str, dict[str, Any]]


class Access(enum.Enum):
    """Who may call a route when API keys are configured (with none, every client the loopback rule lets
    in may call every route)."""

    ANYONE = "anyone"
    KEY = "key"  # any API key; an admin key is one too
    ADMIN = "admin"


@dataclass(frozen=True)
class Route:
    method: Method
    path: str  # FastAPI's template, e.g. "/v1/pools/{pool_id}"
    operation: str  # the name of its handler, which names the OpenAPI operation
    access: Access
    response_model: type[BaseModel]
    status_code: int | None = None  # None: FastAPI's default, 200
    responses: Responses = field(default_factory=dict)  # beyond the errors every route may answer
    json_body: type[BaseModel] | None = None  # a body the handler parses itself (``app._parse``)
    tags: tuple[str, ...] = ()
    fast_lane: bool = False  # answered by the edge itself, ahead of FastAPI
    probe: bool = False  # a health probe: answered whatever the load
    stream: bool = False  # an open-ended answer (Server-Sent Events): bounded on its own, not in flight


def _errors(*answers: tuple[int, str]) -> Responses:
    return {status: {"model": ErrorBody, "description": description} for status, description in answers}


_POOL_NOT_FOUND = (404, "pool_not_found")
_RESERVATION_NOT_FOUND = (404, "reservation_not_found")
_ORDER_NOT_FOUND = (404, "order_not_found")
_WAITLIST_ENTRY_NOT_FOUND = (404, "pool_not_found, waitlist_entry_not_found")
_ADMIN = ("admin",)
_WEBHOOKS = ("webhooks",)
_WEBHOOK_NOT_FOUND = (404, "webhook_not_found")
_SCHEDULES = ("schedules",)

# The hot routes first, as FastAPI is given them: Serve matches every request against them in order.
ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/v1/availability",
        "availability",
        Access.KEY,
        AvailabilityBody,
        json_body=AvailabilityRequest,
        fast_lane=True,
    ),
    Route(
        "POST",
        "/v1/reservations",
        "reserve",
        Access.KEY,
        ReservationReceipt,
        status_code=201,
        responses=_errors(
            _POOL_NOT_FOUND,
            (409, "insufficient_capacity, request_id_conflict, no_capacity_in_window"),
            (410, "pool_retired"),
        ),
        json_body=ReserveBody,
        fast_lane=True,
    ),
    Route(
        "POST",
        "/v1/orders",
        "place_order",
        Access.KEY,
        Order,
        status_code=201,
        responses=_errors(
            (409, "order_line_refused (with line, pool_id, line_error), order_failed, order_id_conflict")
        ),
        json_body=PlaceOrderRequest,
        fast_lane=True,
    ),
    Route(
        "GET",
        "/v1/availability/stream",
        "availability_stream",
        Access.KEY,
        AvailabilityEvent,
        responses={
            200: {
                "description": "Server-Sent Events: `id`, `event: pool`, `data`: the pool (as AvailabilityEvent)",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            **_errors((429, "overloaded: too many stream clients on this replica")),
        },
        stream=True,
    ),
    Route(
        "PUT",
        "/v1/pools/{pool_id}",
        "put_pool",
        Access.ADMIN,
        Pool,
        responses={201: {"model": Pool, "description": "created"}, **_errors((410, "pool_retired"))},
        json_body=PutPoolRequest,
    ),
    Route("GET", "/v1/pools/{pool_id}", "get_pool", Access.KEY, Pool, responses=_errors(_POOL_NOT_FOUND)),
    Route("DELETE", "/v1/pools/{pool_id}", "retire_pool", Access.ADMIN, Pool, responses=_errors(_POOL_NOT_FOUND)),
    Route(
        "POST",
        "/v1/reservations/{reservation_id}/confirm",
        "confirm",
        Access.KEY,
        ReservationInfo,
        responses=_errors(_RESERVATION_NOT_FOUND, (409, "hold_expired, reservation_released")),
    ),
    Route(
        "DELETE",
        "/v1/reservations/{reservation_id}",
        "release",
        Access.KEY,
        ReleaseReceipt,
        responses=_errors(_RESERVATION_NOT_FOUND),
    ),
    Route(
        "GET",
        "/v1/reservations/{reservation_id}",
        "get_reservation",
        Access.KEY,
        ReservationInfo,
        responses=_errors(_RESERVATION_NOT_FOUND),
    ),
    Route(
        "POST",
        "/v1/reservations/{reservation_id}/extend",
        "extend_hold",
        Access.KEY,
        ReservationInfo,
        responses=_errors(_RESERVATION_NOT_FOUND, (409, "hold_expired, reservation_released, reservation_active")),
    ),
    Route(
        "POST",
        "/v1/pools/{pool_id}/waitlist",
        "join_waitlist",
        Access.KEY,
        WaitlistPlace,
        status_code=202,
        responses=_errors(_POOL_NOT_FOUND, (409, "waitlist_full, request_id_conflict"), (410, "pool_retired")),
    ),
    Route(
        "GET",
        "/v1/pools/{pool_id}/waitlist/{entry_id}",
        "get_waitlist_entry",
        Access.KEY,
        WaitlistPlace,
        responses=_errors(_WAITLIST_ENTRY_NOT_FOUND),
    ),
    Route(
        "DELETE",
        "/v1/pools/{pool_id}/waitlist/{entry_id}",
        "leave_waitlist",
        Access.KEY,
        WaitlistPlace,
        responses=_errors(_WAITLIST_ENTRY_NOT_FOUND),
    ),
    Route("GET", "/v1/orders/{order_id}", "get_order", Access.KEY, Order, responses=_errors(_ORDER_NOT_FOUND)),
    Route(
        "POST",
        "/v1/orders/{order_id}/confirm",
        "confirm_order",
        Access.KEY,
        Order,
        responses=_errors(_ORDER_NOT_FOUND, (409, "hold_expired, order_not_held")),
    ),
    Route("DELETE", "/v1/orders/{order_id}", "cancel_order", Access.KEY, Order, responses=_errors(_ORDER_NOT_FOUND)),
    Route("GET", "/healthz", "healthz", Access.ANYONE, HealthBody, probe=True),
    Route("GET", "/readyz", "readyz", Access.ANYONE, HealthBody, responses={503: {"model": HealthBody}}, probe=True),
    # The operator's calls (``admin.py``).
    Route(
        "POST",
        "/v1/admin/pools/{pool_id}/pause",
        "pause_pool",
        Access.ADMIN,
        Pool,
        responses=_errors(_POOL_NOT_FOUND),
        tags=_ADMIN,
    ),
    Route(
        "POST",
        "/v1/admin/pools/{pool_id}/resume",
        "resume_pool",
        Access.ADMIN,
        Pool,
        responses=_errors(_POOL_NOT_FOUND),
        tags=_ADMIN,
    ),
    Route(
        "POST",
        "/v1/admin/pause",
        "pause_all",
        Access.ADMIN,
        PoolsChanged,
        responses=_errors(_POOL_NOT_FOUND),
        tags=_ADMIN,
    ),
    Route(
        "POST",
        "/v1/admin/resume",
        "resume_all",
        Access.ADMIN,
        PoolsChanged,
        responses=_errors(_POOL_NOT_FOUND),
        tags=_ADMIN,
    ),
    Route(
        "GET",
        "/v1/admin/pools/{pool_id}/reservations",
        "reservations",
        Access.ADMIN,
        ReservationList,
        responses=_errors(_POOL_NOT_FOUND),
        tags=_ADMIN,
    ),
    Route(
        "POST",
        "/v1/admin/pools/{pool_id}/reset",
        "reset_pool",
        Access.ADMIN,
        Pool,
        responses=_errors(_POOL_NOT_FOUND, (409, "seq_nr_out_of_range")),
        tags=_ADMIN,
    ),
    Route(
        "POST",
        "/v1/admin/pools/{pool_id}/check",
        "check_pool",
        Access.ADMIN,
        PoolCheck,
        responses=_errors(_POOL_NOT_FOUND),
        tags=_ADMIN,
    ),
    Route(
        "GET",
        "/v1/admin/pools/{pool_id}/history",
        "pool_history",
        Access.ADMIN,
        PoolHistory,
        responses=_errors(_POOL_NOT_FOUND),
        tags=_ADMIN,
    ),
    Route("GET", "/v1/admin/zones", "zones", Access.ADMIN, ZoneList, tags=_ADMIN),
    # Webhooks (``webhooks.py``).
    Route(
        "PUT",
        "/v1/webhooks/{webhook_id}",
        "put_webhook",
        Access.ADMIN,
        Webhook,
        responses={
            201: {"model": Webhook, "description": "registered"},
            **_errors((409, "too_many_webhooks"), (422, "invalid_request: a URL that is not http(s) or private")),
        },
        tags=_WEBHOOKS,
    ),
    Route("GET", "/v1/webhooks", "list_webhooks", Access.ADMIN, WebhookList, tags=_WEBHOOKS),
    Route(
        "GET",
        "/v1/webhooks/{webhook_id}",
        "get_webhook",
        Access.ADMIN,
        Webhook,
        responses=_errors(_WEBHOOK_NOT_FOUND),
        tags=_WEBHOOKS,
    ),
    Route(
        "DELETE",
        "/v1/webhooks/{webhook_id}",
        "delete_webhook",
        Access.ADMIN,
        Webhook,
        responses=_errors(_WEBHOOK_NOT_FOUND),
        tags=_WEBHOOKS,
    ),
    # Schedules (``schedules.py``).
    Route(
        "PUT",
        "/v1/schedules/{schedule_id}",
        "put_schedule",
        Access.ADMIN,
        Schedule,
        status_code=202,
        responses={
            200: {"model": Schedule, "description": "this template is being applied already: nothing new started"},
            **_errors((422, "invalid_request: a template that describes no valid pools, or more than 100,000")),
        },
        json_body=PutScheduleRequest,
        tags=_SCHEDULES,
    ),
    Route(
        "GET",
        "/v1/schedules/{schedule_id}",
        "get_schedule",
        Access.ADMIN,
        Schedule,
        responses=_errors((404, "schedule_not_found")),
        tags=_SCHEDULES,
    ),
)

# The operator's console: static files under this path (``operator_console.py``), not an API operation.
CONSOLE_PATH = "/console"

BY_OPERATION: dict[str, Route] = {route.operation: route for route in ROUTES}
PROBE_PATHS = frozenset(route.path for route in ROUTES if route.probe)
STREAM_PATHS = frozenset(route.path for route in ROUTES if route.stream)


_FIXED_PATHS = frozenset(route.path for route in ROUTES if "{" not in route.path)
_TEMPLATES = tuple(dict.fromkeys(route.path for route in ROUTES if "{" in route.path))


def _pattern(template: str) -> str:
    """The regular expression of a template: a parameter is one path segment, as Starlette matches it."""
    return "[^/]+".join(re.escape(part) for part in re.split(r"\{[^}]+\}", template))


# Every template in one expression, a group each: a path is matched once, however many routes there are.
_TEMPLATED = re.compile("^(?:" + "|".join(f"({_pattern(template)})" for template in _TEMPLATES) + ")$")


def route_of(path: str) -> str:
    """The route template of a path, for metrics: a bounded set of values whatever clients send."""
    if path in _FIXED_PATHS:
        return path
    if path == CONSOLE_PATH or path.startswith(CONSOLE_PATH + "/"):
        return CONSOLE_PATH
    found = _TEMPLATED.match(path)
    if found is None or found.lastindex is None:
        return "other"
    return _TEMPLATES[found.lastindex - 1]
