"""The error side of the HTTP contract: every error is ``{"error": {"code", "message"}}`` with the status
its kind maps to. Used by the FastAPI app's exception handlers and by the edge's fast lane alike."""

from __future__ import annotations

import logging

from starlette.responses import JSONResponse

from capacity_service.errors import (
    CapacityBelowReserved,
    CapacityError,
    HoldExpired,
    InsufficientCapacity,
    InvalidRequest,
    NoCapacityInWindow,
    OrderFailed,
    OrderIdConflict,
    OrderLineRefused,
    OrderNotFound,
    OrderNotHeld,
    OutcomeUnknown,
    Overloaded,
    Paused,
    PoolNotFound,
    PoolRetired,
    RequestIdConflict,
    ReservationActive,
    ReservationNotFound,
    ReservationReleased,
    ScheduleNotFound,
    SeqNrOutOfRange,
    TooManyWebhooks,
    Unavailable,
    WaitlistEntryNotFound,
    WaitlistFull,
    WebhookNotFound,
)

log = logging.getLogger(__name__)


class Unauthorized(CapacityError):
    code = "unauthorized"


class Forbidden(CapacityError):
    code = "forbidden"


class PayloadTooLarge(CapacityError):
    code = "payload_too_large"


STATUS: dict[type[CapacityError], int] = {
    InvalidRequest: 422,
    PoolNotFound: 404,
    ReservationNotFound: 404,
    InsufficientCapacity: 409,
    NoCapacityInWindow: 409,
    RequestIdConflict: 409,
    SeqNrOutOfRange: 409,
    OrderNotFound: 404,
    OrderLineRefused: 409,
    OrderIdConflict: 409,
    OrderFailed: 409,
    OrderNotHeld: 409,
    HoldExpired: 409,
    PoolRetired: 410,
    ReservationReleased: 409,
    ReservationActive: 409,
    WaitlistEntryNotFound: 404,
    WaitlistFull: 409,
    Unavailable: 503,
    Paused: 503,
    OutcomeUnknown: 504,
    Overloaded: 429,
    Unauthorized: 401,
    Forbidden: 403,
    PayloadTooLarge: 413,
    WebhookNotFound: 404,
    TooManyWebhooks: 409,
    ScheduleNotFound: 404,
    CapacityBelowReserved: 409,
}


def error_response(
    status: int,
    code: str,
    message: str,
    request_id: str | None = None,
    headers: dict[str, str] | None = None,
    details: dict[str, object] | None = None,
) -> JSONResponse:
    error: dict[str, object] = {"code": code, "message": message}
    if request_id is not None:
        error["request_id"] = request_id
    error.update(details or {})
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def capacity_error_response(exc: CapacityError) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, Overloaded) else None
    return error_response(STATUS.get(type(exc), 400), exc.code, str(exc), exc.request_id, headers, exc.details())


def internal_error_response(exc: BaseException) -> JSONResponse:
    """A 500 that says nothing about the internals (the stack trace goes to the log)."""
    log.error("unexpected error", exc_info=exc)
    return error_response(500, "internal_error", "unexpected error; nothing was changed by this request")
