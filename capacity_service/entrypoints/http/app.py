"""The FastAPI app of the HTTP contract, built around a ``Backend`` (the service behind it).

Every error has the body ``{"error": {"code", "message"}}``; bad input of any kind is a 4xx and changes
nothing; an unexpected failure is a 500 with the same shape, never a stack trace.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route

from capacity_service.application.availability_feed import Watcher
from capacity_service.client import AsyncCapacityClient
from capacity_service.domain import PoolView
from capacity_service.domain.choice import SlotChoice
from capacity_service.entrypoints.http import request_ids
from capacity_service.entrypoints.http.admin import admin_handlers
from capacity_service.entrypoints.http.auth import ApiKeys
from capacity_service.entrypoints.http.edge import Edge, JsonOperation, RequestMetrics
from capacity_service.entrypoints.http.errors import capacity_error_response, error_response, internal_error_response
from capacity_service.entrypoints.http.operator_console import add_console
from capacity_service.entrypoints.http.orders import order_handlers, place_order
from capacity_service.entrypoints.http.routes import BY_OPERATION, ROUTES, Access
from capacity_service.entrypoints.http.schedules import schedule_handlers
from capacity_service.entrypoints.http.schemas import (
    POOL_ID,
    RESERVATION_ID,
    AvailabilityBody,
    AvailabilityRequest,
    AvailablePool,
    ChosenReserveRequest,
    ErrorBody,
    HealthBody,
    PlaceOrderRequest,
    PutPoolRequest,
    PutScheduleRequest,
    ReserveRequest,
    choice_of,
)
from capacity_service.entrypoints.http.stream import stream_handlers
from capacity_service.entrypoints.http.waitlist import waitlist_handlers
from capacity_service.entrypoints.http.webhooks import webhook_handlers
from capacity_service.errors import CapacityError, InvalidRequest
from capacity_service.models import Pool, ReleaseReceipt, ReservationInfo, ReservationReceipt
from capacity_service.settings import HttpSettings

log = logging.getLogger(__name__)


class Backend(Protocol):
    # The operator's calls (``admin.py``) go to the client as they are.
    client: AsyncCapacityClient

    async def put_pool(
        self,
        pool_id: str,
        capacity: int,
        zone: str,
        slot_start: datetime | None,
        slot_end: datetime | None,
        max_hold_seconds: int | None = None,
        waitlist_limit: int | None = None,
    ) -> tuple[Pool, bool]: ...

    async def get_pool(self, pool_id: str) -> Pool: ...

    async def retire_pool(self, pool_id: str) -> Pool: ...

    async def availability(
        self, zone: str, slot_from: datetime | None, slot_to: datetime | None, quantity: int
    ) -> list[PoolView]: ...

    async def reserve(
        self, pool_id: str, quantity: int, request_id: str | None, hold_seconds: int | None = None
    ) -> ReservationReceipt: ...

    async def reserve_chosen(
        self, choice: SlotChoice, request_id: str | None, hold_seconds: int | None = None
    ) -> ReservationReceipt: ...

    async def confirm(self, reservation_id: str) -> ReservationInfo: ...

    async def release(self, reservation_id: str) -> ReleaseReceipt: ...

    async def get_reservation(self, reservation_id: str) -> ReservationInfo: ...

    def watch_availability(self, zones: list[str], last_event_id: str | None) -> Watcher:
        """A watch of the zones' changes (``Overloaded`` beyond the replica's stream clients)."""
        ...

    async def readiness(self) -> dict[str, str]:
        """Each check's name -> "ok" or what is wrong."""
        ...

    async def start(self) -> None:
        """Start what the service needs in the background (idempotent)."""
        ...


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in [
        (401, "missing or unknown API key"),
        (403, "the key may not do this"),
        (413, "request body too large"),
        (422, "invalid_request: malformed JSON, wrong types, unknown fields, out-of-range values"),
        (429, "overloaded: nothing was taken; try again after the Retry-After header's seconds"),
        (503, "unavailable: nothing was taken; retrying with the same request_id is safe"),
        (504, "outcome_unknown: repeat with error.request_id to learn whether it was taken (never twice)"),
    ]
}


RequestBody = TypeVar("RequestBody", bound=BaseModel)
_JSON_MEDIA_TYPE = re.compile(r"^application/([a-z0-9.+-]+\+)?json\s*(;|$)", re.IGNORECASE)


def _parse(body: bytes, content_type: str, model: type[RequestBody]) -> RequestBody:
    """The JSON request body as ``model``, as FastAPI does for a body parameter but in one pydantic call:
    FastAPI's way (dependency solving, ``json.loads``, validating the dict) is a large part of the CPU of
    an availability request. Bad input raises ``InvalidRequest`` (422)."""
    if not _JSON_MEDIA_TYPE.match(content_type):
        raise InvalidRequest("body: a JSON object is required (content-type: application/json)")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise InvalidRequest(_problems(exc.errors())) from exc


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI request body of an endpoint that parses ``model`` itself (``_parse``). The schemas of
    nested models are written in place: their ``$defs`` would be looked for at the document's root."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {"$ref"} and node["$ref"].startswith("#/$defs/"):
                return inline(definitions[node["$ref"].removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(value) for value in node]
        return node

    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inline(schema)}}}}


def _problems(errors: Sequence[Any]) -> str:
    """Up to five validation errors as one message; the location without FastAPI's "body" prefix."""
    problems = [f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}" for e in errors[:5]]
    return "; ".join(problems) or "invalid request"


def _json(body: BaseModel, status: int = 200) -> Response:
    """A response model, validated when it was built, serialized once: returned as a model, FastAPI would
    validate it a second time first. (``model_construct`` is no shortcut: slower than validating.)"""
    return Response(body.model_dump_json(), status_code=status, media_type="application/json")


async def _body_of(request: Request) -> tuple[bytes, str]:
    """The request's body and its content-type, as the edge hands them to an operation."""
    return await request.body(), request.headers.get("content-type", "")


async def _json_call(request: Request, operation: JsonOperation) -> Response:
    return await operation(*await _body_of(request))


def _allowed_methods(app: FastAPI, request: Request) -> list[str]:
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE and isinstance(route, APIRoute | Route):
            methods |= route.methods or set()
    return sorted(methods)


def create_app(backend: Backend, settings: HttpSettings | None = None, metrics: RequestMetrics | None = None) -> Edge:
    """The HTTP app: the FastAPI routes of the contract behind the ``Edge`` (body limit, loopback rule,
    requests in flight, and the fast lane, which answers the hot calls with the same operations).
    ``metrics``: where every answer is counted and timed."""
    settings = settings or HttpSettings()
    keys = ApiKeys(settings)
    app = _framework_app(backend)
    _add_error_handlers(app)
    operations = _HotOperations(backend)
    handlers = [
        *_pool_handlers(backend, operations),
        *_reservation_handlers(backend, operations),
        *_health_handlers(backend),
        *admin_handlers(backend.client),
        *order_handlers(backend.client),
        *waitlist_handlers(backend.client),
        *webhook_handlers(backend.client),
        *schedule_handlers(backend.client, lambda body, content_type: _parse(body, content_type, PutScheduleRequest)),
        *stream_handlers(backend, settings.stream_heartbeat_s),
        _place_order_handler(operations),
    ]
    _add_routes(app, handlers, _key_checks(keys))
    add_console(app)
    fast_lane = _fast_lane(operations)
    # The hot routes first: Serve matches every request against the routes (to name it), and the docs
    # routes FastAPI puts first made every request try them. No two routes overlap, so order is free.
    hot = {path for _, path in fast_lane}
    app.router.routes.sort(key=lambda route: getattr(route, "path", "") not in hot)
    request_ids.install_log_stamp()
    return Edge(app, settings.max_body_bytes, fast_lane, keys, settings.max_requests_in_flight, metrics)


def _framework_app(backend: Backend) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            await backend.start()
        except Exception:  # not fatal: /readyz reports it and the next request retries
            log.exception("starting the service's background parts failed")
        yield

    return FastAPI(
        lifespan=lifespan,
        title="capacity_service",
        version="1",
        description="Sell limited slot capacity without ever overselling.",
        responses=_ERRORS,
    )


def _add_error_handlers(app: FastAPI) -> None:
    """Every error is the contract's body (``http/errors.py``), whoever raised it."""

    @app.exception_handler(CapacityError)
    async def _capacity_error(_: Request, exc: CapacityError) -> JSONResponse:
        return capacity_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", _problems(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI's answer to a body that is not JSON: the contract's 422
            return error_response(422, "invalid_request", f"body: {exc.detail}")
        codes = {404: "not_found", 405: "method_not_allowed"}
        code = codes.get(exc.status_code, "http_error")
        headers = exc.headers
        if exc.status_code == 405:  # every method of the path (Starlette names only its first route's)
            headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(app, request))}
        return error_response(exc.status_code, code, str(exc.detail), headers=dict(headers or {}))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        return internal_error_response(exc)


class _HotOperations:
    """The hot calls as operations on (body, content-type): the FastAPI routes call them, and the edge's
    fast lane calls them directly (one implementation of each)."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    async def availability(self, body: bytes, content_type: str) -> Response:
        query = _parse(body, content_type, AvailabilityRequest)
        views = await self._backend.availability(query.zone, query.slot_from, query.slot_to, query.quantity)
        pools = [
            AvailablePool(
                pool_id=v.pool_id, zone=v.zone, slot_start=v.slot_start, slot_end=v.slot_end, remaining=v.remaining
            )
            for v in views
        ]
        return _json(AvailabilityBody(pools=pools))

    async def place_order(self, body: bytes, content_type: str) -> Response:
        order = await place_order(self._backend.client, _parse(body, content_type, PlaceOrderRequest))
        return _json(order, status=201)

    async def reserve(self, body: bytes, content_type: str) -> Response:
        asked: ReserveRequest | ChosenReserveRequest
        try:
            asked = _parse(body, content_type, ReserveRequest)  # the hot path: a named pool
        except InvalidRequest as named:
            asked = _parse_chosen(body, content_type, named)
        if isinstance(asked, ReserveRequest):
            receipt = await self._backend.reserve(asked.pool_id, asked.quantity, asked.request_id, asked.hold_seconds)
        else:
            choice = choice_of(asked.choose)
            receipt = await self._backend.reserve_chosen(choice, asked.request_id, asked.hold_seconds)
        return _json(receipt, status=201)

    def by_operation(self) -> dict[str, JsonOperation]:
        """Each operation by the name of the route it answers (``routes.py``)."""
        return {"availability": self.availability, "reserve": self.reserve, "place_order": self.place_order}


def _parse_chosen(body: bytes, content_type: str, named: InvalidRequest) -> ChosenReserveRequest:
    """A reserve body that is not a valid named one: a choice, or ``named`` (what is wrong with it as a
    named one) unless it meant to choose."""
    try:
        return _parse(body, content_type, ChosenReserveRequest)
    except InvalidRequest as chosen:
        try:
            fields = json.loads(body)
        except ValueError:
            raise named from None
        if not isinstance(fields, dict) or not _JSON_MEDIA_TYPE.match(content_type):
            raise named from None
        if "choose" not in fields:
            if "pool_id" not in fields:
                raise InvalidRequest("body: pool_id (a named pool) or choose (any pool that fits) needed") from None
            raise named from None
        if "pool_id" in fields:
            raise InvalidRequest("body: pool_id or choose, not both") from None
        if "quantity" in fields:
            raise InvalidRequest("body: with choose, the quantity goes inside it (choose.quantity)") from None
        raise chosen from None


def _fast_lane(operations: _HotOperations) -> dict[tuple[str, str], JsonOperation]:
    """The fast-lane routes of the table, each to the operation its FastAPI handler calls."""
    on_lane = [route for route in ROUTES if route.fast_lane]
    hot = operations.by_operation()
    if hot.keys() != {route.operation for route in on_lane}:
        raise ValueError(f"the hot operations {sorted(hot)} are not the fast-lane routes' operations")
    if any(route.access is not Access.KEY for route in on_lane):
        raise ValueError("the fast lane checks an API key, never an admin key: admin routes cannot be on it")
    return {(route.method, route.path): hot[route.operation] for route in on_lane}


def _key_checks(keys: ApiKeys) -> dict[Access, list[Any]]:
    """The route dependencies that check each access. With auth off (no keys) the routes have no
    dependency at all: resolving one costs every request."""

    async def require_key(request: Request) -> None:
        keys.require_key(request.headers.get("authorization"))

    async def require_admin_key(request: Request) -> None:
        keys.require_admin_key(request.headers.get("authorization"))

    if not keys.enabled:
        return {access: [] for access in Access}
    return {Access.ANYONE: [], Access.KEY: [Depends(require_key)], Access.ADMIN: [Depends(require_admin_key)]}


def _add_routes(app: FastAPI, handlers: Sequence[Callable[..., Any]], checks: Mapping[Access, list[Any]]) -> None:
    """Every route of the table, in its order, served by the handler named as its operation."""
    by_name = {handler.__name__: handler for handler in handlers}
    if by_name.keys() != BY_OPERATION.keys() or len(by_name) != len(handlers):
        missing, unrouted = sorted(BY_OPERATION.keys() - by_name.keys()), sorted(by_name.keys() - BY_OPERATION.keys())
        raise ValueError(f"the handlers do not match the routes: none for {missing}, no route for {unrouted}")
    for route in ROUTES:
        app.add_api_route(
            route.path,
            by_name[route.operation],
            methods=[route.method],
            name=route.operation,
            response_model=route.response_model,
            status_code=route.status_code,
            responses=route.responses,
            dependencies=checks[route.access],
            tags=list(route.tags),
            openapi_extra=None if route.json_body is None else _json_body(route.json_body),
        )


def _pool_handlers(backend: Backend, operations: _HotOperations) -> list[Callable[..., Any]]:
    async def put_pool(pool_id: POOL_ID, request: Request, response: Response) -> Pool:
        """Create or update a pool. Lowering capacity below what is reserved is allowed; raising it offers
        the units to the waitlist. max_hold_seconds and waitlist_limit left out keep what the pool has."""
        body = _parse(*await _body_of(request), PutPoolRequest)
        pool, created = await backend.put_pool(
            pool_id,
            body.capacity,
            body.zone,
            body.slot_start,
            body.slot_end,
            body.max_hold_seconds,
            body.waitlist_limit,
        )
        response.status_code = 201 if created else 200
        return pool

    async def get_pool(pool_id: POOL_ID) -> Pool:
        return await backend.get_pool(pool_id)

    async def retire_pool(pool_id: POOL_ID) -> Pool:
        """Retire the pool: reserves are refused (410 pool_retired) and it leaves availability; releases,
        confirms and reads go on. Its history stays. Retiring twice answers 200 both times."""
        return await backend.retire_pool(pool_id)

    async def availability(request: Request) -> Response:
        """Pools of the zone whose slot overlaps [slot_from, slot_to) with at least `quantity` remaining.
        Served from the replicated cache: it may lag a write by a little."""
        return await _json_call(request, operations.availability)

    return [put_pool, get_pool, retire_pool, availability]


def _reservation_handlers(backend: Backend, operations: _HotOperations) -> list[Callable[..., Any]]:
    async def reserve(request: Request) -> Response:
        """Take capacity. Idempotent on request_id: the same id returns the same reservation. With
        hold_seconds it is a hold (status "held", expires_at): confirm it in time or it expires."""
        return await _json_call(request, operations.reserve)

    async def confirm(reservation_id: RESERVATION_ID) -> ReservationInfo:
        """Turn a hold into an active reservation. Confirming twice answers 200 both times."""
        return await backend.confirm(reservation_id)

    async def release(reservation_id: RESERVATION_ID) -> ReleaseReceipt:
        """Give the capacity back. Releasing twice answers 200 both times."""
        return await backend.release(reservation_id)

    async def get_reservation(reservation_id: RESERVATION_ID) -> ReservationInfo:
        return await backend.get_reservation(reservation_id)

    return [reserve, confirm, release, get_reservation]


def _place_order_handler(operations: _HotOperations) -> Callable[..., Any]:
    async def place_order(request: Request) -> Response:
        """Take every line, or none (409 order_line_refused names the first line that could not be served,
        and nothing is taken). Idempotent on order_id. With hold_seconds the order is held until confirmed;
        without, it is confirmed at once."""
        return await _json_call(request, operations.place_order)

    return place_order


def _health_handlers(backend: Backend) -> list[Callable[..., Any]]:
    async def healthz() -> HealthBody:
        """Alive: this process answers."""
        return HealthBody(status="ok")

    async def readyz() -> JSONResponse:
        """Ready: journal reachable, availability cache bootstrapped, every registered pool alive."""
        checks = await backend.readiness()
        ready = all(v == "ok" for v in checks.values())
        body = HealthBody(status="ok" if ready else "unavailable", checks=checks)
        return JSONResponse(body.model_dump(), status_code=200 if ready else 503)

    return [healthz, readyz]
