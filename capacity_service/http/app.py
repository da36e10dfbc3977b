"""The FastAPI app of the HTTP contract, built around a ``Backend`` (the service behind it).

Every error has the body ``{"error": {"code", "message"}}``; bad input of any kind is a 4xx and changes
nothing; an unexpected failure is a 500 with the same shape, never a stack trace.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, Protocol, TypeVar

from fastapi import Depends, FastAPI, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message, Receive, Scope, Send

from capacity_service.domain import PoolView
from capacity_service.errors import (
    CapacityError,
    InsufficientCapacity,
    InvalidRequest,
    PoolNotFound,
    RequestIdConflict,
    ReservationNotFound,
    Unavailable,
)
from capacity_service.http.schemas import (
    AvailabilityBody,
    AvailabilityRequest,
    AvailablePool,
    ErrorBody,
    HealthBody,
    PutPoolRequest,
    ReserveRequest,
)
from capacity_service.models import Pool, ReleaseReceipt, ReservationInfo, ReservationReceipt
from capacity_service.settings import HttpSettings

log = logging.getLogger(__name__)

POOL_ID = Annotated[str, Path(pattern=r"^[A-Za-z0-9._:-]{1,128}$", description="1-128 of [A-Za-z0-9._:-]")]
RESERVATION_ID = Annotated[str, Path(max_length=256, description="as returned by a reserve")]


class Backend(Protocol):
    async def put_pool(
        self, pool_id: str, capacity: int, zone: str, slot_start: datetime | None, slot_end: datetime | None
    ) -> tuple[Pool, bool]: ...

    async def get_pool(self, pool_id: str) -> Pool: ...

    async def availability(
        self, zone: str, slot_from: datetime | None, slot_to: datetime | None, quantity: int
    ) -> list[PoolView]: ...

    async def reserve(self, pool_id: str, quantity: int, request_id: str | None) -> ReservationReceipt: ...

    async def release(self, reservation_id: str) -> ReleaseReceipt: ...

    async def get_reservation(self, reservation_id: str) -> ReservationInfo: ...

    async def readiness(self) -> dict[str, str]:
        """Each check's name -> "ok" or what is wrong."""
        ...

    async def start(self) -> None:
        """Start what the service needs in the background (idempotent)."""
        ...


class Unauthorized(CapacityError):
    code = "unauthorized"


class Forbidden(CapacityError):
    code = "forbidden"


class PayloadTooLarge(CapacityError):
    code = "payload_too_large"


_STATUS: dict[type[CapacityError], int] = {
    InvalidRequest: 422,
    PoolNotFound: 404,
    ReservationNotFound: 404,
    InsufficientCapacity: 409,
    RequestIdConflict: 409,
    Unavailable: 503,
    Unauthorized: 401,
    Forbidden: 403,
    PayloadTooLarge: 413,
}

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in [
        (401, "missing or unknown API key"),
        (403, "the key may not do this"),
        (413, "request body too large"),
        (422, "invalid_request: malformed JSON, wrong types, unknown fields, out-of-range values"),
        (503, "unavailable: nothing was taken; retrying with the same request_id is safe"),
    ]
}


RequestBody = TypeVar("RequestBody", bound=BaseModel)
_JSON_MEDIA_TYPE = re.compile(r"^application/([a-z0-9.+-]+\+)?json\s*(;|$)", re.IGNORECASE)


async def _parse(request: Request, model: type[RequestBody]) -> RequestBody:
    """The request's JSON body as ``model``, as FastAPI does for a body parameter but in one pydantic call:
    FastAPI's way (dependency solving, ``json.loads``, validating the dict) was a third of the CPU of an
    availability request. Bad input raises ``InvalidRequest`` (422)."""
    if not _JSON_MEDIA_TYPE.match(request.headers.get("content-type", "")):
        raise InvalidRequest("body: a JSON object is required (content-type: application/json)")
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        raise InvalidRequest(_problems(exc.errors())) from exc


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI request body of an endpoint that parses ``model`` itself (``_parse``)."""
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _problems(errors: Sequence[Any]) -> str:
    """Up to five validation errors as one message; the location without FastAPI's "body" prefix."""
    problems = [f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}" for e in errors[:5]]
    return "; ".join(problems) or "invalid request"


def _json(body: BaseModel, status: int = 200) -> Response:
    """A response model, validated when it was built, serialized once: returned as a model, FastAPI would
    validate it a second time first. (``model_construct`` is no shortcut: slower than validating.)"""
    return Response(body.model_dump_json(), status_code=status, media_type="application/json")


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def create_app(backend: Backend, settings: HttpSettings | None = None) -> BodyLimit:
    settings = settings or HttpSettings()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            await backend.start()
        except Exception:  # not fatal: /readyz reports it and the next request retries
            log.exception("starting the service's background parts failed")
        yield

    app = FastAPI(
        lifespan=lifespan,
        title="capacity_service",
        version="1",
        description="Sell limited slot capacity without ever overselling.",
        responses=_ERRORS,
    )
    require_key, require_admin_key = _key_checks(settings)
    # With auth off (no keys) the routes have no dependency at all: resolving one costs every request.
    auth_on = bool(settings.api_keys or settings.admin_keys)
    keyed = [Depends(require_key)] if auth_on else []
    admin_only = [Depends(require_admin_key)] if auth_on else []

    @app.exception_handler(CapacityError)
    async def _capacity_error(_: Request, exc: CapacityError) -> JSONResponse:
        return error_response(_STATUS.get(type(exc), 400), exc.code, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", _problems(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        return error_response(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return error_response(500, "internal_error", "unexpected error; nothing was changed by this request")

    @app.put(
        "/v1/pools/{pool_id}",
        openapi_extra=_json_body(PutPoolRequest),
        response_model=Pool,
        responses={201: {"model": Pool, "description": "created"}},
        dependencies=admin_only,
    )
    async def put_pool(pool_id: POOL_ID, request: Request, response: Response) -> Pool:
        """Create or update a pool. Lowering capacity below what is reserved is allowed."""
        body = await _parse(request, PutPoolRequest)
        pool, created = await backend.put_pool(pool_id, body.capacity, body.zone, body.slot_start, body.slot_end)
        response.status_code = 201 if created else 200
        return pool

    @app.get(
        "/v1/pools/{pool_id}",
        response_model=Pool,
        responses={404: {"model": ErrorBody, "description": "pool_not_found"}},
        dependencies=keyed,
    )
    async def get_pool(pool_id: POOL_ID) -> Pool:
        return await backend.get_pool(pool_id)

    @app.post(
        "/v1/availability",
        openapi_extra=_json_body(AvailabilityRequest),
        response_model=AvailabilityBody,
        dependencies=keyed,
    )
    async def availability(request: Request) -> Response:
        """Pools of the zone whose slot overlaps [slot_from, slot_to) with at least `quantity` remaining.
        Served from the replicated cache: it may lag a write by a little."""
        body = await _parse(request, AvailabilityRequest)
        views = await backend.availability(body.zone, body.slot_from, body.slot_to, body.quantity)
        return _json(
            AvailabilityBody(
                pools=[
                    AvailablePool(
                        pool_id=v.pool_id,
                        zone=v.zone,
                        slot_start=v.slot_start,
                        slot_end=v.slot_end,
                        remaining=v.remaining,
                    )
                    for v in views
                ]
            )
        )

    @app.post(
        "/v1/reservations",
        openapi_extra=_json_body(ReserveRequest),
        status_code=201,
        response_model=ReservationReceipt,
        responses={
            404: {"model": ErrorBody, "description": "pool_not_found"},
            409: {"model": ErrorBody, "description": "insufficient_capacity, request_id_conflict"},
        },
        dependencies=keyed,
    )
    async def reserve(request: Request) -> Response:
        """Take capacity. Idempotent on request_id: the same id returns the same reservation."""
        body = await _parse(request, ReserveRequest)
        return _json(await backend.reserve(body.pool_id, body.quantity, body.request_id), status=201)

    @app.delete(
        "/v1/reservations/{reservation_id}",
        response_model=ReleaseReceipt,
        responses={404: {"model": ErrorBody, "description": "reservation_not_found"}},
        dependencies=keyed,
    )
    async def release(reservation_id: RESERVATION_ID) -> ReleaseReceipt:
        """Give the capacity back. Releasing twice answers 200 both times."""
        return await backend.release(reservation_id)

    @app.get(
        "/v1/reservations/{reservation_id}",
        response_model=ReservationInfo,
        responses={404: {"model": ErrorBody, "description": "reservation_not_found"}},
        dependencies=keyed,
    )
    async def get_reservation(reservation_id: RESERVATION_ID) -> ReservationInfo:
        return await backend.get_reservation(reservation_id)

    @app.get("/healthz", response_model=HealthBody)
    async def healthz() -> HealthBody:
        """Alive: this process answers."""
        return HealthBody(status="ok")

    @app.get("/readyz", response_model=HealthBody, responses={503: {"model": HealthBody}})
    async def readyz() -> JSONResponse:
        """Ready: journal reachable, availability cache bootstrapped, every registered pool alive."""
        checks = await backend.readiness()
        ready = all(v == "ok" for v in checks.values())
        body = HealthBody(status="ok" if ready else "unavailable", checks=checks)
        return JSONResponse(body.model_dump(), status_code=200 if ready else 503)

    return BodyLimit(app, settings.max_body_bytes)


def _key_checks(
    settings: HttpSettings,
) -> tuple[Callable[..., Awaitable[None]], Callable[..., Awaitable[None]]]:
    keys = [k.get_secret_value() for k in settings.api_keys]
    admin_keys = [k.get_secret_value() for k in settings.admin_keys]

    def presented(request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None

    def matches(token: str, candidates: list[str]) -> bool:
        return any(secrets.compare_digest(token.encode(), c.encode()) for c in candidates)

    async def require_key(request: Request) -> None:
        token = presented(request)
        if token is None or not matches(token, keys + admin_keys):
            raise Unauthorized("a valid API key is required (Authorization: Bearer <key>)")

    async def require_admin_key(request: Request) -> None:
        token = presented(request)
        if token is None:
            raise Unauthorized("an admin API key is required (Authorization: Bearer <key>)")
        if not matches(token, admin_keys):
            raise Forbidden("changing pools needs an admin API key")

    return require_key, require_admin_key


def _replay(chunks: list[bytes], then: Message | None) -> Receive:
    """A ``receive`` that hands out an already read body, then waits on the original stream's end."""
    pending: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]
    if then is not None:
        pending = [then]

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        return {"type": "http.disconnect"}

    return receive


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413 before the app sees any of it."""

    def __init__(self, app: FastAPI, limit: int) -> None:
        self.app = app
        self.limit = limit

    def __getattr__(self, name: str) -> Any:  # openapi(), routes, ... of the wrapped app
        return getattr(self.app, name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._reject(scope, receive, send)
            return
        # Bodies here are small: read the whole body first (at most limit + one chunk), then replay it.
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([], message), send)
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                await self._reject(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(chunks, None), send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(413, "payload_too_large", f"request body over {self.limit} bytes")
        await response(scope, receive, send)
