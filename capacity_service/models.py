"""Public data models returned by ``CapacityClient`` (and, later, the HTTP API)."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from capacity_service.domain import (
    DEFAULT_MAX_HOLD_SECONDS,
    DEFAULT_WAITLIST_LIMIT,
    PoolEvent,
    PoolReset,
    PoolView,
    Reservation,
)
from capacity_service.domain import WaitlistPlace as DomainWaitlistPlace
from capacity_service.domain.choice import SlotChoice
from capacity_service.domain.order import OrderView
from capacity_service.domain.schedule import ScheduleView, Template, ZoneTemplate

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_EVERY_DAY: list[Weekday] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Pool(_Model):
    pool_id: str
    zone: str
    slot_start: datetime | None
    slot_end: datetime | None
    capacity: int
    reserved: int
    remaining: int
    version: int
    # "active", or "retired": a retired pool takes no new reservations and is left out of availability.
    state: Literal["active", "retired"] = "active"
    # An operator paused its writes (answered 503 paused); reads go on.
    paused: bool = False
    # How long from now a hold may be extended to; how many may wait on its waitlist, and how many do.
    max_hold_seconds: int = DEFAULT_MAX_HOLD_SECONDS
    waitlist_limit: int = DEFAULT_WAITLIST_LIMIT
    waiting: int = 0

    @classmethod
    def of(cls, view: PoolView) -> Pool:
        return cls(
            pool_id=view.pool_id,
            zone=view.zone,
            slot_start=view.slot_start,
            slot_end=view.slot_end,
            capacity=view.capacity,
            reserved=view.reserved,
            remaining=view.remaining,
            version=view.version,
            state="retired" if view.retired else "active",
            paused=view.paused,
            max_hold_seconds=view.max_hold_seconds,
            waitlist_limit=view.waitlist_limit,
            waiting=view.waiting,
        )


class ReservationReceipt(_Model):
    """The answer to a reserve. ``request_id``: the caller's, or the one the service made."""

    reservation_id: str
    pool_id: str
    quantity: int
    remaining: int
    request_id: str
    # "held" with ``expires_at`` for a hold; a repeated request id answers the reservation's status now.
    status: Literal["held", "active", "released", "expired"] = "active"
    expires_at: datetime | None = None


class ReleaseReceipt(_Model):
    reservation_id: str
    pool_id: str
    status: Literal["released"] = "released"


class ReservationList(_Model):
    reservations: list[ReservationInfo]


class ReservationInfo(_Model):
    """A reservation; ``expires_at``: when a hold expires unless confirmed (None otherwise)."""

    reservation_id: str
    pool_id: str
    quantity: int
    status: Literal["held", "active", "released", "expired"]
    expires_at: datetime | None = None

    @classmethod
    def of(cls, pool_id: str, reservation: Reservation) -> ReservationInfo:
        return cls(
            reservation_id=reservation.reservation_id,
            pool_id=pool_id,
            quantity=reservation.quantity,
            status=reservation.status.value,
            expires_at=reservation.expires_at,
        )


class WaitlistPlace(_Model):
    """A waitlist entry: ``waiting`` (at ``position``, 1 first), ``offered`` (units came free and are held
    for it: ``reservation_id``, until ``expires_at`` unless confirmed; ``reservation_status`` says what
    became of that hold), or ``left``. ``pool_retired``: the pool was retired, so an entry still waiting
    will never be offered."""

    entry_id: str
    pool_id: str
    request_id: str
    quantity: int
    hold_seconds: int
    status: Literal["waiting", "offered", "left"]
    position: int | None = None
    reservation_id: str | None = None
    expires_at: datetime | None = None
    reservation_status: Literal["held", "active", "released", "expired"] | None = None
    pool_retired: bool = False

    @classmethod
    def of(cls, pool_id: str, place: DomainWaitlistPlace) -> WaitlistPlace:
        entry, offered = place.entry, place.offered
        return cls(
            entry_id=entry.entry_id,
            pool_id=pool_id,
            request_id=entry.request_id,
            quantity=entry.quantity,
            hold_seconds=entry.hold_seconds,
            status=entry.status.value,
            position=place.position,
            reservation_id=None if offered is None else offered.reservation_id,
            expires_at=None if offered is None else offered.expires_at,
            reservation_status=None if offered is None else offered.status.value,
            pool_retired=place.pool_retired,
        )


class OrderLineRequest(_Model):
    """A line of an order to place: ``quantity`` units of ``pool_id``, or, with ``choose`` instead, the
    choice's quantity of the first pool that fits it (``capacity_service.client.SlotChoice``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    pool_id: str | None = None
    quantity: int = 1
    choose: SlotChoice | None = None


class OrderLineInfo(_Model):
    """A line of an order: the pool that serves it and its reservation there (None until it is taken; a
    cancelled order keeps showing the reservations it gave back, released)."""

    pool_id: str | None
    quantity: int
    reservation_id: str | None


class Order(_Model):
    """An order: every line taken, or none. ``status``: placing, held (until ``expires_at`` unless
    confirmed), confirming, confirmed, undoing, failed (nothing taken) or cancelled; ``reason``: why it
    was undone (refused, deadline, cancelled, hold_expired)."""

    order_id: str
    status: Literal["placing", "held", "confirming", "confirmed", "undoing", "failed", "cancelled"]
    lines: list[OrderLineInfo]
    hold_seconds: int | None = None
    expires_at: datetime | None = None
    reason: str | None = None
    version: int

    @classmethod
    def of(cls, view: OrderView) -> Order:
        assert view.status is not None
        return cls(
            order_id=view.order_id,
            status=view.status.value,
            lines=[
                OrderLineInfo(pool_id=line.pool_id, quantity=line.quantity, reservation_id=line.reservation_id)
                for line in view.lines
            ],
            hold_seconds=view.hold_seconds,
            expires_at=view.expires_at,
            reason=view.undo_reason,
            version=view.version,
        )


class PoolCheck(_Model):
    """An operator's check of a pool: its events replayed from the journal against its live state."""

    pool_id: str
    seq_nr: int
    matches: bool
    differences: list[str]


class PoolsChanged(_Model):
    """The answer to an operation on every live pool: those it changed or found so, and those it could not
    reach (with why)."""

    done: list[str]
    failed: dict[str, str]


class WebhookStatus(_Model):
    """How a webhook's delivery stands (in the delivering process; counts start again when it restarts)."""

    delivered: int  # events the receiver acknowledged (2xx)
    attempts: int  # POSTs made, acknowledged or not
    retries: int  # POSTs that were repeats of one that failed
    failures_in_a_row: int  # since the last 2xx; 0 while the receiver keeps up
    last_error: str | None
    last_delivered_at: datetime | None
    events_behind: int  # journal events past the webhook's cursors (sent or not, by their type)
    pending: int  # webhook events read from the journal and not acknowledged yet
    seconds_behind: float  # age of the oldest of them; 0 when none
    next_attempt_in_s: float  # while backing off after a failure; 0 otherwise


class Webhook(_Model):
    """A registered webhook (its secret is never shown)."""

    webhook_id: str
    url: str
    events: list[str]
    created_at: datetime  # it is sent what happened from then on
    status: WebhookStatus | None = None  # in GET /v1/webhooks/{id}


class WebhookList(_Model):
    webhooks: list[Webhook]


class ScheduleZone(_Model):
    """A zone of a schedule: ``capacity`` for each of its pools, but ``slot_capacity``'s (by slot start,
    "HH:MM") for the slots it names."""

    zone: str
    capacity: int
    slot_capacity: dict[str, int] = Field(default_factory=dict)


class ScheduleTemplate(_Model):
    """The pools of a schedule: on every ``weekdays`` day ``from`` .. ``to`` (both included), a slot of
    ``slot_minutes`` starting at each of ``slot_starts`` (local times "HH:MM" in ``time_zone``, an IANA name),
    in each zone; each pool's id is ``<id_prefix><zone>:<day>T<HH>`` (``:<MM>`` for a start off the hour).
    ``max_hold_seconds``, ``waitlist_limit``: as a pool's (None keeps what a pool has). A pool whose capacity
    would go below what is held and active there is refused and left as it is, unless
    ``allow_capacity_below_reserved``. In Python ``from`` is the attribute ``from_`` (build one from a dict, as
    the file of ``capacity-service schedule apply`` reads: ``ScheduleTemplate.model_validate``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_by_name=True, serialize_by_alias=True)

    zones: list[ScheduleZone]
    slot_starts: list[str]
    slot_minutes: int
    from_: date = Field(alias="from")
    to: date
    time_zone: str = "UTC"
    weekdays: list[Weekday] = Field(default_factory=lambda: list(_EVERY_DAY))
    id_prefix: str = ""
    max_hold_seconds: int | None = None
    waitlist_limit: int | None = None
    allow_capacity_below_reserved: bool = False

    def template(self) -> Template:
        """As the domain's value."""
        return Template(
            zones=tuple(ZoneTemplate(z.zone, z.capacity, tuple(z.slot_capacity.items())) for z in self.zones),
            slot_starts=tuple(self.slot_starts),
            slot_minutes=self.slot_minutes,
            first_day=self.from_,
            last_day=self.to,
            time_zone=self.time_zone,
            weekdays=tuple(self.weekdays),
            id_prefix=self.id_prefix,
            max_hold_seconds=self.max_hold_seconds,
            waitlist_limit=self.waitlist_limit,
            allow_capacity_below_reserved=self.allow_capacity_below_reserved,
        )

    @classmethod
    def of(cls, template: Template) -> ScheduleTemplate:
        zones = [
            {"zone": z.zone, "capacity": z.capacity, "slot_capacity": dict(z.slot_capacity)} for z in template.zones
        ]
        return cls.model_validate(
            {
                "zones": zones,
                "slot_starts": list(template.slot_starts),
                "slot_minutes": template.slot_minutes,
                "from": template.first_day,
                "to": template.last_day,
                "time_zone": template.time_zone,
                "weekdays": list(template.weekdays),
                "id_prefix": template.id_prefix,
                "max_hold_seconds": template.max_hold_seconds,
                "waitlist_limit": template.waitlist_limit,
                "allow_capacity_below_reserved": template.allow_capacity_below_reserved,
            }
        )


class ScheduleRefusal(_Model):
    """A pool of the schedule that was not configured, as the pool decided: ``code`` is its error's
    (``capacity_below_reserved``, ``paused``)."""

    pool_id: str
    code: str
    message: str


class Schedule(_Model):
    """A schedule and its latest apply. ``generation``: how many puts started an apply. ``status``:
    ``applying`` (``done`` of ``total`` pools so far) or ``applied``. Each pool done was ``created``,
    ``updated``, ``unchanged``, ``refused`` (``refusals``: the first 100, with why) or ``retired`` (never
    changed again: left as it is, which is no error). ``left_out``: pools the
    template before this one described and this one does not, left as they are (``left_out_sample``: the
    first 100). ``last_error``: why the apply waits, while it does (a pool's host or the journal failing)."""

    schedule_id: str
    generation: int
    status: Literal["applying", "applied"]
    template: ScheduleTemplate
    total: int
    done: int
    created: int
    updated: int
    unchanged: int
    refused: int
    refusals: list[ScheduleRefusal]
    retired: int
    left_out: int
    left_out_sample: list[str]
    accepted_at: datetime
    finished_at: datetime | None
    version: int
    last_error: str | None = None

    @classmethod
    def of(cls, view: ScheduleView) -> Schedule:
        assert view.status is not None and view.template is not None and view.accepted_at is not None
        return cls(
            schedule_id=view.schedule_id,
            generation=view.generation,
            status=view.status.value,
            template=ScheduleTemplate.of(view.template),
            total=view.total,
            done=view.done,
            created=view.created,
            updated=view.updated,
            unchanged=view.unchanged,
            refused=view.refused,
            refusals=[ScheduleRefusal(pool_id=r.pool_id, code=r.code, message=r.message) for r in view.refusals],
            retired=view.retired,
            left_out=view.left_out,
            left_out_sample=list(view.left_out_sample),
            accepted_at=view.accepted_at,
            finished_at=view.finished_at,
            version=view.version,
            last_error=view.last_error,
        )


class ZoneSummary(_Model):
    """A zone as the availability cache has it: its pools on sale (a retired pool leaves it), how many units
    they have left in all, how many of them have none left, and how many an operator paused."""

    zone: str
    pools: int
    remaining: int
    sold_out: int
    paused: int


class ZoneList(_Model):
    """Zones in the order of their names; ``next_after``: the ``after`` of the next page (None: the last)."""

    zones: list[ZoneSummary]
    next_after: str | None = None


class HistoryEvent(_Model):
    """One event of a pool's journal: ``type`` as the journal stores it, ``recorded_at`` when the journal
    recorded it, ``data`` its fields (a ``PoolReset``'s: only ``to_seq_nr``; the state it carries is the
    pool after it)."""

    seq_nr: int
    type: str
    recorded_at: datetime
    data: dict[str, Any]

    @classmethod
    def of(cls, seq_nr: int, event_type: str, recorded_at: datetime, event: PoolEvent) -> HistoryEvent:
        data = {"to_seq_nr": event.to_seq_nr} if isinstance(event, PoolReset) else dataclasses.asdict(event)
        return cls(seq_nr=seq_nr, type=event_type, recorded_at=recorded_at, data=data)


class PoolHistory(_Model):
    """A pool as its journal has it at a moment (``at``; None: now), replayed from its events, and the
    events that led there. ``seq_nr``: the events replayed (the pool is as after that one; 0: it did not
    exist yet, and ``pool`` is None). ``last_seq_nr``, ``first_recorded_at``, ``last_recorded_at``: the
    stream's newest event and the times of its first and newest. The lists hold at most ``limit`` each:
    ``holds`` held then (soonest expiry first), ``reservations`` (newest first), ``waitlist`` the entries
    waiting then (in their order), ``events`` (newest first; page on with ``before``)."""

    pool_id: str
    at: datetime | None
    seq_nr: int
    last_seq_nr: int
    first_recorded_at: datetime
    last_recorded_at: datetime
    pool: Pool | None
    paused_reason: str | None
    holds: list[ReservationInfo]
    reservations: list[ReservationInfo]
    waitlist: list[WaitlistPlace]
    events: list[HistoryEvent]
