"""A schedule: the pools of a template (zones x daily slots x a range of days), created or updated together
by one call (decision 0010).

The template is a value; ``expand`` turns it into its pools, purely: the same template always names the same
pools, with the same settings, in the same order (day, then slot start, then zone as listed). A pool's id is
``<id_prefix><zone>:<day>T<HH>`` (``:<MM>`` added for a start off the hour), in the template's own time
zone, so that a template that gains a slot never renames the pools it had.

A schedule is a stream of its own with a single writer, like an order. Its events record each template put
(a generation), the pools each batch of its apply configured, and the apply's end. The pools themselves are
configured by their own writers (``ConfigurePool``), batch by batch, by the schedule's driver
(``application/schedule_host.py``); so a crash anywhere leaves the schedule to be continued from its last
recorded batch, and a pool configured twice is configured once (configuring is idempotent).
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from enum import StrEnum
from typing import ClassVar

from capacity_service.domain.commands import ConfigurePool
from capacity_service.domain.ids import POOL_ID_PATTERN
from capacity_service.domain.values import pickled_by_fields
from capacity_service.domain.waitlist import LONGEST_HOLD_SECONDS, MAX_WAITLIST_LIMIT

# The bounds of one schedule: what one template may describe, and what a schedule lists of its refusals and
# of the pools its previous template had (its counts are exact).
MAX_SCHEDULE_POOLS = 100_000
MAX_ZONES = 200  # a template of more would not fit in a request body (http.max_body_bytes, 16 KiB)
MAX_SLOT_STARTS = 288  # every five minutes of a day
MAX_SLOT_MINUTES = 1_440
MAX_DAYS = 731  # two years
MAX_ID_PREFIX = 64
MAX_CAPACITY = 1_000_000_000
MAX_LISTED = 100
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_SLOT_START = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
_ID_CHARACTERS = re.compile(r"[A-Za-z0-9._:-]*")


class InvalidTemplate(ValueError):
    """A template that describes no valid set of pools; the message says what is wrong, for its author."""


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class ZoneTemplate:
    """A zone's pools: ``capacity`` each, but ``slot_capacity``'s for the slot starts it names."""

    zone: str
    capacity: int
    slot_capacity: tuple[tuple[str, int], ...] = ()  # (slot start "HH:MM", capacity)

    def capacity_at(self, start: str) -> int:
        return dict(self.slot_capacity).get(start, self.capacity)


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Template:
    """Every ``weekdays`` day from ``first_day`` to ``last_day`` (both included), a slot of ``slot_minutes``
    at each of ``slot_starts`` (local times "HH:MM" in ``time_zone``), in each zone. ``max_hold_seconds``,
    ``waitlist_limit``: as in a pool's PUT (None keeps what a pool has). Unless
    ``allow_capacity_below_reserved``, a pool whose capacity the template would lower below what is held
    and active there is refused, and left as it is."""

    zones: tuple[ZoneTemplate, ...]
    slot_starts: tuple[str, ...]
    slot_minutes: int
    first_day: date
    last_day: date
    time_zone: str = "UTC"
    weekdays: tuple[str, ...] = WEEKDAYS
    id_prefix: str = ""
    max_hold_seconds: int | None = None
    waitlist_limit: int | None = None
    allow_capacity_below_reserved: bool = False


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class PlannedPool:
    """One pool of a template, as the template describes it."""

    pool_id: str
    zone: str
    capacity: int
    slot_start: datetime
    slot_end: datetime

    def command(self, template: Template) -> ConfigurePool:
        return ConfigurePool(
            self.capacity,
            self.zone,
            self.slot_start,
            self.slot_end,
            template.max_hold_seconds,
            template.waitlist_limit,
            refuse_below_reserved=not template.allow_capacity_below_reserved,
        )


# ------------------------------------------------------------------ the template's pools


def check_template(template: Template) -> int:
    """How many pools ``template`` describes; ``InvalidTemplate`` when it is not a valid one, or describes
    more than ``MAX_SCHEDULE_POOLS`` (counted, not expanded: a template of a million pools costs nothing)."""
    _check_slots(template)
    _check_zones(template)
    _check_days(template)
    _time_zone(template.time_zone)
    if not _ID_CHARACTERS.fullmatch(template.id_prefix) or len(template.id_prefix) > MAX_ID_PREFIX:
        raise InvalidTemplate(f"id_prefix must be 0-{MAX_ID_PREFIX} characters of [A-Za-z0-9._:-]")
    if template.max_hold_seconds is not None and not 1 <= template.max_hold_seconds <= LONGEST_HOLD_SECONDS:
        raise InvalidTemplate(f"max_hold_seconds must be 1..{LONGEST_HOLD_SECONDS}")
    if template.waitlist_limit is not None and not 0 <= template.waitlist_limit <= MAX_WAITLIST_LIMIT:
        raise InvalidTemplate(f"waitlist_limit must be 0..{MAX_WAITLIST_LIMIT}")
    longest_start = max(template.slot_starts, key=lambda start: len(_pool_id("", "", template.first_day, start)))
    longest_zone = max((each.zone for each in template.zones), key=len)
    longest = len(_pool_id(template.id_prefix, longest_zone, template.first_day, longest_start))
    if longest > 128:
        raise InvalidTemplate(f"pool ids would be up to {longest} characters (at most 128): shorten zones or id_prefix")
    days = len(list(_days(template)))
    if days == 0:
        raise InvalidTemplate("no day from `from` to `to` is one of the weekdays: the template describes no pool")
    count = len(template.zones) * len(template.slot_starts) * days
    if count > MAX_SCHEDULE_POOLS:
        raise InvalidTemplate(
            f"the template describes {count:,} pools ({len(template.zones):,} zones x {len(template.slot_starts)} slots"
            f" a day x {days:,} days); one schedule may describe at most {MAX_SCHEDULE_POOLS:,}: split it into several"
            " schedules (by zones, or by weeks)"
        )
    return count


def expand(template: Template) -> list[PlannedPool]:
    """The pools of a checked template (``check_template``), day by day, each day's slots in time order,
    each slot's zones as listed."""
    zone = _time_zone(template.time_zone)
    length = timedelta(minutes=template.slot_minutes)
    starts = sorted(template.slot_starts)
    capacities = {(each.zone, start): each.capacity_at(start) for each in template.zones for start in starts}
    planned: list[PlannedPool] = []
    for day in _days(template):
        for start in starts:
            slot_start = _utc(day, start, zone)
            slot_end = slot_start + length
            for each in template.zones:
                pool_id = _pool_id(template.id_prefix, each.zone, day, start)
                planned.append(PlannedPool(pool_id, each.zone, capacities[each.zone, start], slot_start, slot_end))
    return planned


def pool_ids(template: Template) -> set[str]:
    """The ids of the template's pools (``expand``'s, without their settings)."""
    return {
        _pool_id(template.id_prefix, each.zone, day, start)
        for day in _days(template)
        for start in template.slot_starts
        for each in template.zones
    }


def left_out(previous: Template | None, planned: list[PlannedPool]) -> list[str]:
    """The pools ``previous`` described that ``planned`` does not, sorted."""
    if previous is None:
        return []
    return sorted(pool_ids(previous) - {pool.pool_id for pool in planned})


def _pool_id(prefix: str, zone: str, day: date, start: str) -> str:
    hour, minute = start.split(":")
    return f"{prefix}{zone}:{day.isoformat()}T{hour}" + ("" if minute == "00" else f":{minute}")


def _utc(day: date, start: str, zone: tzinfo) -> datetime:
    """A local start as a UTC moment; a start that a change to summer time skips is taken at the offset
    before the change (Python's ``fold=0``)."""
    hour, minute = start.split(":")
    return datetime.combine(day, time(int(hour), int(minute)), tzinfo=zone).astimezone(UTC)


def _days(template: Template) -> Iterator[date]:
    wanted = {WEEKDAYS.index(name) for name in template.weekdays}
    day = template.first_day
    while day <= template.last_day:
        if day.weekday() in wanted:
            yield day
        day += timedelta(days=1)


def _time_zone(name: str) -> tzinfo:
    if name == "UTC":
        return UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise InvalidTemplate(
            f"time_zone {name!r} is not a time zone this machine knows (e.g. Europe/Amsterdam)"
        ) from None


def _check_zones(template: Template) -> None:
    if not 1 <= len(template.zones) <= MAX_ZONES:
        raise InvalidTemplate(f"zones: 1-{MAX_ZONES:,} of them")
    names = [each.zone for each in template.zones]
    if len(set(names)) != len(names):
        raise InvalidTemplate("zones: each zone once")
    for each in template.zones:
        if not POOL_ID_PATTERN.fullmatch(each.zone):
            raise InvalidTemplate(f"zone {each.zone!r:.140}: 1-128 characters of [A-Za-z0-9._:-] (it names the pools)")
        capacities = [each.capacity, *(capacity for _, capacity in each.slot_capacity)]
        if not all(0 <= capacity <= MAX_CAPACITY for capacity in capacities):
            raise InvalidTemplate(f"zone {each.zone!r}: capacities must be 0..{MAX_CAPACITY:,}")
        named = [start for start, _ in each.slot_capacity]
        if len(set(named)) != len(named) or not set(named) <= set(template.slot_starts):
            raise InvalidTemplate(f"zone {each.zone!r}: slot_capacity names each of slot_starts at most once, no other")


def _check_slots(template: Template) -> None:
    starts = template.slot_starts
    if not 1 <= len(starts) <= MAX_SLOT_STARTS or len(set(starts)) != len(starts):
        raise InvalidTemplate(f"slot_starts: 1-{MAX_SLOT_STARTS} different times of day")
    for start in starts:
        if not _SLOT_START.fullmatch(start):
            raise InvalidTemplate(f"slot start {start!r:.40}: a local time of day as HH:MM (00:00 to 23:59)")
    if not 1 <= template.slot_minutes <= MAX_SLOT_MINUTES:
        raise InvalidTemplate(f"slot_minutes must be 1..{MAX_SLOT_MINUTES}")


def _check_days(template: Template) -> None:
    if template.last_day < template.first_day:
        raise InvalidTemplate("to must not be before from")
    if (template.last_day - template.first_day).days + 1 > MAX_DAYS:
        raise InvalidTemplate(f"from..to spans at most {MAX_DAYS} days")
    if not template.weekdays or len(set(template.weekdays)) != len(template.weekdays):
        raise InvalidTemplate(f"weekdays: one or more of {', '.join(WEEKDAYS)}, each once")
    if not set(template.weekdays) <= set(WEEKDAYS):
        raise InvalidTemplate(f"weekdays: each one of {', '.join(WEEKDAYS)}")


# ------------------------------------------------------------------ the schedule's stream


class ScheduleStatus(StrEnum):
    APPLYING = "applying"  # its pools are being configured, batch by batch
    APPLIED = "applied"  # every pool of its template was configured, found retired, or refused


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Refusal:
    """A pool the schedule could not configure, as the pool decided: its error's code and message."""

    pool_id: str
    code: str
    message: str


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class BatchTally:
    """What one batch of pools became: ``pools`` pools from the ``first`` (0-based, in ``expand``'s order),
    each created, updated, unchanged, refused (``refusals``: the first of them) or ``retired`` (a retired pool
    is never changed: left as it is, and no error), in ``elapsed_ms``."""

    first: int
    pools: int
    created: int
    updated: int
    unchanged: int
    refused: int
    refusals: tuple[Refusal, ...]
    elapsed_ms: int
    retired: int = 0


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class ApplySchedule:
    """Put ``template`` (describing ``total`` pools): a new generation is applied, unless this template is
    being applied already. The same template again after its apply ended applies it again (it changes
    only pools that differ from it)."""

    template: Template
    total: int
    accepted_at: datetime


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class RecordBatch:
    """The driver configured the next batch of ``generation``'s pools."""

    generation: int
    tally: BatchTally


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class FinishApply:
    """The driver configured every pool of ``generation``; ``left_out``: how many pools the template before
    described that this one does not (``left_out_sample``: the first of them), left as they are."""

    generation: int
    left_out: int
    left_out_sample: tuple[str, ...]
    finished_at: datetime


ScheduleCommand = ApplySchedule | RecordBatch | FinishApply


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class ScheduleApplying:
    TYPE: ClassVar[str] = "ScheduleApplying"
    VERSION: ClassVar[int] = 1

    generation: int
    template: Template
    total: int
    accepted_at: datetime


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class SchedulePoolsApplied:
    TYPE: ClassVar[str] = "SchedulePoolsApplied"
    VERSION: ClassVar[int] = 1

    generation: int
    tally: BatchTally


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class ScheduleApplied:
    TYPE: ClassVar[str] = "ScheduleApplied"
    VERSION: ClassVar[int] = 1

    generation: int
    left_out: int
    left_out_sample: tuple[str, ...]
    finished_at: datetime


ScheduleEvent = ScheduleApplying | SchedulePoolsApplied | ScheduleApplied


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class UnknownSchedule:
    schedule_id: str


@dataclass(slots=True)
class ScheduleState:
    schedule_id: str
    generation: int = 0  # 0: never put
    status: ScheduleStatus | None = None
    template: Template | None = None
    previous_template: Template | None = None  # the template the last put replaced
    total: int = 0
    accepted_at: datetime | None = None
    finished_at: datetime | None = None
    done: int = 0  # pools of the template configured or refused, the first ones in ``expand``'s order
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    refused: int = 0
    refusals: tuple[Refusal, ...] = ()
    retired: int = 0
    batches: int = 0
    left_out: int = 0
    left_out_sample: tuple[str, ...] = ()

    @property
    def exists(self) -> bool:
        return self.status is not None


def decide(state: ScheduleState, command: ScheduleCommand) -> list[ScheduleEvent] | UnknownSchedule:
    """The events ``command`` produces against ``state``; an empty list: nothing to do (a repeat, or a
    driver's report about a generation that a newer put replaced)."""
    if isinstance(command, ApplySchedule):
        if state.status is ScheduleStatus.APPLYING and command.template == state.template:
            return []
        return [ScheduleApplying(state.generation + 1, command.template, command.total, command.accepted_at)]
    if not state.exists:
        return UnknownSchedule(state.schedule_id)
    current = state.status is ScheduleStatus.APPLYING and command.generation == state.generation
    if isinstance(command, RecordBatch):
        tally = command.tally
        continues = tally.first == state.done and state.done + tally.pools <= state.total
        return [SchedulePoolsApplied(command.generation, tally)] if current and continues else []
    finished = current and state.done == state.total
    return (
        [ScheduleApplied(command.generation, command.left_out, command.left_out_sample, command.finished_at)]
        if finished
        else []
    )


def apply(state: ScheduleState, event: ScheduleEvent) -> ScheduleState:
    """Evolve ``state`` by one event, in place; returns it for convenience."""
    if isinstance(event, ScheduleApplying):
        state.previous_template = state.template
        state.generation, state.template, state.total = event.generation, event.template, event.total
        state.status, state.accepted_at, state.finished_at = ScheduleStatus.APPLYING, event.accepted_at, None
        state.done = state.created = state.updated = state.unchanged = state.refused = state.retired = 0
        state.batches = 0
        state.refusals, state.left_out, state.left_out_sample = (), 0, ()
    elif isinstance(event, SchedulePoolsApplied):
        tally = event.tally
        state.done += tally.pools
        state.created += tally.created
        state.updated += tally.updated
        state.unchanged += tally.unchanged
        state.refused += tally.refused
        state.refusals = (state.refusals + tally.refusals)[:MAX_LISTED]
        state.retired += tally.retired
        state.batches += 1
    else:
        state.status, state.finished_at = ScheduleStatus.APPLIED, event.finished_at
        state.left_out, state.left_out_sample = event.left_out, event.left_out_sample
    return state


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class ScheduleView:
    """What callers see of a schedule; ``version`` is its stream's seq_nr. ``last_error``: why the apply
    waits (a pool's host or the journal failing), while it does; it is not recorded."""

    schedule_id: str
    exists: bool
    generation: int
    status: ScheduleStatus | None
    template: Template | None
    total: int
    done: int
    created: int
    updated: int
    unchanged: int
    refused: int
    refusals: tuple[Refusal, ...]
    retired: int
    left_out: int
    left_out_sample: tuple[str, ...]
    accepted_at: datetime | None
    finished_at: datetime | None
    version: int
    last_error: str | None = None


def view_of_schedule(state: ScheduleState, version: int, last_error: str | None = None) -> ScheduleView:
    return ScheduleView(
        state.schedule_id,
        state.exists,
        state.generation,
        state.status,
        state.template,
        state.total,
        state.done,
        state.created,
        state.updated,
        state.unchanged,
        state.refused,
        state.refusals,
        state.retired,
        state.left_out,
        state.left_out_sample,
        state.accepted_at,
        state.finished_at,
        version,
        last_error,
    )
