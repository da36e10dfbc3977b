"""The service layer: every operation of the service as the Python client, the HTTP API and the CLI offer
it. It checks what callers send, makes new ids, sends each operation's command to its pool with a
deadline, turns a pool's rejections into the public errors, and answers with the public models.

Where commands go (``PoolGateway``) and where availability comes from (``AvailabilitySource``) are given
to it: the runtime's router and cache replicas in a Ray cluster (``runtime/bootstrap.py``), an in-process
host in tests.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime
from typing import Protocol

from capacity_service.application.availability_index import ZoneCounts
from capacity_service.application.checks import MAX_ZONE_LENGTH, check_choice, in_utc, printable
from capacity_service.application.choosing import attempt_request_id, candidates, ordered
from capacity_service.application.order_operations import ORDER_REQUEST_PREFIX, OrderGateway, OrderOperations, raised
from capacity_service.application.pool_history import JournalHistory, PoolGlance
from capacity_service.application.pool_writer import CommandOutcome
from capacity_service.application.schedule_operations import ScheduleGateway, ScheduleOperations
from capacity_service.domain import (
    DEFAULT_OFFER_HOLD_SECONDS,
    MAX_HOLD_SECONDS,
    WAITLIST_REQUEST_PREFIX,
    ConfigurePool,
    Confirm,
    ExtendHold,
    HoldHasExpired,
    InvalidCommand,
    InvalidId,
    JoinWaitlist,
    LeaveWaitlist,
    LowersBelowReserved,
    NotEnoughCapacity,
    PausePool,
    PoolCommand,
    PoolIsPaused,
    PoolIsRetired,
    PoolView,
    Release,
    RequestIdReused,
    Reservation,
    ReservationIsActive,
    ReservationStatus,
    ReservationWasReleased,
    Reserve,
    ResumePool,
    RetirePool,
    UnknownPool,
    UnknownReservation,
    UnknownWaitlistEntry,
    WaitlistIsFull,
    WaitlistPlace,
    check_pool_id,
    new_reservation_id,
    new_waitlist_entry_id,
    pool_of_reservation,
)
from capacity_service.domain.choice import SlotChoice
from capacity_service.domain.ids import is_waitlist_entry_id
from capacity_service.errors import (
    CapacityBelowReserved,
    CapacityError,
    HoldExpired,
    InsufficientCapacity,
    InvalidRequest,
    NoCapacityInWindow,
    Paused,
    PoolNotFound,
    PoolRetired,
    RequestIdConflict,
    ReservationActive,
    ReservationNotFound,
    ReservationReleased,
    Unavailable,
    WaitlistEntryNotFound,
    WaitlistFull,
)
from capacity_service.models import (
    HistoryEvent,
    Pool,
    PoolCheck,
    PoolHistory,
    PoolsChanged,
    ReleaseReceipt,
    ReservationInfo,
    ReservationReceipt,
    ZoneList,
    ZoneSummary,
)
from capacity_service.models import WaitlistPlace as WaitlistPlaceModel

MAX_REQUEST_ID_LENGTH = 128
MAX_LISTED_RESERVATIONS = 10_000
# A chosen reserve tries at most this many candidates, and looks for what an earlier try of the same request
# took on at most this many pools of the window (``reserve_chosen``).
MAX_CANDIDATES = 20
MAX_POOLS_LOOKED_AT = 200
# The longest page of a zone list, and of each list in a pool's history.
MAX_LISTED_ZONES = 1_000
MAX_HISTORY_LIMIT = 500


class PoolGateway(OrderGateway, ScheduleGateway, Protocol):
    """Where the commands and reads of a pool (and an order's, a schedule's: ``OrderGateway``,
    ``ScheduleGateway``) go; errors come back as values."""

    async def execute(
        self, pool_id: str, command: PoolCommand, deadline: float | None = None
    ) -> CommandOutcome | CapacityError: ...

    async def view(self, pool_id: str) -> PoolView | CapacityError: ...

    async def reservation(self, pool_id: str, reservation_id: str) -> Reservation | CapacityError | None: ...

    async def reservation_of_request(self, pool_id: str, request_id: str) -> Reservation | CapacityError | None: ...

    async def waitlist_place(self, pool_id: str, entry_id: str) -> WaitlistPlace | CapacityError | None: ...

    async def reservations(
        self, pool_id: str, status: ReservationStatus | None, limit: int
    ) -> list[Reservation] | CapacityError: ...

    async def reset(self, pool_id: str, to_seq_nr: int) -> CommandOutcome | CapacityError: ...

    async def check(self, pool_id: str) -> tuple[int, list[str]] | CapacityError: ...

    async def history(
        self, pool_id: str, at: datetime | None, before: int | None, limit: int
    ) -> JournalHistory | CapacityError | None:
        """The pool's history from its journal (``application/pool_history.py``); None: it has no events."""
        ...

    async def glance(self, pool_id: str, limit: int) -> PoolGlance | CapacityError | None:
        """The pool as its writer has it now, as the console shows it; None: it has no events."""
        ...

    async def live_pool_ids(self) -> list[str]: ...

    async def aclose(self) -> None: ...


class AvailabilitySource(Protocol):
    """The replicated availability cache."""

    async def query(
        self, zone: str, slot_from: datetime | None, slot_to: datetime | None, quantity: int
    ) -> list[PoolView]: ...

    def known_view(self, pool_id: str) -> PoolView | None:
        """The pool's view as a copy of the cache in this process has it, without asking anyone; None when
        there is no such copy, or it does not know the pool (then ask the pool)."""

    async def zones(self, after: str | None, limit: int) -> tuple[list[ZoneCounts], bool]:
        """Up to ``limit`` zones named after ``after``, in name order, and whether more follow."""
        ...


class CapacityOperations(OrderOperations, ScheduleOperations):
    """The operations, each checking its input and answering with a model or raising a ``CapacityError``.
    ``call_timeout_s``: how long a command may take before its pool must not decide it any more."""

    _gateway: PoolGateway

    def __init__(self, gateway: PoolGateway, availability: AvailabilitySource, call_timeout_s: float) -> None:
        self._gateway = gateway
        self._availability = availability
        self._call_timeout_s = call_timeout_s

    async def aclose(self) -> None:
        await self._gateway.aclose()

    # ------------------------------------------------------------------ pools

    async def configure_pool(
        self,
        pool_id: str,
        capacity: int,
        zone: str,
        slot_start: datetime | None = None,
        slot_end: datetime | None = None,
        max_hold_seconds: int | None = None,
        waitlist_limit: int | None = None,
    ) -> Pool:
        """Create the pool or change it. ``max_hold_seconds`` (how far from now a hold may be extended,
        1..604,800) and ``waitlist_limit`` (how many may wait, 0..100,000): None keeps what the pool has
        (86,400 and 10,000 for a new pool)."""
        created = await self.configure_pool_reporting_creation(
            pool_id, capacity, zone, slot_start, slot_end, max_hold_seconds, waitlist_limit
        )
        return created[0]

    async def configure_pool_reporting_creation(
        self,
        pool_id: str,
        capacity: int,
        zone: str,
        slot_start: datetime | None = None,
        slot_end: datetime | None = None,
        max_hold_seconds: int | None = None,
        waitlist_limit: int | None = None,
    ) -> tuple[Pool, bool]:
        """Like ``configure_pool``; also says whether this call created the pool (HTTP 201 vs 200)."""
        _check_pool_id(pool_id)
        if not (1 <= len(zone) <= MAX_ZONE_LENGTH and printable(zone)):
            raise InvalidRequest(f"zone must be 1-{MAX_ZONE_LENGTH} printable characters")
        command = ConfigurePool(capacity, zone, slot_start, slot_end, max_hold_seconds, waitlist_limit)
        outcome = await self._execute(pool_id, command)
        created = outcome.view.version == 1 and len(outcome.events) == 1
        return Pool.of(outcome.view), created

    async def get_pool(self, pool_id: str) -> Pool:
        _check_pool_id(pool_id)
        view = raised(await self._gateway.view(pool_id))
        if not view.exists:
            raise PoolNotFound(pool_id)
        return Pool.of(view)

    async def availability(
        self,
        zone: str,
        slot_from: datetime | None = None,
        slot_to: datetime | None = None,
        quantity: int = 1,
    ) -> list[Pool]:
        """Pools of ``zone`` whose slot overlaps ``[slot_from, slot_to)`` with at least ``quantity``
        remaining, from the replicated cache (it may lag a write by a little, as over HTTP)."""
        if not (1 <= len(zone) <= MAX_ZONE_LENGTH and printable(zone)):
            raise InvalidRequest(f"zone must be 1-{MAX_ZONE_LENGTH} printable characters")
        if quantity < 1:
            raise InvalidRequest("quantity must be >= 1")
        return [Pool.of(view) for view in await self._availability.query(zone, slot_from, slot_to, quantity)]

    async def retire_pool(self, pool_id: str) -> Pool:
        """Retire the pool: it takes no new reservations (``PoolRetired``) and leaves availability; releases,
        confirms and reads go on, and it stops being hosted once nothing in it is held or active. Its
        journal stays. Retiring twice is fine."""
        _check_pool_id(pool_id)
        return Pool.of((await self._execute(pool_id, RetirePool())).view)

    # ------------------------------------------------------------------ reservations

    async def reserve(
        self, pool_id: str, quantity: int = 1, request_id: str | None = None, hold_seconds: int | None = None
    ) -> ReservationReceipt:
        """Take ``quantity`` units. The same ``request_id`` on the same pool returns the same reservation
        and takes capacity once; without one, a fresh id is made per call (so our own retries are safe).
        With ``hold_seconds`` (1..86400) the units are held: they go back on sale by themselves that long
        after the pool decided, unless ``confirm`` comes first."""
        _check_pool_id(pool_id)
        _check_reserve_options(request_id, hold_seconds)
        request_id = request_id or f"auto:{uuid.uuid4().hex}"
        command = Reserve(quantity, request_id, new_reservation_id(pool_id), hold_seconds)
        try:
            outcome = await self._execute(pool_id, command)
        except CapacityError as exc:  # every answer to a reserve names the id it can be settled with
            raise _naming_request(exc, request_id) from exc
        return _receipt(pool_id, outcome, request_id)

    async def reserve_chosen(
        self, choice: SlotChoice, request_id: str | None = None, hold_seconds: int | None = None
    ) -> ReservationReceipt:
        """Take ``choice.quantity`` units of one pool of ``choice.zone`` whose slot overlaps the window,
        the best by ``choice.prefer`` among those the availability cache lists with room. The cache may be a
        little behind: a candidate that turns out full, retired, paused or gone is passed over for the next,
        until ``call_timeout_s`` from the call's start (no attempt starts after that). The receipt names the
        pool taken. ``NoCapacityInWindow`` when no candidate could take it (nothing taken); an attempt's
        other errors end the call as they are (``OutcomeUnknown`` only when that attempt's outcome is), and
        so does ``Unavailable`` when the deadline passed before any attempt.

        Each attempt is a reserve on its pool under ``attempt_request_id(request_id, pool_id)``. With a
        ``request_id`` (a repeat is possible), the pools of the window, full ones too, are first asked
        whether an earlier call took one of them under it; if so, that reservation is the answer and
        nothing else is tried (docs/http-api.md, "Choosing a slot", says where this ends)."""
        check_choice(choice)
        _check_reserve_options(request_id, hold_seconds)
        deadline = time.time() + self._call_timeout_s
        may_repeat = request_id is not None
        request_id = request_id or f"auto:{uuid.uuid4().hex}"
        try:
            return await self._reserve_chosen(choice, request_id, hold_seconds, deadline, may_repeat)
        except CapacityError as exc:  # every answer to a reserve names the id it can be settled with
            raise _naming_request(exc, request_id) from exc

    async def _reserve_chosen(
        self, choice: SlotChoice, request_id: str, hold_seconds: int | None, deadline: float, may_repeat: bool
    ) -> ReservationReceipt:
        taken = await self._pool_taken_before(choice, request_id) if may_repeat else None
        pool_ids = [taken] if taken is not None else await candidates(self._availability, choice, MAX_CANDIDATES)
        tried = 0
        for pool_id in pool_ids:
            if time.time() >= deadline:
                break
            tried += 1
            attempt_id = attempt_request_id(request_id, pool_id)
            command = Reserve(choice.quantity, attempt_id, new_reservation_id(pool_id), hold_seconds)
            try:
                outcome = _decided(await self._gateway.execute(pool_id, command, deadline))
            except (InsufficientCapacity, PoolRetired, Paused, PoolNotFound):
                continue  # decided and refused, nothing taken: the cache was behind
            return _receipt(pool_id, outcome, request_id)
        if tried == 0 and pool_ids:
            raise Unavailable("the deadline passed before any candidate was tried; nothing was taken")
        if tried < len(pool_ids):
            why = f"the deadline passed after {tried} of {len(pool_ids)} candidates"
        else:
            why = f"{tried} candidates tried" if pool_ids else "none listed"
        window = f"[{_or_open(choice.slot_from)}, {_or_open(choice.slot_to)})"
        message = f"no pool of zone {choice.zone!r} in {window} could take {choice.quantity} ({why})"
        raise NoCapacityInWindow(choice.zone, choice.quantity, message)

    async def _pool_taken_before(self, choice: SlotChoice, request_id: str) -> str | None:
        """The pool of the window on which an earlier call with ``request_id`` took its reservation, if one
        did: every pool the cache lists for the zone and window, full or not (up to
        ``MAX_POOLS_LOOKED_AT``, earliest first), is asked, before anything is taken."""
        views = await self._availability.query(choice.zone, choice.slot_from, choice.slot_to, 0)
        pool_ids = [view.pool_id for view in ordered(views, "earliest")[:MAX_POOLS_LOOKED_AT]]
        found = await asyncio.gather(
            *(self._gateway.reservation_of_request(p, attempt_request_id(request_id, p)) for p in pool_ids)
        )
        for pool_id, answer in zip(pool_ids, found, strict=True):
            if isinstance(answer, CapacityError):
                raise answer  # this pool cannot say: nothing is taken anywhere rather than maybe twice
            if answer is not None:
                return pool_id
        return None

    async def confirm(self, reservation_id: str) -> ReservationInfo:
        """Turn a hold into an active reservation (it then never expires). Confirming twice is fine;
        ``HoldExpired`` if it expired first, ``ReservationReleased`` if it was released."""
        pool_id = _pool_of(reservation_id)
        outcome = await self._execute(pool_id, Confirm(reservation_id))
        assert outcome.reservation is not None
        return ReservationInfo.of(pool_id, outcome.reservation)

    async def release(self, reservation_id: str) -> ReleaseReceipt:
        """Give the reservation's capacity back. Releasing twice is fine."""
        pool_id = _pool_of(reservation_id)
        await self._execute(pool_id, Release(reservation_id))
        return ReleaseReceipt(reservation_id=reservation_id, pool_id=pool_id)

    async def extend_hold(self, reservation_id: str, hold_seconds: int) -> ReservationInfo:
        """Make the hold end ``hold_seconds`` from now (1..the pool's ``max_hold_seconds``), if that is later
        than it ends already (a hold is never shortened: a repeat changes nothing). ``HoldExpired``,
        ``ReservationReleased``, ``ReservationActive`` (confirmed, or never a hold): nothing changed."""
        pool_id = _pool_of(reservation_id)
        outcome = await self._execute(pool_id, ExtendHold(reservation_id, hold_seconds))
        assert outcome.reservation is not None
        return ReservationInfo.of(pool_id, outcome.reservation)

    async def get_reservation(self, reservation_id: str) -> ReservationInfo:
        pool_id = _pool_of(reservation_id)
        found = raised(await self._gateway.reservation(pool_id, reservation_id))
        if found is None:
            raise ReservationNotFound(reservation_id)
        return ReservationInfo.of(pool_id, found)

    # ------------------------------------------------------------------ waitlists

    async def join_waitlist(
        self, pool_id: str, quantity: int, request_id: str, hold_seconds: int | None = None
    ) -> WaitlistPlaceModel:
        """Wait for ``quantity`` units of the pool: when they come free, the pool holds them for this entry
        for ``hold_seconds`` (default 600, at most the pool's ``max_hold_seconds``) and the place shows the
        reservation to confirm. At once if they are free now. The same ``request_id`` on the same pool is
        the same entry (``RequestIdConflict`` with another quantity or hold). ``WaitlistFull``,
        ``PoolRetired``, ``Paused``: nothing was added."""
        _check_pool_id(pool_id)
        _check_reserve_options(request_id, None)
        hold_seconds = DEFAULT_OFFER_HOLD_SECONDS if hold_seconds is None else hold_seconds
        command = JoinWaitlist(new_waitlist_entry_id(), request_id, quantity, hold_seconds, new_reservation_id(pool_id))
        try:
            outcome = await self._execute(pool_id, command)
        except CapacityError as exc:  # as a reserve's, every answer names the id it can be settled with
            raise _naming_request(exc, request_id) from exc
        assert outcome.place is not None
        return WaitlistPlaceModel.of(pool_id, outcome.place)

    async def get_waitlist_entry(self, pool_id: str, entry_id: str) -> WaitlistPlaceModel:
        _check_pool_id(pool_id)
        if not is_waitlist_entry_id(entry_id):
            raise WaitlistEntryNotFound(pool_id, entry_id)
        found = raised(await self._gateway.waitlist_place(pool_id, entry_id))
        if found is None:
            raise WaitlistEntryNotFound(pool_id, entry_id)
        return WaitlistPlaceModel.of(pool_id, found)

    async def leave_waitlist(self, pool_id: str, entry_id: str) -> WaitlistPlaceModel:
        """Stop waiting (leaving twice is fine). An entry offered its hold already is answered as it is: its
        hold is a reservation, released as any other."""
        _check_pool_id(pool_id)
        if not is_waitlist_entry_id(entry_id):
            raise WaitlistEntryNotFound(pool_id, entry_id)
        outcome = await self._execute(pool_id, LeaveWaitlist(entry_id))
        assert outcome.place is not None
        return WaitlistPlaceModel.of(pool_id, outcome.place)

    # ------------------------------------------------------------------ operations

    async def pause_pool(self, pool_id: str, reason: str) -> Pool:
        """Stop the pool's writes (reserves, releases, confirms, changes: ``Paused``, nothing taken) until
        ``resume_pool``; reads and hold expiry go on. Recorded as an event; pausing twice is fine."""
        _check_pool_id(pool_id)
        return Pool.of((await self._execute(pool_id, PausePool(reason))).view)

    async def resume_pool(self, pool_id: str) -> Pool:
        _check_pool_id(pool_id)
        return Pool.of((await self._execute(pool_id, ResumePool())).view)

    async def pause_all(self, reason: str) -> PoolsChanged:
        """The kill switch: pause every live pool (a pool created afterwards is not paused)."""
        return await self._on_every_live_pool(PausePool(reason))

    async def resume_all(self) -> PoolsChanged:
        return await self._on_every_live_pool(ResumePool())

    async def _on_every_live_pool(self, command: PausePool | ResumePool) -> PoolsChanged:
        pool_ids = await self._gateway.live_pool_ids()
        answers = await asyncio.gather(*(self._execute(p, command) for p in pool_ids), return_exceptions=True)
        failed = {
            p: f"{type(a).__name__}: {a}"
            for p, a in zip(pool_ids, answers, strict=True)
            if isinstance(a, BaseException)
        }
        return PoolsChanged(done=[p for p in pool_ids if p not in failed], failed=failed)

    async def reservations(self, pool_id: str, status: str | None = None, limit: int = 1_000) -> list[ReservationInfo]:
        """The pool's reservations (only those of ``status``: held, active, released or expired), at most
        ``limit`` (1..10,000), in the order they were made."""
        _check_pool_id(pool_id)
        if not 1 <= limit <= MAX_LISTED_RESERVATIONS:
            raise InvalidRequest(f"limit must be 1..{MAX_LISTED_RESERVATIONS}")
        try:
            wanted = None if status is None else ReservationStatus(status)
        except ValueError:
            raise InvalidRequest(f"status must be one of {[s.value for s in ReservationStatus]}") from None
        found = raised(await self._gateway.reservations(pool_id, wanted, limit))
        return [ReservationInfo.of(pool_id, r) for r in found]

    async def reset_pool(self, pool_id: str, to_seq_nr: int) -> Pool:
        """Set the pool back to its state after its event ``to_seq_nr`` (pause it first, check it after):
        one more event, ``PoolReset``, carries that state; the history stays. Reservations made since are
        gone, and their request ids free again; holds of that state are pending again."""
        _check_pool_id(pool_id)
        return Pool.of(_decided(await self._gateway.reset(pool_id, to_seq_nr)).view)

    async def check_pool(self, pool_id: str) -> PoolCheck:
        """Replay the pool from its journal, every event from the first, and compare with its live state."""
        _check_pool_id(pool_id)
        seq_nr, differences = raised(await self._gateway.check(pool_id))
        return PoolCheck(pool_id=pool_id, seq_nr=seq_nr, matches=not differences, differences=differences)

    async def zones(self, after: str | None = None, limit: int = 100) -> ZoneList:
        """The zones with pools on sale, in the order of their names, from the replicated cache: up to
        ``limit`` (1..1,000) named after ``after``; ``next_after`` pages on."""
        if after is not None and not (1 <= len(after) <= MAX_ZONE_LENGTH and printable(after)):
            raise InvalidRequest(f"after must be a zone: 1-{MAX_ZONE_LENGTH} printable characters")
        if not 1 <= limit <= MAX_LISTED_ZONES:
            raise InvalidRequest(f"limit must be 1..{MAX_LISTED_ZONES}")
        counts, more = await self._availability.zones(after, limit)
        zones = [ZoneSummary(**found._asdict()) for found in counts]
        return ZoneList(zones=zones, next_after=zones[-1].zone if more and zones else None)

    async def pool_history(
        self, pool_id: str, at: datetime | None = None, before: int | None = None, limit: int = 50
    ) -> PoolHistory:
        """The pool at ``at`` with its holds, reservations and waitlist then, and its events up to then,
        newest first: at most ``limit`` (1..500) of each, the events before seq_nr ``before`` when given (to
        page back). Now (``at`` None): the pool as its writer has it, and the journal's newest events. A
        past moment: the journal replayed by the domain's ``apply`` from the pool's first event to ``at``.
        A retired pool the service no longer hosts is read as well."""
        _check_pool_id(pool_id)
        if not 1 <= limit <= MAX_HISTORY_LIMIT:
            raise InvalidRequest(f"limit must be 1..{MAX_HISTORY_LIMIT}")
        if before is not None and before < 1:
            raise InvalidRequest("before must be a seq_nr, 1 or more")
        if at is not None:
            at = in_utc(at)
        # Now: the writer first, so that the journal's events read next hold every event of its state.
        now = None if at is not None else raised(await self._gateway.glance(pool_id, limit))
        found = raised(await self._gateway.history(pool_id, at, before, limit))
        if found is None:
            raise PoolNotFound(pool_id)
        glance = found.replayed if at is not None else now
        seq_nr = found.seq_nr if now is None else now.view.version
        return PoolHistory(
            pool_id=pool_id,
            at=at,
            seq_nr=seq_nr,
            last_seq_nr=max(found.last_seq_nr, seq_nr),
            first_recorded_at=found.first_recorded_at,
            last_recorded_at=found.last_recorded_at,
            pool=None if glance is None or not glance.view.exists else Pool.of(glance.view),
            paused_reason=None if glance is None else glance.paused_reason,
            holds=[] if glance is None else [ReservationInfo.of(pool_id, r) for r in glance.holds],
            reservations=[] if glance is None else [ReservationInfo.of(pool_id, r) for r in glance.reservations],
            waitlist=[] if glance is None else [WaitlistPlaceModel.of(pool_id, place) for place in glance.waiting],
            events=[HistoryEvent.of(e.seq_nr, e.event_type, e.recorded_at, e.event) for e in found.events],
        )

    async def _execute(self, pool_id: str, command: PoolCommand) -> CommandOutcome:
        """The command goes with its deadline: the pool decides it only before then (see ``PoolRouter``)."""
        deadline = time.time() + self._call_timeout_s
        return _decided(await self._gateway.execute(pool_id, command, deadline))


def _check_reserve_options(request_id: str | None, hold_seconds: int | None) -> None:
    if request_id is not None and not (1 <= len(request_id) <= MAX_REQUEST_ID_LENGTH and printable(request_id)):
        raise InvalidRequest(f"request_id must be 1-{MAX_REQUEST_ID_LENGTH} printable characters")
    if request_id is not None and request_id.startswith(ORDER_REQUEST_PREFIX):
        raise InvalidRequest(f"request ids starting with {ORDER_REQUEST_PREFIX!r} are the orders' own")
    if request_id is not None and request_id.startswith(WAITLIST_REQUEST_PREFIX):
        raise InvalidRequest(f"request ids starting with {WAITLIST_REQUEST_PREFIX!r} are the waitlists' own")
    if hold_seconds is not None and not 1 <= hold_seconds <= MAX_HOLD_SECONDS:
        raise InvalidRequest(f"hold_seconds must be 1..{MAX_HOLD_SECONDS}")


def _receipt(pool_id: str, outcome: CommandOutcome, request_id: str) -> ReservationReceipt:
    assert outcome.reservation is not None
    return ReservationReceipt(
        reservation_id=outcome.reservation.reservation_id,
        pool_id=pool_id,
        quantity=outcome.reservation.quantity,
        remaining=outcome.view.remaining,
        request_id=request_id,
        status=outcome.reservation.status.value,
        expires_at=outcome.reservation.expires_at,
    )


def _or_open(moment: datetime | None) -> str:
    return "open" if moment is None else moment.isoformat()


def _check_pool_id(pool_id: str) -> None:
    try:
        check_pool_id(pool_id)
    except InvalidId as exc:
        raise InvalidRequest(str(exc)) from exc


def _pool_of(reservation_id: str) -> str:
    try:
        return pool_of_reservation(reservation_id)
    except InvalidId as exc:
        raise ReservationNotFound(reservation_id) from exc


def _naming_request(error: CapacityError, request_id: str) -> CapacityError:
    """A copy of ``error`` that names ``request_id``. A copy, as one error object may answer a whole batch
    of commands (a journal outage), each with its own request id."""
    named = type(error).__new__(type(error), *error.args)
    named.args = error.args
    named.__dict__.update(error.__dict__)
    named.request_id = request_id
    return named


def _decided(answer: CommandOutcome | CapacityError) -> CommandOutcome:
    """The outcome of a command the pool accepted; its error, or the error of its rejection, raised."""
    outcome = raised(answer)
    if outcome.rejection is not None:
        raise error_of(outcome.rejection)
    return outcome


def error_of(rejection: object) -> CapacityError:
    """The public error of a pool's rejection."""
    match rejection:
        case UnknownPool(pool_id=pool_id):
            return PoolNotFound(pool_id)
        case NotEnoughCapacity(pool_id=pool_id, requested=requested, remaining=remaining):
            return InsufficientCapacity(pool_id, requested, remaining)
        case UnknownReservation(reservation_id=reservation_id):
            return ReservationNotFound(reservation_id)
        case RequestIdReused(request_id=request_id, reservation_id=reservation_id):
            return RequestIdConflict(request_id, reservation_id)
        case HoldHasExpired(reservation_id=reservation_id):
            return HoldExpired(reservation_id)
        case ReservationWasReleased(reservation_id=reservation_id):
            return ReservationReleased(reservation_id)
        case PoolIsRetired(pool_id=pool_id):
            return PoolRetired(pool_id)
        case PoolIsPaused(pool_id=pool_id, reason=reason):
            return Paused(pool_id, reason)
        case ReservationIsActive(reservation_id=reservation_id):
            return ReservationActive(reservation_id)
        case UnknownWaitlistEntry(pool_id=pool_id, entry_id=entry_id):
            return WaitlistEntryNotFound(pool_id, entry_id)
        case WaitlistIsFull(pool_id=pool_id, limit=limit):
            return WaitlistFull(pool_id, limit)
        case LowersBelowReserved(pool_id=pool_id, capacity=capacity, reserved=reserved):
            return CapacityBelowReserved(pool_id, capacity, reserved)
        case InvalidCommand(reason=reason):
            return InvalidRequest(reason)
    return CapacityError(str(rejection))
