"""Request bodies of the HTTP contract (v1), and the response bodies that are HTTP's own (the rest are the
public models of ``capacity_service.models``). Requests are strict: unknown fields, wrong types and
out-of-range numbers are rejected, never coerced."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from fastapi import Path
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    RootModel,
    Strict,
    StrictBool,
    StrictStr,
)

from capacity_service.application.checks import in_utc
from capacity_service.domain import LONGEST_HOLD_SECONDS, MAX_HOLD_SECONDS, MAX_WAITLIST_LIMIT
from capacity_service.domain.choice import SlotChoice
from capacity_service.domain.order import MAX_ORDER_LINES
from capacity_service.domain.schedule import MAX_ID_PREFIX, MAX_SLOT_MINUTES, MAX_SLOT_STARTS, MAX_ZONES
from capacity_service.errors import InvalidRequest
from capacity_service.models import ScheduleTemplate, Weekday

POOL_ID = Annotated[str, Path(pattern=r"^[A-Za-z0-9._:-]{1,128}$", description="1-128 of [A-Za-z0-9._:-]")]
RESERVATION_ID = Annotated[str, Path(max_length=256, description="as returned by a reserve")]
WAITLIST_ENTRY_ID = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{16,64}$", description="as returned by a join")]
ORDER_ID = Annotated[str, Path(pattern=r"^[A-Za-z0-9._:-]{1,128}$", description="1-128 of [A-Za-z0-9._:-]")]
WEBHOOK_ID = Annotated[str, Path(pattern=r"^[A-Za-z0-9._:-]{1,128}$", description="1-128 of [A-Za-z0-9._:-]")]
SCHEDULE_ID = Annotated[str, Path(pattern=r"^[A-Za-z0-9._:-]{1,128}$", description="1-128 of [A-Za-z0-9._:-]")]
MAX_QUANTITY = 1_000_000
MAX_CAPACITY = 1_000_000_000
# No control characters (NUL above all): zones and request ids end up in logs and in the warehouse, and
# PostgreSQL's text cannot hold a NUL.
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"


def _as_utc(value: datetime | None) -> datetime | None:
    # A slot without a zone is taken as UTC, so every stored slot compares with every other.
    if value is None:
        return None
    try:
        return in_utc(value)
    except InvalidRequest:  # out of the range of dates: pydantic reports a ValueError only
        raise ValueError("a date-time out of the range of dates") from None


# Strict: an RFC 3339 string, as the schema says (a number is not taken as a Unix time).
UtcDatetime = Annotated[datetime, Strict(), AfterValidator(_as_utc)]


def _integral(value: object) -> int:
    # JSON Schema's integer: 408 and 408.0 alike; never a string or a boolean (no coercion).
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ValueError("must be an integer")


Integral = BeforeValidator(_integral)  # after the Field bounds, so that they stay in the JSON schema


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PutPoolRequest(_Request):
    """A pool's settings. When both are given, ``slot_end`` must be after ``slot_start`` (422 otherwise):
    a rule between two fields that JSON Schema cannot express."""

    capacity: Annotated[int, Field(ge=0, le=MAX_CAPACITY), Integral]
    zone: Annotated[StrictStr, Field(min_length=1, max_length=128, pattern=PRINTABLE)]
    slot_start: UtcDatetime | None = None
    slot_end: UtcDatetime | None = None
    # Left out: as the pool has them (for a new pool 86,400 and 10,000).
    max_hold_seconds: Annotated[int, Field(ge=1, le=LONGEST_HOLD_SECONDS), Integral] | None = None
    waitlist_limit: Annotated[int, Field(ge=0, le=MAX_WAITLIST_LIMIT), Integral] | None = None


WebhookEventType = Literal[
    "pool.sold_out", "pool.back_on_sale", "hold.expired", "waitlist.offered", "order.confirmed", "order.cancelled"
]


class PutWebhookRequest(_Request):
    """A webhook: where to POST (http or https; private addresses only when the service allows them), which
    events, and the secret that signs every delivery (never shown again)."""

    url: Annotated[
        StrictStr, Field(min_length=1, max_length=2048, pattern=r"^https?://[A-Za-z0-9.:_\[\]-]+([/?#][!-~]*)?$")
    ]
    events: Annotated[list[WebhookEventType], Field(min_length=1, max_length=6)]
    secret: Annotated[StrictStr, Field(min_length=16, max_length=512, pattern=PRINTABLE)]


class AvailabilityRequest(_Request):
    zone: Annotated[StrictStr, Field(min_length=1, max_length=128, pattern=PRINTABLE)]
    slot_from: UtcDatetime | None = None
    slot_to: UtcDatetime | None = None
    quantity: Annotated[int, Field(ge=1, le=MAX_QUANTITY), Integral] = 1


RequestId = Annotated[StrictStr, Field(min_length=1, max_length=128, pattern=PRINTABLE)]
# A hold: the units go back on sale this many seconds after the pool decides, unless confirmed first.
HoldSeconds = Annotated[int, Field(ge=1, le=MAX_HOLD_SECONDS), Integral]


class ReserveRequest(_Request):
    """A reserve of a named pool."""

    pool_id: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9._:-]{1,128}$")]
    quantity: Annotated[int, Field(ge=1, le=MAX_QUANTITY), Integral] = 1
    request_id: RequestId | None = None
    hold_seconds: HoldSeconds | None = None


class JoinWaitlistRequest(_Request):
    """Wait for ``quantity`` units; when they come free they are held for this entry for ``hold_seconds``
    (default 600; at most the pool's max_hold_seconds, else 422)."""

    quantity: Annotated[int, Field(ge=1, le=MAX_QUANTITY), Integral] = 1
    request_id: RequestId
    hold_seconds: Annotated[int, Field(ge=1, le=LONGEST_HOLD_SECONDS), Integral] | None = None


class ExtendHoldRequest(_Request):
    """End the hold ``hold_seconds`` from now (at most the pool's max_hold_seconds, else 422)."""

    hold_seconds: Annotated[int, Field(ge=1, le=LONGEST_HOLD_SECONDS), Integral]


class SlotChoiceBody(_Request):
    """Any pool of ``zone`` whose slot overlaps [from, to) (an open side, or a pool without a slot, matches
    everything) with ``quantity`` left: the earliest slot first (then pool id), or the most units left."""

    zone: Annotated[StrictStr, Field(min_length=1, max_length=128, pattern=PRINTABLE)]
    slot_from: Annotated[UtcDatetime | None, Field(alias="from")] = None
    slot_to: Annotated[UtcDatetime | None, Field(alias="to")] = None
    quantity: Annotated[int, Field(ge=1, le=MAX_QUANTITY), Integral] = 1
    prefer: Literal["earliest", "most_remaining"] = "earliest"


def choice_of(body: SlotChoiceBody) -> SlotChoice:
    return SlotChoice(body.zone, body.slot_from, body.slot_to, body.quantity, body.prefer)


class ChosenReserveRequest(_Request):
    """A reserve of any pool that fits ``choose``: the service picks it, and the receipt names it. The
    quantity is the choice's."""

    choose: SlotChoiceBody
    request_id: RequestId | None = None
    hold_seconds: HoldSeconds | None = None


class ReserveBody(RootModel[ReserveRequest | ChosenReserveRequest]):
    """The body of ``POST /v1/reservations``: a named pool (``pool_id``), or a choice (``choose``), never
    both. (Documents the body; the handler parses the named form first, the hot path.)"""


class OrderLineBody(_Request):
    """``quantity`` units of ``pool_id``."""

    pool_id: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9._:-]{1,128}$")]
    quantity: Annotated[int, Field(ge=1, le=MAX_QUANTITY), Integral] = 1


class ChosenOrderLineBody(_Request):
    """The choice's quantity of any pool that fits ``choose``; the order names the pool it took."""

    choose: SlotChoiceBody


class PlaceOrderRequest(_Request):
    """Every line taken, or none. ``order_id`` makes it idempotent (one is made when absent); with
    ``hold_seconds`` every line is held until the order is confirmed, else the order is confirmed at once.
    A pool may be named by one line only (422 otherwise)."""

    order_id: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9._:-]{1,128}$")] | None = None
    lines: Annotated[list[OrderLineBody | ChosenOrderLineBody], Field(min_length=1, max_length=MAX_ORDER_LINES)]
    hold_seconds: Annotated[int, Field(ge=1, le=MAX_HOLD_SECONDS), Integral] | None = None


SlotStart = Annotated[StrictStr, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", description="a local time, HH:MM")]
ScheduleCapacity = Annotated[int, Field(ge=0, le=MAX_CAPACITY), Integral]
Day = Annotated[date, Strict()]  # "YYYY-MM-DD", as RFC 3339's full-date


class ScheduleZoneBody(_Request):
    """A zone's pools: ``capacity`` each, but ``slot_capacity``'s for the slot starts it names."""

    zone: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9._:-]{1,128}$")]
    capacity: ScheduleCapacity
    slot_capacity: dict[SlotStart, ScheduleCapacity] = {}


class PutScheduleRequest(_Request):
    """A schedule's template: on every ``weekdays`` day ``from`` .. ``to`` (both included), a slot of
    ``slot_minutes`` starting at each of ``slot_starts`` (local times in ``time_zone``, an IANA name), in
    each zone; a pool each, named ``<id_prefix><zone>:<day>T<HH>`` (``:<MM>`` for a start off the hour).
    Beyond what the schema says (422 otherwise): ``to`` not before ``from``, at most 731 days; zones and
    slot starts each once, and ``slot_capacity`` naming slot starts only; a time zone this machine knows;
    pool ids of at most 128 characters; at least one pool, and at most 100,000."""

    zones: Annotated[list[ScheduleZoneBody], Field(min_length=1, max_length=MAX_ZONES)]
    slot_starts: Annotated[list[SlotStart], Field(min_length=1, max_length=MAX_SLOT_STARTS)]
    slot_minutes: Annotated[int, Field(ge=1, le=MAX_SLOT_MINUTES), Integral]
    from_: Annotated[Day, Field(alias="from")]
    to: Day
    time_zone: Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_+/-]+$")] = "UTC"
    weekdays: Annotated[list[Weekday], Field(min_length=1, max_length=7)] = [
        "mon",
        "tue",
        "wed",
        "thu",
        "fri",
        "sat",
        "sun",
    ]
    id_prefix: Annotated[StrictStr, Field(max_length=MAX_ID_PREFIX, pattern=r"^[A-Za-z0-9._:-]*$")] = ""
    max_hold_seconds: Annotated[int, Field(ge=1, le=LONGEST_HOLD_SECONDS), Integral] | None = None
    waitlist_limit: Annotated[int, Field(ge=0, le=MAX_WAITLIST_LIMIT), Integral] | None = None
    allow_capacity_below_reserved: StrictBool = False

    def template(self) -> ScheduleTemplate:
        return ScheduleTemplate.model_validate(self.model_dump(by_alias=True))


class AvailabilityEvent(BaseModel):
    """The data of one event of the availability stream: a pool of the zone as it is now (``state``
    retired: it left availability)."""

    pool_id: str
    zone: str
    slot_start: datetime | None
    slot_end: datetime | None
    capacity: int
    remaining: int
    state: Literal["active", "retired"]
    paused: bool
    version: int


class AvailablePool(BaseModel):
    pool_id: str
    zone: str
    slot_start: datetime | None
    slot_end: datetime | None
    remaining: int


class AvailabilityBody(BaseModel):
    pools: list[AvailablePool]


class ErrorDetail(BaseModel):
    code: str
    message: str
    # On every error of a reserve: the id to repeat it with (the caller's, or the one the service made).
    request_id: str | None = None
    # order_line_refused: the line (0-based) that could not be served, its pool, and the line's own error.
    line: int | None = None
    pool_id: str | None = None
    line_error: str | None = None
    # order_failed: why (deadline, cancelled).
    reason: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class HealthBody(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = {}


class PauseRequest(_Request):
    reason: Annotated[StrictStr, Field(min_length=1, max_length=500, pattern=PRINTABLE)]


class ResetRequest(_Request):
    to_seq_nr: Annotated[int, Field(ge=1), Integral]
