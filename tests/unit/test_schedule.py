"""A schedule's template and its stream, as the domain has them: which pools a template names (ids, slots in
UTC, capacities), which templates are refused and why, the schedule's events (a put, batches, the end), and a
pool's configure that a schedule may not lower below what is taken."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capacity_service.domain import ConfigurePool, LowersBelowReserved, PoolState, Reserve, apply, decide
from capacity_service.domain import new_reservation_id as reservation_of
from capacity_service.domain.ids import is_valid_pool_id
from capacity_service.domain.schedule import (
    MAX_SCHEDULE_POOLS,
    WEEKDAYS,
    ApplySchedule,
    BatchTally,
    FinishApply,
    InvalidTemplate,
    RecordBatch,
    Refusal,
    ScheduleApplied,
    ScheduleApplying,
    SchedulePoolsApplied,
    ScheduleState,
    ScheduleStatus,
    Template,
    UnknownSchedule,
    ZoneTemplate,
    check_template,
    expand,
    left_out,
    pool_ids,
)
from capacity_service.domain.schedule import apply as apply_schedule
from capacity_service.domain.schedule import decide as decide_schedule

DECEMBER = Template(
    zones=(ZoneTemplate("north", 20), ZoneTemplate("south", 12, (("18:30", 6),))),
    slot_starts=("18:30", "08:00"),
    slot_minutes=120,
    first_day=date(2026, 12, 1),
    last_day=date(2026, 12, 3),
)
NOW = datetime(2026, 11, 20, tzinfo=UTC)


def test_a_template_names_its_pools_day_by_day_slot_by_slot_zone_by_zone() -> None:
    pools = expand(DECEMBER)
    assert check_template(DECEMBER) == len(pools) == 2 * 2 * 3
    assert [p.pool_id for p in pools[:4]] == [
        "north:2026-12-01T08",  # as the README names a pool: zone, day, hour
        "south:2026-12-01T08",
        "north:2026-12-01T18:30",  # a start off the hour has its minutes
        "south:2026-12-01T18:30",
    ]
    first = pools[0]
    assert (first.zone, first.capacity) == ("north", 20)
    assert (first.slot_start, first.slot_end) == (
        datetime(2026, 12, 1, 8, tzinfo=UTC),
        datetime(2026, 12, 1, 10, tzinfo=UTC),
    )
    assert [p.capacity for p in pools[2:4]] == [20, 6]  # south's 18:30 slot has its own capacity


def test_local_starts_are_taken_in_the_template_s_time_zone_summer_time_included() -> None:
    amsterdam = replace(
        DECEMBER,
        zones=(ZoneTemplate("north", 1),),
        slot_starts=("02:30", "08:00"),
        first_day=date(2026, 3, 28),
        last_day=date(2026, 3, 30),
        time_zone="Europe/Amsterdam",
    )
    starts = {p.pool_id: p.slot_start for p in expand(amsterdam)}
    assert starts["north:2026-03-28T08"] == datetime(2026, 3, 28, 7, tzinfo=UTC)  # winter: UTC+1
    assert starts["north:2026-03-30T08"] == datetime(2026, 3, 30, 6, tzinfo=UTC)  # summer: UTC+2
    # 02:30 does not exist on the 29th (clocks go from 02:00 to 03:00): taken at the offset before the change.
    assert starts["north:2026-03-29T02:30"] == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    assert all(p.slot_end - p.slot_start == timedelta(minutes=120) for p in expand(amsterdam))


def test_weekdays_leave_the_other_days_out_and_a_prefix_names_another_resource() -> None:
    weekends = replace(DECEMBER, weekdays=("sat", "sun"), first_day=date(2026, 12, 1), last_day=date(2026, 12, 14))
    days = sorted({p.slot_start.date() for p in expand(weekends)})
    assert days == [date(2026, 12, 5), date(2026, 12, 6), date(2026, 12, 12), date(2026, 12, 13)]
    pickers = replace(DECEMBER, id_prefix="pickers:")
    assert expand(pickers)[0].pool_id == "pickers:north:2026-12-01T08"


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"last_day": date(2026, 11, 30)}, "to must not be before from"),
        ({"last_day": date(2029, 1, 1)}, "at most 731 days"),
        ({"zones": (ZoneTemplate("north", 1), ZoneTemplate("north", 2))}, "each zone once"),
        ({"zones": (ZoneTemplate("no th", 1),)}, "[A-Za-z0-9._:-]"),
        ({"zones": (ZoneTemplate("north", -1),)}, "capacities must be"),
        ({"zones": (ZoneTemplate("north", 1, (("09:00", 1),)),)}, "slot_capacity"),
        ({"slot_starts": ("8:00",)}, "HH:MM"),
        ({"slot_starts": ("08:00", "08:00")}, "different times"),
        ({"slot_minutes": 0}, "slot_minutes"),
        ({"time_zone": "Mars/Olympus_Mons"}, "time zone"),
        ({"time_zone": "../../etc/passwd"}, "time zone"),
        ({"weekdays": ("mon", "funday")}, "weekdays"),
        ({"weekdays": ("mon",), "last_day": date(2026, 12, 6)}, "describes no pool"),  # the 1st is a Tuesday
        ({"id_prefix": "x" * 65}, "id_prefix"),
        ({"zones": (ZoneTemplate("z" * 120, 1),)}, "at most 128"),
        ({"max_hold_seconds": 0}, "max_hold_seconds"),
        ({"waitlist_limit": -1}, "waitlist_limit"),
    ],
)
def test_a_template_that_names_no_valid_set_of_pools_is_refused_with_why(change: dict[str, object], says: str) -> None:
    with pytest.raises(InvalidTemplate, match=re.escape(says)):
        check_template(replace(DECEMBER, **change))  # type: ignore[arg-type]


def test_a_template_of_a_million_pools_is_refused_before_anything_is_expanded() -> None:
    zones = tuple(ZoneTemplate(f"z{k}", 10) for k in range(200))
    starts = tuple(f"{hour:02d}:00" for hour in range(24))
    huge = replace(DECEMBER, zones=zones, slot_starts=starts, first_day=date(2026, 1, 1), last_day=date(2026, 12, 31))
    with pytest.raises(InvalidTemplate) as refused:
        check_template(huge)
    assert str(refused.value).startswith(
        "the template describes 1,752,000 pools (200 zones x 24 slots a day x 365 days)"
    )
    assert f"at most {MAX_SCHEDULE_POOLS:,}" in str(refused.value) and "split it" in str(refused.value)


_TIMES = st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.sampled_from([0, 15, 30, 45]))
TEMPLATES = st.builds(
    lambda zones, starts, minutes, first, span, weekdays, time_zone, prefix: Template(
        zones=tuple(ZoneTemplate(f"z.{k}", capacity) for k, capacity in enumerate(zones)),
        slot_starts=tuple(starts),
        slot_minutes=minutes,
        first_day=first,
        last_day=first + timedelta(days=span),
        time_zone=time_zone,
        weekdays=tuple(weekdays),
        id_prefix=prefix,
    ),
    st.lists(st.integers(0, 50), min_size=1, max_size=4),
    st.lists(_TIMES, min_size=1, max_size=4, unique=True),
    st.integers(1, 1440),
    st.dates(date(2026, 1, 1), date(2027, 12, 31)),
    st.integers(0, 40),
    st.lists(st.sampled_from(WEEKDAYS), min_size=1, max_size=7, unique=True),
    st.sampled_from(["UTC", "Europe/Amsterdam", "America/New_York", "Asia/Kolkata"]),
    st.sampled_from(["", "vans:", "pickers-"]),
)


@settings(max_examples=60, deadline=None)
@given(TEMPLATES)
def test_a_template_s_pools_are_as_many_as_counted_each_named_once_with_a_valid_id(template: Template) -> None:
    try:
        counted = check_template(template)
    except InvalidTemplate as refused:
        assert "describes no pool" in str(refused)  # the only way these can fail: no day is one of the weekdays
        return
    pools = expand(template)
    assert len(pools) == counted
    assert {p.pool_id for p in pools} == pool_ids(template) and len(pool_ids(template)) == counted
    assert all(is_valid_pool_id(p.pool_id) for p in pools)
    assert all(p.slot_end - p.slot_start == timedelta(minutes=template.slot_minutes) for p in pools)
    assert pools == expand(template)  # the same template, the same pools in the same order


@settings(max_examples=40, deadline=None)
@given(TEMPLATES, TEMPLATES)
def test_the_pools_left_out_are_those_of_the_template_before_and_not_of_this_one(
    before: Template, now: Template
) -> None:
    try:
        check_template(before), check_template(now)
    except InvalidTemplate:
        return
    gone = left_out(before, expand(now))
    assert set(gone) == pool_ids(before) - pool_ids(now) and gone == sorted(gone)
    assert left_out(None, expand(now)) == []


# ------------------------------------------------------------------ the schedule's stream


def put(state: ScheduleState, template: Template = DECEMBER) -> list[ScheduleApplying]:
    decision = decide_schedule(state, ApplySchedule(template, check_template(template), NOW))
    assert not isinstance(decision, UnknownSchedule)
    for event in decision:
        apply_schedule(state, event)
    return [event for event in decision if isinstance(event, ScheduleApplying)]


def record(state: ScheduleState, command: RecordBatch | FinishApply) -> bool:
    decision = decide_schedule(state, command)
    assert not isinstance(decision, UnknownSchedule)
    for event in decision:
        apply_schedule(state, event)
    return bool(decision)


def batch(first: int, pools: int, created: int = 0, unchanged: int = 0) -> BatchTally:
    return BatchTally(first, pools, created, pools - created - unchanged, unchanged, 0, (), 5)


def test_an_apply_records_its_batches_in_order_and_ends_once_every_pool_is_done() -> None:
    state = ScheduleState("december")
    assert isinstance(decide_schedule(state, RecordBatch(1, batch(0, 1))), UnknownSchedule)
    assert [type(e) for e in put(state)] == [ScheduleApplying]
    assert (state.status, state.generation, state.total) == (ScheduleStatus.APPLYING, 1, 12)
    assert not record(state, FinishApply(1, 0, (), NOW))  # not every pool is done yet
    assert record(state, RecordBatch(1, batch(0, 8, created=8)))
    assert not record(state, RecordBatch(1, batch(0, 8, created=8)))  # a batch done twice counts once
    assert not record(state, RecordBatch(1, batch(9, 3)))  # batches continue each other exactly
    assert not record(state, RecordBatch(1, batch(8, 5)))  # and never go past the template's pools
    assert record(state, RecordBatch(1, batch(8, 4, created=4)))
    assert record(state, FinishApply(1, 0, (), NOW))
    assert (state.status, state.done, state.created, state.batches) == (ScheduleStatus.APPLIED, 12, 12, 2)


def test_a_put_of_the_template_being_applied_changes_nothing_and_after_its_end_applies_it_again() -> None:
    state = ScheduleState("december")
    put(state)
    assert put(state) == []  # the same template, still applying: nothing new
    record(state, RecordBatch(1, batch(0, 12, created=12)))
    record(state, FinishApply(1, 0, (), NOW))
    again = put(state)
    assert [e.generation for e in again] == [2]  # applied: a put applies it again (changing only what differs)
    assert (state.status, state.done, state.created, state.previous_template) == (
        ScheduleStatus.APPLYING,
        0,
        0,
        DECEMBER,
    )


def test_a_new_template_replaces_the_one_being_applied_whose_late_reports_change_nothing() -> None:
    state = ScheduleState("december")
    put(state)
    record(state, RecordBatch(1, batch(0, 4, created=4)))
    smaller = replace(DECEMBER, last_day=date(2026, 12, 1))
    assert [e.generation for e in put(state, smaller)] == [2]
    assert (state.total, state.done, state.previous_template) == (4, 0, DECEMBER)
    assert not record(state, RecordBatch(1, batch(0, 4)))  # the replaced generation's batch
    assert not record(state, FinishApply(1, 0, (), NOW))
    assert record(state, RecordBatch(2, batch(0, 4, unchanged=4)))
    assert record(state, FinishApply(2, 8, ("north:2026-12-02T08",), NOW))
    assert (state.status, state.unchanged, state.left_out) == (ScheduleStatus.APPLIED, 4, 8)
    assert [type(e) for e in (ScheduleApplying, SchedulePoolsApplied, ScheduleApplied)]  # every event kind used


# ------------------------------------------------------------------ a pool's configure, from a schedule


def pool_with(capacity: int, reserved: int) -> PoolState:
    state = PoolState("north:2026-12-01T08")
    for event in decide(state, ConfigurePool(capacity, "north")):  # type: ignore[union-attr]
        apply(state, event)
    if reserved:
        taken = Reserve(reserved, "r-1", reservation_of(state.pool_id))
        for event in decide(state, taken):  # type: ignore[union-attr]
            apply(state, event)
    return state


def test_a_schedule_never_lowers_capacity_below_what_is_taken_unless_its_template_allows_it() -> None:
    state = pool_with(capacity=10, reserved=8)
    refused = decide(state, ConfigurePool(5, "north", refuse_below_reserved=True))
    assert refused == LowersBelowReserved(state.pool_id, 5, 8)
    assert decide(state, ConfigurePool(8, "north", refuse_below_reserved=True)) != refused  # down to what is taken
    assert isinstance(decide(state, ConfigurePool(5, "north")), list)  # a PUT of the pool may (a van broke down)
    lowered = pool_with(capacity=10, reserved=8)
    for event in decide(lowered, ConfigurePool(3, "north")):  # type: ignore[union-attr]
        apply(lowered, event)
    raised = decide(lowered, ConfigurePool(5, "north", refuse_below_reserved=True))
    assert isinstance(raised, list) and raised  # raising capacity is never refused, even if still below
    assert decide(lowered, ConfigurePool(3, "north", refuse_below_reserved=True)) == []  # as it is: unchanged


def test_a_schedule_s_events_are_read_back_as_written_and_a_newer_version_is_refused() -> None:
    from capacity_service.adapters.codec import DecodingError, ScheduleCodec

    codec = ScheduleCodec()
    amsterdam = replace(DECEMBER, time_zone="Europe/Amsterdam", weekdays=("mon", "sat"), max_hold_seconds=900)
    refusals = (Refusal("north:2026-12-01T08", "pool_retired", "pool 'north:2026-12-01T08' is retired"),)
    events: list[ScheduleApplying | SchedulePoolsApplied | ScheduleApplied] = [
        ScheduleApplying(1, amsterdam, 12, NOW),
        SchedulePoolsApplied(1, BatchTally(0, 12, 10, 1, 0, 1, refusals, 42)),
        ScheduleApplied(1, 3, ("south:2026-11-30T08",), NOW),
    ]
    for event in events:
        stored = codec.encode_event(event)
        assert codec.decode_event(stored.event_type, stored.schema_version, stored.payload) == event
    with pytest.raises(DecodingError, match="v2 is not known"):
        codec.decode_event("ScheduleApplying", 2, codec.encode_event(events[0]).payload)
