"""Explicit, versioned schemas for events and snapshots, and the upcasters that read old versions.

Every stored event carries its type name and schema version; every snapshot its schema version. A
payload written in an older version is upcast (dict -> dict, one version step at a time) before it is
validated against the current schema, so changing an event means: bump ``VERSION`` on the domain event,
change its schema here, register an upcaster from the previous version. The journal only ever sees bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from json.encoder import encode_basestring as _json_string
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from capacity_service.domain import (
    DEFAULT_MAX_HOLD_SECONDS,
    DEFAULT_WAITLIST_LIMIT,
    CapacityHeld,
    CapacityReleased,
    CapacityReserved,
    HoldConfirmed,
    HoldExtended,
    HoldsExpired,
    PoolConfigured,
    PoolEvent,
    PoolPaused,
    PoolReset,
    PoolResumed,
    PoolState,
    PoolWasRetired,
    Reservation,
    ReservationStatus,
    WaitlistEntry,
    WaitlistJoined,
    WaitlistLeft,
    WaitlistOffered,
    WaitlistStatus,
)
from capacity_service.domain.order import (
    OrderConfirmed,
    OrderConfirming,
    OrderEvent,
    OrderLinesTaken,
    OrderPlaced,
    OrderUndoing,
    OrderUndone,
)
from capacity_service.domain.schedule import ScheduleApplied, ScheduleApplying, ScheduleEvent, SchedulePoolsApplied

JsonDict = dict[str, Any]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
Upcaster = Callable[[JsonDict], JsonDict]


class DecodingError(ValueError):
    """A stored payload that cannot be read: unknown type, a version with no upcaster, or corrupt."""


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PoolConfiguredV2(_Schema):
    capacity: int
    zone: str
    slot_start: datetime | None = None
    slot_end: datetime | None = None


class PoolConfiguredV3(PoolConfiguredV2):
    """V2 with the bounds of holds and of the waitlist (v2 is upcast with the defaults)."""

    max_hold_seconds: int
    waitlist_limit: int


class CapacityReservedV1(_Schema):
    reservation_id: str
    quantity: int
    request_id: str


class CapacityReleasedV1(_Schema):
    reservation_id: str
    quantity: int


class CapacityHeldV1(_Schema):
    reservation_id: str
    quantity: int
    request_id: str
    expires_at: datetime


class HoldConfirmedV1(_Schema):
    reservation_id: str


class HoldExpiredV2(_Schema):
    """Every hold the pool expired at once; v1 (one hold: ``reservation_id``, ``quantity``) is upcast."""

    reservation_ids: tuple[str, ...] = Field(min_length=1)
    quantities: tuple[int, ...]

    @model_validator(mode="after")
    def _one_quantity_per_hold(self) -> HoldExpiredV2:
        if len(self.quantities) != len(self.reservation_ids):
            raise ValueError("one quantity per expired hold")
        return self


class PoolRetiredV1(_Schema):
    pass


class HoldExtendedV1(_Schema):
    reservation_id: str
    expires_at: datetime


class WaitlistJoinedV1(_Schema):
    entry_id: str
    request_id: str
    quantity: int
    hold_seconds: int
    reservation_id: str


class WaitlistOfferedV1(_Schema):
    entry_id: str
    request_id: str
    reservation_id: str
    quantity: int
    expires_at: datetime


class WaitlistLeftV1(_Schema):
    entry_id: str
    request_id: str


class PoolPausedV1(_Schema):
    reason: str


class PoolResumedV1(_Schema):
    pass


class PoolSnapshotV1(_Schema):
    """A pool's whole state; reservations column-wise, which decodes several times faster than a list of
    objects for pools with 100k reservations."""

    VERSION: ClassVar[int] = 1

    pool_id: str
    exists: bool
    capacity: int
    zone: str
    slot_start: datetime | None
    slot_end: datetime | None
    reserved: int
    reservation_ids: list[str]
    quantities: list[int]
    request_ids: list[str]
    released: list[bool]

    @model_validator(mode="after")
    def _consistent(self) -> PoolSnapshotV1:
        count = len(self.reservation_ids)
        if not len(self.quantities) == len(self.request_ids) == len(self.released) == count:
            raise ValueError("reservation columns differ in length")
        active = sum(q for q, gone in zip(self.quantities, self.released, strict=True) if not gone)
        if active != self.reserved:
            raise ValueError("reserved does not match the active reservations")
        return self


class PoolSnapshotV2(_Schema):
    """V1 with holds: each reservation's status by name, and a hold's expiry (microseconds since the
    epoch, exact; None for the others)."""

    VERSION: ClassVar[int] = 2

    pool_id: str
    exists: bool
    capacity: int
    zone: str
    slot_start: datetime | None
    slot_end: datetime | None
    reserved: int
    reservation_ids: list[str]
    quantities: list[int]
    request_ids: list[str]
    statuses: list[ReservationStatus]
    expires_at: list[int | None]

    @model_validator(mode="after")
    def _consistent(self) -> PoolSnapshotV2:
        count = len(self.reservation_ids)
        columns = (self.quantities, self.request_ids, self.statuses, self.expires_at)
        if any(len(column) != count for column in columns):
            raise ValueError("reservation columns differ in length")
        taken = sum(q for q, status in zip(self.quantities, self.statuses, strict=True) if status.takes_capacity)
        if taken != self.reserved:
            raise ValueError("reserved does not match the held and active reservations")
        return self


class PoolSnapshotV3(PoolSnapshotV2):
    """V2 with retirement and an operator's pause."""

    VERSION: ClassVar[int] = 3

    retired: bool
    paused_reason: str | None


class PoolSnapshotV4(PoolSnapshotV3):
    """V3 with the bounds of holds and of the waitlist, and the waitlist: every entry, column-wise, in
    join order (its status by name)."""

    VERSION: ClassVar[int] = 4

    max_hold_seconds: int
    waitlist_limit: int
    entry_ids: list[str]
    entry_request_ids: list[str]
    entry_quantities: list[int]
    entry_hold_seconds: list[int]
    entry_reservation_ids: list[str]
    entry_statuses: list[WaitlistStatus]

    @model_validator(mode="after")
    def _consistent_waitlist(self) -> PoolSnapshotV4:
        count = len(self.entry_ids)
        columns = (
            self.entry_request_ids,
            self.entry_quantities,
            self.entry_hold_seconds,
            self.entry_reservation_ids,
            self.entry_statuses,
        )
        if any(len(column) != count for column in columns):
            raise ValueError("waitlist columns differ in length")
        return self


class PoolResetV1(_Schema):
    """The state the pool was set back to, written as a snapshot v3 is."""

    to_seq_nr: int
    state: PoolSnapshotV3


class PoolResetV2(_Schema):
    """The state the pool was set back to, written as a snapshot is."""

    to_seq_nr: int
    state: PoolSnapshotV4


@dataclass(frozen=True, slots=True)
class EncodedEvent:
    event_type: str
    schema_version: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class _EventSchema:
    event_class: (
        type[PoolConfigured]
        | type[CapacityReserved]
        | type[CapacityReleased]
        | type[CapacityHeld]
        | type[HoldConfirmed]
        | type[HoldsExpired]
        | type[PoolWasRetired]
        | type[PoolPaused]
        | type[PoolResumed]
        | type[HoldExtended]
        | type[WaitlistJoined]
        | type[WaitlistOffered]
        | type[WaitlistLeft]
    )
    schema: type[_Schema]


_EVENT_SCHEMAS: dict[str, _EventSchema] = {
    PoolConfigured.TYPE: _EventSchema(PoolConfigured, PoolConfiguredV3),
    CapacityReserved.TYPE: _EventSchema(CapacityReserved, CapacityReservedV1),
    CapacityReleased.TYPE: _EventSchema(CapacityReleased, CapacityReleasedV1),
    CapacityHeld.TYPE: _EventSchema(CapacityHeld, CapacityHeldV1),
    HoldConfirmed.TYPE: _EventSchema(HoldConfirmed, HoldConfirmedV1),
    HoldsExpired.TYPE: _EventSchema(HoldsExpired, HoldExpiredV2),
    PoolWasRetired.TYPE: _EventSchema(PoolWasRetired, PoolRetiredV1),
    PoolPaused.TYPE: _EventSchema(PoolPaused, PoolPausedV1),
    PoolResumed.TYPE: _EventSchema(PoolResumed, PoolResumedV1),
    HoldExtended.TYPE: _EventSchema(HoldExtended, HoldExtendedV1),
    WaitlistJoined.TYPE: _EventSchema(WaitlistJoined, WaitlistJoinedV1),
    WaitlistOffered.TYPE: _EventSchema(WaitlistOffered, WaitlistOfferedV1),
    WaitlistLeft.TYPE: _EventSchema(WaitlistLeft, WaitlistLeftV1),
}


# Events whose fields are all strings and integers: plain JSON encodes them exactly as their schema does.
_PLAIN_JSON_EVENTS = frozenset(
    {
        CapacityReserved.TYPE,
        CapacityReleased.TYPE,
        HoldConfirmed.TYPE,
        PoolWasRetired.TYPE,
        PoolPaused.TYPE,
        PoolResumed.TYPE,
        WaitlistJoined.TYPE,
        WaitlistLeft.TYPE,
    }
)
_FIELDS = {name: tuple(known.schema.model_fields) for name, known in _EVENT_SCHEMAS.items()}


def _plain_json(event: PoolEvent, names: tuple[str, ...]) -> bytes:
    """An event of string and integer fields as compact JSON; written out, because ``json.dumps`` builds
    an encoder per call, which was half of the cost of encoding an expiry."""
    parts = []
    for name in names:
        value = getattr(event, name)
        parts.append(f'"{name}":{_json_string(value) if isinstance(value, str) else int(value)}')
    return ("{" + ",".join(parts) + "}").encode()


class Upcasters:
    """Registry of one-step upcasters keyed by (type name, version they read)."""

    def __init__(self) -> None:
        self._steps: dict[tuple[str, int], Upcaster] = {}

    def register(self, type_name: str, from_version: int, step: Upcaster) -> None:
        key = (type_name, from_version)
        if key in self._steps:
            raise ValueError(f"an upcaster for {type_name} v{from_version} is already registered")
        self._steps[key] = step

    def upcast(self, type_name: str, version: int, target_version: int, data: JsonDict) -> JsonDict:
        while version < target_version:
            step = self._steps.get((type_name, version))
            if step is None:
                raise DecodingError(f"no upcaster for {type_name} v{version}")
            data = step(data)
            version += 1
        return data


def _pool_configured_v1_to_v2(data: JsonDict) -> JsonDict:
    # v1 (the first schema) had no slot; v2 added the optional delivery slot.
    return {**data, "slot_start": None, "slot_end": None}


def _pool_configured_v2_to_v3(data: JsonDict) -> JsonDict:
    # v2 had no bounds of holds or of the waitlist: a pool configured then has the defaults.
    return {**data, "max_hold_seconds": DEFAULT_MAX_HOLD_SECONDS, "waitlist_limit": DEFAULT_WAITLIST_LIMIT}


def _hold_expired_v1_to_v2(data: JsonDict) -> JsonDict:
    # v1 carried one hold; v2 carries every hold expired at once.
    return {"reservation_ids": [data["reservation_id"]], "quantities": [data["quantity"]]}


def default_upcasters() -> Upcasters:
    upcasters = Upcasters()
    upcasters.register(PoolConfigured.TYPE, 1, _pool_configured_v1_to_v2)
    upcasters.register(PoolConfigured.TYPE, 2, _pool_configured_v2_to_v3)
    upcasters.register(HoldsExpired.TYPE, 1, _hold_expired_v1_to_v2)
    return upcasters


class Codec:
    """Turns domain events and pool states into versioned bytes and back."""

    def __init__(self, upcasters: Upcasters | None = None) -> None:
        self._upcasters = upcasters if upcasters is not None else default_upcasters()

    def encode_event(self, event: PoolEvent) -> EncodedEvent:
        if isinstance(event, PoolReset):
            _, state = self.encode_snapshot(event.state)
            payload = b'{"to_seq_nr":%d,"state":%s}' % (event.to_seq_nr, state)
            return EncodedEvent(event.TYPE, event.VERSION, payload)
        names = _FIELDS[event.TYPE]
        if event.TYPE in _PLAIN_JSON_EVENTS:  # the same bytes as pydantic's, far cheaper
            payload = _plain_json(event, names)
        else:
            fields = {name: getattr(event, name) for name in names}
            payload = _EVENT_SCHEMAS[event.TYPE].schema.model_construct(**fields).model_dump_json().encode()
        return EncodedEvent(event.TYPE, event.VERSION, payload)

    def decode_event(self, event_type: str, schema_version: int, payload: bytes) -> PoolEvent:
        if event_type == PoolReset.TYPE:
            return _decode_reset(schema_version, payload)
        known = _EVENT_SCHEMAS.get(event_type)
        if known is None:
            raise DecodingError(f"unknown event type {event_type!r}")
        current = known.event_class.VERSION
        try:
            if schema_version == current:
                model = known.schema.model_validate_json(payload)
            elif schema_version < current:
                data = self._upcasters.upcast(event_type, schema_version, current, json.loads(payload))
                model = known.schema.model_validate(data)
            else:
                raise DecodingError(f"{event_type} v{schema_version} is newer than this code (v{current})")
        except (ValidationError, ValueError) as exc:
            if isinstance(exc, DecodingError):
                raise
            raise DecodingError(f"corrupt {event_type} v{schema_version} payload: {exc}") from exc
        return known.event_class(**dict(model))

    def encode_snapshot(self, state: PoolState) -> tuple[int, bytes]:
        reservations = list(state.reservations.values())
        entries = list(state.waitlist.values())
        snapshot = PoolSnapshotV4.model_construct(
            pool_id=state.pool_id,
            exists=state.exists,
            capacity=state.capacity,
            zone=state.zone,
            slot_start=state.slot_start,
            slot_end=state.slot_end,
            reserved=state.reserved,
            reservation_ids=[r.reservation_id for r in reservations],
            quantities=[r.quantity for r in reservations],
            request_ids=[r.request_id for r in reservations],
            statuses=[r.status for r in reservations],
            expires_at=[
                None if r.expires_at is None else (r.expires_at - _EPOCH) // _MICROSECOND for r in reservations
            ],
            retired=state.retired,
            paused_reason=state.paused_reason,
            max_hold_seconds=state.max_hold_seconds,
            waitlist_limit=state.waitlist_limit,
            entry_ids=[e.entry_id for e in entries],
            entry_request_ids=[e.request_id for e in entries],
            entry_quantities=[e.quantity for e in entries],
            entry_hold_seconds=[e.hold_seconds for e in entries],
            entry_reservation_ids=[e.reservation_id for e in entries],
            entry_statuses=[e.status for e in entries],
        )
        return PoolSnapshotV4.VERSION, snapshot.model_dump_json().encode()

    def decode_snapshot(self, schema_version: int, payload: bytes) -> PoolState:
        try:
            if schema_version == PoolSnapshotV4.VERSION:
                return _state_of(PoolSnapshotV4.model_validate_json(payload))
            if schema_version == PoolSnapshotV3.VERSION:
                return _state_of(_upcast_snapshot_v3(PoolSnapshotV3.model_validate_json(payload)))
            if schema_version == PoolSnapshotV2.VERSION:
                return _state_of(_upcast_snapshot_v3(_upcast_snapshot_v2(PoolSnapshotV2.model_validate_json(payload))))
            if schema_version == PoolSnapshotV1.VERSION:
                v2 = _upcast_snapshot_v1(PoolSnapshotV1.model_validate_json(payload))
                return _state_of(_upcast_snapshot_v3(_upcast_snapshot_v2(v2)))
        except ValidationError as exc:
            raise DecodingError(f"corrupt snapshot: {exc.error_count()} errors") from exc
        raise DecodingError(f"unknown snapshot version {schema_version}")


def _decode_reset(schema_version: int, payload: bytes) -> PoolReset:
    if schema_version not in (1, PoolReset.VERSION):
        raise DecodingError(f"{PoolReset.TYPE} v{schema_version} is not known to this code (v{PoolReset.VERSION})")
    try:
        if schema_version == 1:
            old = PoolResetV1.model_validate_json(payload)
            return PoolReset(old.to_seq_nr, _state_of(_upcast_snapshot_v3(old.state)))
        reset = PoolResetV2.model_validate_json(payload)
    except ValidationError as exc:
        raise DecodingError(f"corrupt {PoolReset.TYPE} payload: {exc.error_count()} errors") from exc
    return PoolReset(reset.to_seq_nr, _state_of(reset.state))


def _upcast_snapshot_v1(snap: PoolSnapshotV1) -> PoolSnapshotV2:
    # v1 (before holds) knew active and released reservations only.
    released, active = ReservationStatus.RELEASED, ReservationStatus.ACTIVE
    return PoolSnapshotV2.model_construct(
        **snap.model_dump(exclude={"released"}),
        statuses=[released if gone else active for gone in snap.released],
        expires_at=[None] * len(snap.released),
    )


def _upcast_snapshot_v2(snap: PoolSnapshotV2) -> PoolSnapshotV3:
    # v2 (before retirement and pauses): no pool was retired or paused.
    return PoolSnapshotV3.model_construct(**dict(snap), retired=False, paused_reason=None)


def _upcast_snapshot_v3(snap: PoolSnapshotV3) -> PoolSnapshotV4:
    # v3 (before waitlists and longer holds): the defaults, and no one waiting.
    return PoolSnapshotV4.model_construct(
        **dict(snap),
        max_hold_seconds=DEFAULT_MAX_HOLD_SECONDS,
        waitlist_limit=DEFAULT_WAITLIST_LIMIT,
        entry_ids=[],
        entry_request_ids=[],
        entry_quantities=[],
        entry_hold_seconds=[],
        entry_reservation_ids=[],
        entry_statuses=[],
    )


def _state_of(snap: PoolSnapshotV4) -> PoolState:
    reservations = {
        rid: Reservation(
            rid, quantity, request_id, status, None if expires_at is None else _EPOCH + expires_at * _MICROSECOND
        )
        for rid, quantity, request_id, status, expires_at in zip(
            snap.reservation_ids, snap.quantities, snap.request_ids, snap.statuses, snap.expires_at, strict=True
        )
    }
    entry_columns = (
        snap.entry_ids,
        snap.entry_request_ids,
        snap.entry_quantities,
        snap.entry_hold_seconds,
        snap.entry_reservation_ids,
        snap.entry_statuses,
    )
    waitlist = {fields[0]: WaitlistEntry(*fields) for fields in zip(*entry_columns, strict=True)}
    return PoolState(
        pool_id=snap.pool_id,
        exists=snap.exists,
        capacity=snap.capacity,
        zone=snap.zone,
        slot_start=snap.slot_start,
        slot_end=snap.slot_end,
        reserved=snap.reserved,
        reservations=reservations,
        reservation_by_request={r.request_id: rid for rid, r in reservations.items()},
        retired=snap.retired,
        paused_reason=snap.paused_reason,
        max_hold_seconds=snap.max_hold_seconds,
        waitlist_limit=snap.waitlist_limit,
        waitlist=waitlist,
        waiting={e.entry_id: None for e in waitlist.values() if e.status is WaitlistStatus.WAITING},
        waitlist_by_request={e.request_id: e.entry_id for e in waitlist.values()},
    )


def _microseconds(moment: datetime | None) -> int | None:
    return None if moment is None else (moment - _EPOCH) // _MICROSECOND


def _datetime(microseconds: int | None) -> datetime | None:
    return None if microseconds is None else _EPOCH + microseconds * _MICROSECOND


class _VersionedEvent(Protocol):
    TYPE: ClassVar[str]
    VERSION: ClassVar[int]


EventT = TypeVar("EventT", bound=_VersionedEvent)


class OwnSchemaCodec(Generic[EventT]):
    """Turns the events of a stream whose events are their own schemas (version 1 of each) into versioned
    bytes and back; a change to one adds an explicit schema of the old version and an upcaster, as for pool
    events. A subclass names its stream (for the error on an unknown type) and its event classes."""

    _STREAM: ClassVar[str]
    _ADAPTERS: ClassVar[dict[str, TypeAdapter[Any]]]

    def __init_subclass__(cls, *, stream: str, events: tuple[type[_VersionedEvent], ...]) -> None:
        super().__init_subclass__()
        cls._STREAM = stream
        # built once a class: a TypeAdapter costs milliseconds, and a codec is made per writer
        cls._ADAPTERS = {event.TYPE: TypeAdapter(event) for event in events}

    def encode_event(self, event: EventT) -> EncodedEvent:
        return EncodedEvent(event.TYPE, event.VERSION, self._ADAPTERS[event.TYPE].dump_json(event))

    def decode_event(self, event_type: str, schema_version: int, payload: bytes) -> EventT:
        adapter = self._ADAPTERS.get(event_type)
        if adapter is None:
            raise DecodingError(f"unknown {self._STREAM} event type {event_type!r}")
        if schema_version != 1:
            raise DecodingError(f"{event_type} v{schema_version} is not known to this code (v1)")
        try:
            event: EventT = adapter.validate_json(payload)
        except ValidationError as exc:
            raise DecodingError(f"corrupt {event_type} v{schema_version} payload: {exc}") from exc
        return event


class OrderCodec(
    OwnSchemaCodec[OrderEvent],
    stream="order",
    events=(OrderPlaced, OrderLinesTaken, OrderConfirming, OrderConfirmed, OrderUndoing, OrderUndone),
):
    """Turns order events into versioned bytes and back."""


class ScheduleCodec(
    OwnSchemaCodec[ScheduleEvent],
    stream="schedule",
    events=(ScheduleApplying, SchedulePoolsApplied, ScheduleApplied),
):
    """Turns schedule events into versioned bytes and back (the template travels whole in
    ``ScheduleApplying``)."""
