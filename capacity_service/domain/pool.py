"""The capacity pool aggregate: its state, ``decide`` (command -> events or a rejection) and ``apply``.

Invariants: ``reserved`` is always the sum of the held and active reservations' quantities, a reserve
(or hold) is accepted only when it fits in ``capacity - reserved``, and a hold ends once: confirmed,
released or expired. ``decide`` takes the pool's clock (``now``) for holds: their expiry, and when they
are due. ``apply`` evolves the state in place (replaying
100k events must not copy a dict per event); take ``copy()`` first to keep an old state.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import NamedTuple

from capacity_service.domain.commands import (
    ConfigurePool,
    Confirm,
    ExpireHolds,
    ExtendHold,
    JoinWaitlist,
    LeaveWaitlist,
    PausePool,
    PoolCommand,
    Release,
    Reserve,
    ResetPool,
    ResumePool,
    RetirePool,
)
from capacity_service.domain.events import (
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
    PoolWasRetired,
    WaitlistJoined,
    WaitlistLeft,
    WaitlistOffered,
)
from capacity_service.domain.ids import InvalidId, pool_of_reservation
from capacity_service.domain.values import pickled_by_fields
from capacity_service.domain.waitlist import (
    DEFAULT_MAX_HOLD_SECONDS,
    DEFAULT_WAITLIST_LIMIT,
    LONGEST_HOLD_SECONDS,
    MAX_WAITLIST_LIMIT,
    WaitlistEntry,
    WaitlistStatus,
    offer_request_id,
)

# The longest hold the contract allows (a day).
MAX_HOLD_SECONDS = 86_400


class ReservationStatus(StrEnum):
    HELD = "held"
    ACTIVE = "active"
    RELEASED = "released"
    EXPIRED = "expired"

    @property
    def takes_capacity(self) -> bool:
        return self is ReservationStatus.HELD or self is ReservationStatus.ACTIVE


class Reservation(NamedTuple):
    """Immutable: a release replaces it. The state then copies in C time (a snapshot's capture), and
    the garbage collector stops tracking tuples of plain values (its full collections scanned every
    reservation: tens of milliseconds in the middle of a hot pool's writes)."""

    reservation_id: str
    quantity: int
    request_id: str
    status: ReservationStatus = ReservationStatus.ACTIVE
    # When a hold expires unless confirmed first; None once confirmed, and for plain reservations.
    expires_at: datetime | None = None

    def is_due(self, now: datetime) -> bool:
        """A hold whose expiry has come."""
        return self.status is ReservationStatus.HELD and self.expires_at is not None and self.expires_at <= now


@dataclass(slots=True)
class PoolState:
    pool_id: str
    exists: bool = False
    capacity: int = 0
    zone: str = ""
    slot_start: datetime | None = None
    slot_end: datetime | None = None
    reserved: int = 0
    reservations: dict[str, Reservation] = field(default_factory=dict)
    reservation_by_request: dict[str, str] = field(default_factory=dict)
    retired: bool = False
    # Why an operator paused the pool's writes; None: not paused.
    paused_reason: str | None = None
    max_hold_seconds: int = DEFAULT_MAX_HOLD_SECONDS
    waitlist_limit: int = DEFAULT_WAITLIST_LIMIT
    # Every entry that ever joined, in join order; ``waiting``: the ids of those still waiting, in order.
    waitlist: dict[str, WaitlistEntry] = field(default_factory=dict)
    waiting: dict[str, None] = field(default_factory=dict)
    waitlist_by_request: dict[str, str] = field(default_factory=dict)

    @property
    def remaining(self) -> int:
        return max(0, self.capacity - self.reserved)

    @property
    def dormant(self) -> bool:
        """Retired with nothing held or active: nothing will ever change it again by itself, so it need
        not be hosted (a command for it recovers it from the journal). Quantities are at least 1, so
        nothing is held or active exactly when nothing is reserved."""
        return self.retired and self.reserved == 0

    @property
    def offers_open(self) -> bool:
        """Whether units that come free go to the waitlist: not while paused, never once retired."""
        return not self.retired and self.paused_reason is None

    def waiting_position(self, entry_id: str) -> int | None:
        """1 for the first entry waiting; None for an entry not waiting."""
        if entry_id not in self.waiting:
            return None
        if next(reversed(self.waiting)) == entry_id:  # the one that just joined: no scan
            return len(self.waiting)
        return list(self.waiting).index(entry_id) + 1

    def reservation_for_request(self, request_id: str) -> Reservation | None:
        reservation_id = self.reservation_by_request.get(request_id)
        return None if reservation_id is None else self.reservations[reservation_id]

    def copy(self) -> PoolState:
        return PoolState(
            pool_id=self.pool_id,
            exists=self.exists,
            capacity=self.capacity,
            zone=self.zone,
            slot_start=self.slot_start,
            slot_end=self.slot_end,
            reserved=self.reserved,
            reservations=dict(self.reservations),
            reservation_by_request=dict(self.reservation_by_request),
            retired=self.retired,
            paused_reason=self.paused_reason,
            max_hold_seconds=self.max_hold_seconds,
            waitlist_limit=self.waitlist_limit,
            waitlist=dict(self.waitlist),
            waiting=dict(self.waiting),
            waitlist_by_request=dict(self.waitlist_by_request),
        )


# Rejections are values, not exceptions: deciding is a pure function and the edge maps them to errors.
@pickled_by_fields
@dataclass(frozen=True, slots=True)
class UnknownPool:
    pool_id: str


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class NotEnoughCapacity:
    pool_id: str
    requested: int
    remaining: int


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class UnknownReservation:
    reservation_id: str


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class RequestIdReused:
    """The request id was already used on this pool for a reservation of another quantity."""

    request_id: str
    reservation_id: str


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class HoldHasExpired:
    """A confirm came after the hold's expiry: its units went back on sale."""

    reservation_id: str


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class ReservationWasReleased:
    """A confirm of a reservation that was released."""

    reservation_id: str


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class PoolIsRetired:
    """A reserve or a change of a retired pool."""

    pool_id: str


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class PoolIsPaused:
    """A write to a paused pool: nothing was decided."""

    pool_id: str
    reason: str


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class ReservationIsActive:
    """An extend of a reservation that is active (confirmed, or never a hold): it has no expiry to move."""

    reservation_id: str


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class UnknownWaitlistEntry:
    pool_id: str
    entry_id: str


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class WaitlistIsFull:
    """A join when ``limit`` entries wait already."""

    pool_id: str
    limit: int


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class LowersBelowReserved:
    """A configure that would lower capacity below what is held and active, asked not to (a schedule's)."""

    pool_id: str
    capacity: int
    reserved: int


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class InvalidCommand:
    reason: str


Rejection = (
    UnknownPool
    | NotEnoughCapacity
    | UnknownReservation
    | RequestIdReused
    | HoldHasExpired
    | ReservationWasReleased
    | PoolIsRetired
    | PoolIsPaused
    | ReservationIsActive
    | UnknownWaitlistEntry
    | WaitlistIsFull
    | LowersBelowReserved
    | InvalidCommand
)
Decision = list[PoolEvent] | Rejection


def decide(state: PoolState, command: PoolCommand, now: datetime | None = None) -> Decision:
    """The events a command produces against ``state``, or why it is rejected. An empty list means the
    command is already satisfied (an idempotent repeat). ``now``: the pool's clock, which holds need
    (without it a hold is refused, nothing expires and nothing is offered). Units the command frees are
    offered to the waitlist in the same decision (``_with_offers``)."""
    decision = _decide(state, command, now)
    may_offer = state.waiting or isinstance(command, JoinWaitlist)
    if isinstance(decision, list) and decision and may_offer and now is not None:
        return _with_offers(state, decision, now)
    return decision


def _decide(state: PoolState, command: PoolCommand, now: datetime | None) -> Decision:
    if isinstance(command, PausePool | ResumePool):
        return _decide_pause(state, command)
    if isinstance(command, ResetPool):
        return _decide_reset(state, command)
    if state.paused_reason is not None and _stopped_by_a_pause(state, command):
        return PoolIsPaused(state.pool_id, state.paused_reason)
    if isinstance(command, ConfigurePool):
        return _decide_configure(state, command)
    if isinstance(command, Reserve):
        return _decide_reserve(state, command, now)
    if isinstance(command, Release):
        return _decide_release(state, command)
    if isinstance(command, Confirm):
        return _decide_confirm(state, command)
    if isinstance(command, RetirePool):
        return _decide_retire(state)
    if isinstance(command, ExtendHold):
        return _decide_extend(state, command, now)
    if isinstance(command, JoinWaitlist):
        return _decide_join(state, command)
    if isinstance(command, LeaveWaitlist):
        return _decide_leave(state, command)
    return _decide_expiry(state, command, now)


def _decide_configure(state: PoolState, command: ConfigurePool) -> Decision:
    if command.capacity < 0:
        return InvalidCommand("capacity must be >= 0")
    if not command.zone:
        return InvalidCommand("zone must not be empty")
    if command.slot_start and command.slot_end and command.slot_end <= command.slot_start:
        return InvalidCommand("slot_end must be after slot_start")
    max_hold_seconds = state.max_hold_seconds if command.max_hold_seconds is None else command.max_hold_seconds
    waitlist_limit = state.waitlist_limit if command.waitlist_limit is None else command.waitlist_limit
    if not 1 <= max_hold_seconds <= LONGEST_HOLD_SECONDS:
        return InvalidCommand(f"max_hold_seconds must be 1..{LONGEST_HOLD_SECONDS}")
    if not 0 <= waitlist_limit <= MAX_WAITLIST_LIMIT:
        return InvalidCommand(f"waitlist_limit must be 0..{MAX_WAITLIST_LIMIT}")
    if state.retired:
        return PoolIsRetired(state.pool_id)
    configured = PoolConfigured(
        command.capacity, command.zone, command.slot_start, command.slot_end, max_hold_seconds, waitlist_limit
    )
    if state.exists and configured == _configuration_of(state):
        return []
    lowered = state.exists and command.capacity < state.capacity
    if command.refuse_below_reserved and lowered and command.capacity < state.reserved:
        return LowersBelowReserved(state.pool_id, command.capacity, state.reserved)
    return [configured]


def _configuration_of(state: PoolState) -> PoolConfigured:
    return PoolConfigured(
        state.capacity, state.zone, state.slot_start, state.slot_end, state.max_hold_seconds, state.waitlist_limit
    )


def _decide_reserve(state: PoolState, command: Reserve, now: datetime | None) -> Decision:
    if not state.exists:
        return UnknownPool(state.pool_id)
    previous = state.reservation_for_request(command.request_id)
    if previous is not None:  # a retry is answered as before, retired or not
        if previous.quantity != command.quantity:
            return RequestIdReused(command.request_id, previous.reservation_id)
        return []
    if state.retired:
        return PoolIsRetired(state.pool_id)
    if command.quantity < 1:
        return InvalidCommand("quantity must be >= 1")
    if _owning_pool(command.reservation_id) != state.pool_id:
        return InvalidCommand("reservation id does not belong to this pool")
    if command.reservation_id in state.reservations:
        return InvalidCommand("reservation id already used")
    if command.hold_seconds is not None and not 1 <= command.hold_seconds <= MAX_HOLD_SECONDS:
        return InvalidCommand(f"hold_seconds must be 1..{MAX_HOLD_SECONDS}")
    if command.hold_seconds is not None and now is None:
        return InvalidCommand("a hold needs the pool's clock")
    if command.quantity > state.capacity - state.reserved:
        return NotEnoughCapacity(state.pool_id, command.quantity, state.remaining)
    if command.hold_seconds is not None and now is not None:
        expires_at = now + timedelta(seconds=command.hold_seconds)
        return [CapacityHeld(command.reservation_id, command.quantity, command.request_id, expires_at)]
    return [CapacityReserved(command.reservation_id, command.quantity, command.request_id)]


def _decide_release(state: PoolState, command: Release) -> Decision:
    reservation = state.reservations.get(command.reservation_id)
    if reservation is None:
        return UnknownReservation(command.reservation_id)
    if not reservation.status.takes_capacity:  # released already, or expired: nothing to give back
        return []
    return [CapacityReleased(reservation.reservation_id, reservation.quantity)]


def _decide_confirm(state: PoolState, command: Confirm) -> Decision:
    reservation = state.reservations.get(command.reservation_id)
    if reservation is None:
        return UnknownReservation(command.reservation_id)
    if reservation.status is ReservationStatus.HELD:
        return [HoldConfirmed(reservation.reservation_id)]
    if reservation.status is ReservationStatus.ACTIVE:
        return []
    if reservation.status is ReservationStatus.EXPIRED:
        return HoldHasExpired(reservation.reservation_id)
    return ReservationWasReleased(reservation.reservation_id)


def _decide_extend(state: PoolState, command: ExtendHold, now: datetime | None) -> Decision:
    reservation = state.reservations.get(command.reservation_id)
    if reservation is None:
        return UnknownReservation(command.reservation_id)
    if reservation.status is ReservationStatus.EXPIRED:
        return HoldHasExpired(reservation.reservation_id)
    if reservation.status is ReservationStatus.RELEASED:
        return ReservationWasReleased(reservation.reservation_id)
    if reservation.status is ReservationStatus.ACTIVE or reservation.expires_at is None:
        return ReservationIsActive(reservation.reservation_id)
    if not 1 <= command.hold_seconds <= state.max_hold_seconds:
        return InvalidCommand(f"hold_seconds must be 1..{state.max_hold_seconds} (the pool's max_hold_seconds)")
    if now is None:
        return InvalidCommand("a hold needs the pool's clock")
    expires_at = now + timedelta(seconds=command.hold_seconds)
    if expires_at <= reservation.expires_at:  # never shortened: a repeat, or a shorter ask, changes nothing
        return []
    return [HoldExtended(reservation.reservation_id, expires_at)]


def _decide_join(state: PoolState, command: JoinWaitlist) -> Decision:
    if not state.exists:
        return UnknownPool(state.pool_id)
    previous_id = state.waitlist_by_request.get(command.request_id)
    if previous_id is not None:  # a retry is answered as before, retired or not
        previous = state.waitlist[previous_id]
        if (previous.quantity, previous.hold_seconds) != (command.quantity, command.hold_seconds):
            return RequestIdReused(command.request_id, previous.reservation_id)
        return []
    if state.retired:
        return PoolIsRetired(state.pool_id)
    if command.quantity < 1:
        return InvalidCommand("quantity must be >= 1")
    if not 1 <= command.hold_seconds <= state.max_hold_seconds:
        return InvalidCommand(f"hold_seconds must be 1..{state.max_hold_seconds} (the pool's max_hold_seconds)")
    if _owning_pool(command.reservation_id) != state.pool_id:
        return InvalidCommand("reservation id does not belong to this pool")
    if command.reservation_id in state.reservations or command.entry_id in state.waitlist:
        return InvalidCommand("entry or reservation id already used")
    if len(state.waiting) >= state.waitlist_limit:
        return WaitlistIsFull(state.pool_id, state.waitlist_limit)
    return [
        WaitlistJoined(
            command.entry_id, command.request_id, command.quantity, command.hold_seconds, command.reservation_id
        )
    ]


def _decide_leave(state: PoolState, command: LeaveWaitlist) -> Decision:
    entry = state.waitlist.get(command.entry_id)
    if entry is None:
        return UnknownWaitlistEntry(state.pool_id, command.entry_id)
    return [WaitlistLeft(entry.entry_id, entry.request_id)] if entry.status is WaitlistStatus.WAITING else []


def _with_offers(state: PoolState, events: list[PoolEvent], now: datetime) -> list[PoolEvent]:
    """``events`` and the offers they make possible: units they free (or entries they add) go to the
    entries waiting, in join order, each offered a hold if it fits in what is left (an entry too large is
    skipped and keeps its place). Only events that may let an entry fit cause a scan, so that a reserve
    costs nothing however long the waitlist is; a join alone considers only the entries it adds (in an open
    pool no entry waiting before fits)."""
    capacity, reserved, open_ = state.capacity, state.reserved, state.offers_open
    frees = False
    joined: list[WaitlistEntry] = []
    for event in events:
        if isinstance(event, CapacityReleased):
            reserved, frees = reserved - event.quantity, True
        elif isinstance(event, HoldsExpired):
            reserved, frees = reserved - sum(event.quantities), True
        elif isinstance(event, CapacityReserved | CapacityHeld | WaitlistOffered):
            reserved += event.quantity
        elif isinstance(event, PoolConfigured):
            capacity, frees = event.capacity, True
        elif isinstance(event, PoolReset):
            capacity, reserved, frees = event.state.capacity, event.state.reserved, True
        elif isinstance(event, PoolResumed):
            open_, frees = True, True
        elif isinstance(event, PoolPaused | PoolWasRetired):
            open_ = False
        elif isinstance(event, WaitlistJoined):
            joined.append(WaitlistEntry(*_entry_fields(event)))
    room = capacity - reserved
    if not open_ or room <= 0 or not (frees or joined):
        return events
    # Lazily: the walk stops as soon as nothing is free, however many wait behind.
    waiting = (state.waitlist[entry_id] for entry_id in state.waiting)
    candidates: Iterable[WaitlistEntry] = itertools.chain(waiting, joined) if frees else joined
    offers: list[PoolEvent] = []
    for entry in candidates:
        if entry.quantity <= room:
            expires_at = now + timedelta(seconds=entry.hold_seconds)
            offers.append(
                WaitlistOffered(entry.entry_id, entry.request_id, entry.reservation_id, entry.quantity, expires_at)
            )
            room -= entry.quantity
            if room == 0:
                break
    return [*events, *offers] if offers else events


def _entry_fields(event: WaitlistJoined) -> tuple[str, str, int, int, str]:
    return event.entry_id, event.request_id, event.quantity, event.hold_seconds, event.reservation_id


def _stopped_by_a_pause(state: PoolState, command: PoolCommand) -> bool:
    """Every write but the pool's own expiry of holds, and a retried reserve or join (answered as before)."""
    if isinstance(command, ExpireHolds):
        return False
    if isinstance(command, JoinWaitlist):
        return command.request_id not in state.waitlist_by_request
    return not (isinstance(command, Reserve) and state.reservation_for_request(command.request_id) is not None)


def _decide_pause(state: PoolState, command: PausePool | ResumePool) -> Decision:
    if not state.exists:
        return UnknownPool(state.pool_id)
    if isinstance(command, ResumePool):
        return [] if state.paused_reason is None else [PoolResumed()]
    if not command.reason or len(command.reason) > 500:
        return InvalidCommand("reason must be 1-500 characters")
    return [] if state.paused_reason is not None else [PoolPaused(command.reason)]


def _decide_reset(state: PoolState, command: ResetPool) -> Decision:
    """Allowed paused (the way to repair a pool is to pause it, reset it, check it, resume it)."""
    if not state.exists:
        return UnknownPool(state.pool_id)
    if command.to_seq_nr < 1 or command.state.pool_id != state.pool_id or not command.state.exists:
        return InvalidCommand("reset to a state of this pool after one of its events")
    return [PoolReset(command.to_seq_nr, command.state.copy())]


def _decide_retire(state: PoolState) -> Decision:
    if not state.exists:
        return UnknownPool(state.pool_id)
    return [] if state.retired else [PoolWasRetired()]


def _decide_expiry(state: PoolState, command: ExpireHolds, now: datetime | None) -> Decision:
    if now is None:
        return []
    expired: list[str] = []
    quantities: list[int] = []
    for reservation_id in dict.fromkeys(command.reservation_ids):
        held = state.reservations.get(reservation_id)
        if held is not None and held.is_due(now):
            expired.append(reservation_id)
            quantities.append(held.quantity)
    return [HoldsExpired(tuple(expired), tuple(quantities))] if expired else []


def _owning_pool(reservation_id: str) -> str | None:
    try:
        return pool_of_reservation(reservation_id)
    except InvalidId:
        return None


def apply(state: PoolState, event: PoolEvent) -> PoolState:
    """Evolve ``state`` by one event, in place; returns it for convenience."""
    if isinstance(event, CapacityReserved):
        state.reservations[event.reservation_id] = Reservation(event.reservation_id, event.quantity, event.request_id)
        state.reservation_by_request[event.request_id] = event.reservation_id
        state.reserved += event.quantity
    elif isinstance(event, CapacityReleased):
        released = state.reservations[event.reservation_id]
        state.reservations[event.reservation_id] = released._replace(status=ReservationStatus.RELEASED)
        state.reserved -= event.quantity
    elif isinstance(event, CapacityHeld):
        state.reservations[event.reservation_id] = Reservation(
            event.reservation_id, event.quantity, event.request_id, ReservationStatus.HELD, event.expires_at
        )
        state.reservation_by_request[event.request_id] = event.reservation_id
        state.reserved += event.quantity
    elif isinstance(event, HoldConfirmed):
        held = state.reservations[event.reservation_id]
        state.reservations[event.reservation_id] = held._replace(status=ReservationStatus.ACTIVE, expires_at=None)
    elif isinstance(event, HoldsExpired):
        reservations, expired = state.reservations, ReservationStatus.EXPIRED
        for reservation_id in event.reservation_ids:
            # Built directly rather than by ``_replace``, which dominates an expiry storm's apply.
            rid, quantity, request_id, _, expires_at = reservations[reservation_id]
            reservations[rid] = Reservation(rid, quantity, request_id, expired, expires_at)
        state.reserved -= sum(event.quantities)
    elif isinstance(event, PoolWasRetired):
        state.retired = True
    elif isinstance(event, PoolPaused):
        state.paused_reason = event.reason
    elif isinstance(event, PoolResumed):
        state.paused_reason = None
    elif isinstance(event, PoolReset):
        target = event.state
        state.capacity, state.zone, state.reserved = target.capacity, target.zone, target.reserved
        state.slot_start, state.slot_end = target.slot_start, target.slot_end
        state.max_hold_seconds, state.waitlist_limit = target.max_hold_seconds, target.waitlist_limit
        state.reservations = dict(target.reservations)
        state.reservation_by_request = dict(target.reservation_by_request)
    elif isinstance(event, HoldExtended):
        held = state.reservations[event.reservation_id]
        state.reservations[event.reservation_id] = held._replace(expires_at=event.expires_at)
    elif isinstance(event, WaitlistJoined):
        state.waitlist[event.entry_id] = WaitlistEntry(*_entry_fields(event))
        state.waiting[event.entry_id] = None
        state.waitlist_by_request[event.request_id] = event.entry_id
    elif isinstance(event, WaitlistOffered):
        state.waitlist[event.entry_id] = state.waitlist[event.entry_id]._replace(status=WaitlistStatus.OFFERED)
        del state.waiting[event.entry_id]
        request_id = offer_request_id(event.entry_id)
        state.reservations[event.reservation_id] = Reservation(
            event.reservation_id, event.quantity, request_id, ReservationStatus.HELD, event.expires_at
        )
        state.reservation_by_request[request_id] = event.reservation_id
        state.reserved += event.quantity
    elif isinstance(event, WaitlistLeft):
        state.waitlist[event.entry_id] = state.waitlist[event.entry_id]._replace(status=WaitlistStatus.LEFT)
        del state.waiting[event.entry_id]
    else:
        state.exists = True
        state.capacity = event.capacity
        state.zone = event.zone
        state.slot_start = event.slot_start
        state.slot_end = event.slot_end
        state.max_hold_seconds = event.max_hold_seconds
        state.waitlist_limit = event.waitlist_limit
    return state


def apply_all(state: PoolState, events: list[PoolEvent]) -> PoolState:
    for event in events:
        apply(state, event)
    return state


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class PoolView:
    """What readers see of a pool: the contract's pool view, plus ``version`` (the stream's seq_nr)."""

    pool_id: str
    exists: bool
    zone: str
    slot_start: datetime | None
    slot_end: datetime | None
    capacity: int
    reserved: int
    remaining: int
    version: int
    retired: bool = False
    paused: bool = False
    max_hold_seconds: int = DEFAULT_MAX_HOLD_SECONDS
    waitlist_limit: int = DEFAULT_WAITLIST_LIMIT
    waiting: int = 0


class WaitlistPlace(NamedTuple):
    """A waitlist entry as its pool shows it: its place while it waits (1: first), the hold it was offered
    as it is now, and whether the pool is retired (an entry still waiting then is never offered)."""

    entry: WaitlistEntry
    position: int | None
    offered: Reservation | None
    pool_retired: bool


def place_of(state: PoolState, entry_id: str) -> WaitlistPlace | None:
    entry = state.waitlist.get(entry_id)
    if entry is None:
        return None
    offered = state.reservations.get(entry.reservation_id) if entry.status is WaitlistStatus.OFFERED else None
    return WaitlistPlace(entry, state.waiting_position(entry_id), offered, state.retired)


def view_of(state: PoolState, version: int) -> PoolView:
    return PoolView(
        state.pool_id,
        state.exists,
        state.zone,
        state.slot_start,
        state.slot_end,
        state.capacity,
        state.reserved,
        state.remaining,
        version,
        state.retired,
        state.paused_reason is not None,
        state.max_hold_seconds,
        state.waitlist_limit,
        len(state.waiting),
    )
