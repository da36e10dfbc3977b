"""Waitlists and longer holds: the pool's rules (order, the skip rule, bounds, repeats, pause and
retirement), extending holds, the writer (offers in the journal exactly once, across a replay and a
snapshot), and the codec (new events, PoolConfigured v2 and snapshot v3 still read)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from capacity_service.adapters.codec import Codec, PoolSnapshotV3
from capacity_service.adapters.journal.memory import InMemoryJournal
from capacity_service.application.recovery import differences, recover_pool
from capacity_service.application.webhook_events import EventMapper, new_fold
from capacity_service.domain import (
    DEFAULT_MAX_HOLD_SECONDS,
    DEFAULT_WAITLIST_LIMIT,
    CapacityReleased,
    ConfigurePool,
    Confirm,
    ExpireHolds,
    ExtendHold,
    HoldExtended,
    HoldHasExpired,
    InvalidCommand,
    JoinWaitlist,
    LeaveWaitlist,
    PausePool,
    PoolCommand,
    PoolConfigured,
    PoolEvent,
    PoolIsPaused,
    PoolIsRetired,
    PoolState,
    Release,
    RequestIdReused,
    ReservationIsActive,
    ReservationStatus,
    ReservationWasReleased,
    Reserve,
    ResumePool,
    RetirePool,
    UnknownReservation,
    UnknownWaitlistEntry,
    WaitlistIsFull,
    WaitlistJoined,
    WaitlistLeft,
    WaitlistOffered,
    WaitlistStatus,
    apply_all,
    decide,
    new_reservation_id,
    new_waitlist_entry_id,
    place_of,
)
from tests.unit.test_holds import T0, Clock, event_types, hold, writer_on


def join(quantity: int = 1, hold_seconds: int = 60, request_id: str | None = None) -> JoinWaitlist:
    entry_id = new_waitlist_entry_id()
    return JoinWaitlist(entry_id, request_id or entry_id, quantity, hold_seconds, new_reservation_id("p"))


def pool(capacity: int, **settings: int) -> PoolState:
    state = PoolState("p")
    run(state, ConfigurePool(capacity, "z", **settings))  # type: ignore[arg-type]
    return state


def run(state: PoolState, command: PoolCommand, now: timedelta = timedelta()) -> list[PoolEvent]:
    decision = decide(state, command, T0 + now)
    assert isinstance(decision, list), decision
    apply_all(state, decision)
    return decision


def full_pool(capacity: int) -> tuple[PoolState, list[Reserve]]:
    """A pool with every unit taken, one reservation per unit."""
    state = pool(capacity)
    taken = [hold(seconds=3600) for _ in range(capacity)]
    for command in taken:
        run(state, command)
    return state, taken


def offers(events: list[PoolEvent]) -> list[WaitlistOffered]:
    return [e for e in events if isinstance(e, WaitlistOffered)]


# ---------------------------------------------------------------------- joining and the order of offers


def test_an_entry_that_fits_now_is_offered_at_once_as_a_hold() -> None:
    state = pool(3)
    command = join(quantity=2, hold_seconds=90)
    joined, offered = run(state, command)
    assert isinstance(joined, WaitlistJoined)
    assert offered == WaitlistOffered(
        command.entry_id, command.request_id, command.reservation_id, 2, T0 + timedelta(seconds=90)
    )
    held = state.reservations[command.reservation_id]
    assert (held.status, held.quantity, held.expires_at) == (ReservationStatus.HELD, 2, T0 + timedelta(seconds=90))
    assert state.remaining == 1 and not state.waiting
    place = place_of(state, command.entry_id)
    assert place is not None and place.entry.status is WaitlistStatus.OFFERED and place.offered == held


def test_freed_units_go_to_the_waiting_entries_in_the_order_they_joined() -> None:
    state, taken = full_pool(3)
    first, second, third = join(), join(), join()
    for command in (first, second, third):
        assert offers(run(state, command)) == []
    assert [place_of(state, c.entry_id).position for c in (first, second, third)] == [1, 2, 3]  # type: ignore[union-attr]
    [released, offered] = run(state, Release(taken[0].reservation_id))
    assert isinstance(released, CapacityReleased) and offered.entry_id == first.entry_id  # type: ignore[union-attr]
    assert place_of(state, second.entry_id).position == 1  # type: ignore[union-attr]
    due = ExpireHolds((taken[1].reservation_id, taken[2].reservation_id))
    assert [o.entry_id for o in offers(run(state, due, timedelta(hours=2)))] == [second.entry_id, third.entry_id]
    assert state.remaining == 0 and state.reserved == 3 and not state.waiting


def test_an_entry_too_large_for_what_freed_is_skipped_and_keeps_its_place() -> None:
    state, taken = full_pool(3)
    large, small = join(quantity=2), join(quantity=1)
    run(state, large)
    run(state, small)
    assert [o.entry_id for o in offers(run(state, Release(taken[0].reservation_id)))] == [small.entry_id]
    assert place_of(state, large.entry_id).position == 1  # type: ignore[union-attr]
    assert offers(run(state, Release(taken[1].reservation_id))) == []  # 1 free: still too small for it
    assert [o.entry_id for o in offers(run(state, Release(taken[2].reservation_id)))] == [large.entry_id]
    assert state.remaining == 0


def test_raising_capacity_offers_and_lowering_it_offers_nothing() -> None:
    state, _ = full_pool(2)
    waiting = [join(), join(), join()]
    for command in waiting:
        run(state, command)
    assert offers(run(state, ConfigurePool(1, "z"))) == []
    assert [o.entry_id for o in offers(run(state, ConfigurePool(3, "z")))] == [waiting[0].entry_id]
    assert [o.entry_id for o in offers(run(state, ConfigurePool(9, "z")))] == [w.entry_id for w in waiting[1:]]
    assert state.reserved == 5


def test_an_offered_hold_that_lapses_goes_to_the_next_entry() -> None:
    state, taken = full_pool(1)
    first, second = join(hold_seconds=30), join()
    run(state, first)
    run(state, second)
    run(state, Release(taken[0].reservation_id), timedelta(seconds=1))
    lapsed = ExpireHolds((first.reservation_id,))
    assert offers(run(state, lapsed, timedelta(seconds=20))) == []  # not due yet
    [_, offered] = run(state, lapsed, timedelta(seconds=31))
    assert offered.entry_id == second.entry_id  # type: ignore[union-attr]
    assert state.reservations[first.reservation_id].status is ReservationStatus.EXPIRED
    assert place_of(state, first.entry_id).entry.status is WaitlistStatus.OFFERED  # type: ignore[union-attr]


def test_a_reserve_never_takes_what_the_waitlist_was_offered() -> None:
    state, taken = full_pool(1)
    run(state, join())
    run(state, Release(taken[0].reservation_id))
    assert state.remaining == 0
    assert not isinstance(decide(state, hold(), T0), list)  # NotEnoughCapacity: the offer holds the unit


def test_a_repeated_join_is_the_same_entry_and_a_reuse_with_another_body_is_refused() -> None:
    state, _ = full_pool(1)
    command = join(quantity=1, request_id="r-1")
    run(state, command)
    again = JoinWaitlist(new_waitlist_entry_id(), "r-1", 1, 60, new_reservation_id("p"))
    assert run(state, again) == []
    other = JoinWaitlist(new_waitlist_entry_id(), "r-1", 2, 60, new_reservation_id("p"))
    assert decide(state, other, T0) == RequestIdReused("r-1", command.reservation_id)
    assert len(state.waitlist) == 1


def test_the_waitlist_is_bounded_by_the_pools_limit_of_entries_waiting() -> None:
    state = pool(0, waitlist_limit=2)
    first = join()
    run(state, first)
    run(state, join())
    assert decide(state, join(), T0) == WaitlistIsFull("p", 2)
    run(state, LeaveWaitlist(first.entry_id))  # leaving makes room
    run(state, join())
    assert len(state.waiting) == 2


def test_leaving_is_idempotent_and_an_unknown_entry_is_refused() -> None:
    state, _ = full_pool(1)
    command = join()
    run(state, command)
    assert run(state, LeaveWaitlist(command.entry_id)) == [WaitlistLeft(command.entry_id, command.request_id)]
    assert run(state, LeaveWaitlist(command.entry_id)) == []
    assert place_of(state, command.entry_id).entry.status is WaitlistStatus.LEFT  # type: ignore[union-attr]
    assert decide(state, LeaveWaitlist("nope"), T0) == UnknownWaitlistEntry("p", "nope")


def test_a_paused_pool_takes_no_joins_and_offers_nothing_until_resumed() -> None:
    state, taken = full_pool(1)
    waiting = join()
    run(state, waiting)
    run(state, PausePool("incident"))
    assert isinstance(decide(state, join(), T0), PoolIsPaused)
    assert run(state, ExpireHolds((taken[0].reservation_id,)), timedelta(hours=2)) != []  # expiry goes on
    assert state.remaining == 1 and waiting.entry_id in state.waiting  # ... but is not offered yet
    assert [o.entry_id for o in offers(run(state, ResumePool()))] == [waiting.entry_id]


def test_a_retired_pool_takes_no_joins_and_offers_nothing() -> None:
    state, taken = full_pool(1)
    waiting = join(request_id="w")
    run(state, waiting)
    run(state, RetirePool())
    assert isinstance(decide(state, join(), T0), PoolIsRetired)
    assert offers(run(state, Release(taken[0].reservation_id))) == []
    place = place_of(state, waiting.entry_id)
    assert place is not None and place.pool_retired and place.entry.status is WaitlistStatus.WAITING
    assert run(state, waiting) == []  # a repeat is answered as before


def test_a_join_is_checked_against_the_pools_max_hold_seconds() -> None:
    state = pool(1, max_hold_seconds=120)
    assert isinstance(decide(state, join(hold_seconds=121), T0), InvalidCommand)
    assert isinstance(decide(state, join(quantity=0), T0), InvalidCommand)


# ---------------------------------------------------------------------- extending holds


def test_extend_lengthens_a_hold_up_to_the_pools_max_hold_seconds_and_never_shortens_it() -> None:
    state = pool(2, max_hold_seconds=3_600)
    command = hold(seconds=60)
    run(state, command)
    rid = command.reservation_id
    assert run(state, ExtendHold(rid, 600), timedelta(seconds=10)) == [HoldExtended(rid, T0 + timedelta(seconds=610))]
    assert state.reservations[rid].expires_at == T0 + timedelta(seconds=610)
    assert run(state, ExtendHold(rid, 300), timedelta(seconds=20)) == []  # would end sooner: unchanged
    assert isinstance(decide(state, ExtendHold(rid, 3_601), T0), InvalidCommand)
    assert isinstance(decide(state, ExtendHold(rid, 0), T0), InvalidCommand)
    assert decide(state, ExtendHold("p~nope", 60), T0) == UnknownReservation("p~nope")


def test_extend_is_refused_for_expired_released_and_active_reservations() -> None:
    state = pool(5)
    expired, released, confirmed = hold(seconds=1), hold(), hold()
    plain = Reserve(1, "plain", new_reservation_id("p"))
    for command in (expired, released, confirmed, plain):
        run(state, command)
    run(state, ExpireHolds((expired.reservation_id,)), timedelta(seconds=2))
    run(state, Release(released.reservation_id))
    run(state, Confirm(confirmed.reservation_id))
    assert decide(state, ExtendHold(expired.reservation_id, 60), T0) == HoldHasExpired(expired.reservation_id)
    assert decide(state, ExtendHold(released.reservation_id, 60), T0) == ReservationWasReleased(released.reservation_id)
    for active in (confirmed, plain):
        assert decide(state, ExtendHold(active.reservation_id, 60), T0) == ReservationIsActive(active.reservation_id)


def test_an_extended_hold_expires_at_its_new_time_once() -> None:
    journal, clock = InMemoryJournal(), Clock()
    writer = writer_on(journal, clock)
    writer.execute([ConfigurePool(1, "z")])
    command = hold(seconds=5)
    writer.execute([command])
    writer.execute([ExtendHold(command.reservation_id, 60)])
    assert writer.next_expiry() == T0 + timedelta(seconds=60)
    clock.now = T0 + timedelta(seconds=30)
    writer.execute([ExpireHolds()])
    assert writer.state.reservations[command.reservation_id].status is ReservationStatus.HELD
    clock.now = T0 + timedelta(seconds=61)
    writer.execute([ExpireHolds()])
    writer.execute([ExpireHolds()])
    assert event_types(journal).count("HoldExpired") == 1 and writer.state.reserved == 0


# ---------------------------------------------------------------------- the writer and the journal


def test_offers_are_in_the_journal_with_what_freed_them_and_a_replay_offers_nothing_again() -> None:
    journal, clock = InMemoryJournal(), Clock()
    writer = writer_on(journal, clock, every=4)  # a snapshot on the way: recovery reads it, then events
    writer.execute([ConfigurePool(2, "z")])
    taken = [hold(seconds=10), hold(seconds=3600)]
    writer.execute(taken)
    entries = [join(hold_seconds=30), join(quantity=2), join()]
    writer.execute(entries)
    assert writer.snapshot_if_due()
    clock.now = T0 + timedelta(seconds=11)
    writer.execute([Release(taken[1].reservation_id)])  # the due expiry goes first, in the same append
    # 1 freed by the expiry goes to entries[0]; 1 more by the release to entries[2] (entries[1] is too large)
    assert event_types(journal)[-4:] == ["HoldExpired", "WaitlistOffered", "CapacityReleased", "WaitlistOffered"]
    offered = [e for e in journal.read("p") if e.event_type == "WaitlistOffered"]
    assert len(offered) == 2
    assert {e for e in writer.state.waitlist if writer.state.waitlist[e].status is WaitlistStatus.OFFERED} == {
        entries[0].entry_id,
        entries[2].entry_id,
    }

    clock.now = T0 + timedelta(hours=1)
    successor = writer_on(journal, clock)  # a restart: the state is replayed, nothing is decided twice
    assert successor.state == writer.state
    assert successor.next_expiry() == T0 + timedelta(seconds=41)  # the offered hold's expiry is pending
    # Both offered holds lapsed while it was down: at recovery they expire together, and the 2 units go to
    # entries[1], skipped before; once, however often the pool is woken.
    successor.execute([ExpireHolds()])
    successor.execute([ExpireHolds()])
    counts = event_types(journal)
    assert counts.count("WaitlistOffered") == 3 and counts.count("HoldExpired") == 2
    assert counts[-2:] == ["HoldExpired", "WaitlistOffered"]
    assert successor.state.waitlist[entries[1].entry_id].status is WaitlistStatus.OFFERED
    recovered = recover_pool(journal, Codec(), "p").state
    assert recovered == successor.state and recovered.reserved <= recovered.capacity


def test_while_entries_wait_a_storm_of_expiries_goes_out_in_smaller_appends_each_offering_what_it_freed() -> None:
    """Each freed unit may become an offer, an event of its own: while entries wait, a batch expires fewer
    holds, so that preparing one holds the host's other pools for milliseconds, not tens of them."""
    journal, clock = InMemoryJournal(), Clock()
    writer = writer_on(journal, clock)
    writer.execute([ConfigurePool(50, "z")])
    writer.execute([hold(seconds=1) for _ in range(50)])
    entries = [join(hold_seconds=600) for _ in range(45)]
    writer.execute(entries)
    clock.now = T0 + timedelta(seconds=2)
    appends = []
    while (due := writer.next_expiry()) is not None and due <= clock.now:  # the offers' holds are later
        seq_nr = writer.seq_nr
        writer.execute([ExpireHolds()])
        appends.append(event_types(journal)[seq_nr:])
    freed = [len([t for t in types if t == "WaitlistOffered"]) for types in appends]
    assert freed == [20, 20, 5] and all(types[0] == "HoldExpired" for types in appends)  # at most 20 holds each
    offered = [e for e in journal.read("p") if e.event_type == "WaitlistOffered"]
    assert [json.loads(e.payload)["entry_id"] for e in offered] == [entry.entry_id for entry in entries]
    assert writer.state.reserved == 45 and not writer.state.waiting


def test_the_join_outcome_names_the_entry_and_its_place() -> None:
    journal, clock = InMemoryJournal(), Clock()
    writer = writer_on(journal, clock)
    writer.execute([ConfigurePool(0, "z")])
    first, second = join(), join()
    outcomes = writer.execute([first, second, JoinWaitlist(new_waitlist_entry_id(), first.request_id, 1, 60, "x")])
    places = [o.place for o in outcomes]
    assert [(p.entry.entry_id, p.position) for p in places if p is not None] == [
        (first.entry_id, 1),
        (second.entry_id, 2),
        (first.entry_id, 1),  # a repeat: the entry its request id made
    ]


# ---------------------------------------------------------------------- the codec


def test_the_waitlist_events_round_trip_through_the_codec() -> None:
    codec = Codec()
    for event in (
        PoolConfigured(3, "z", None, None, 7_200, 50),
        WaitlistJoined("e1", "r1", 2, 60, "p~1"),
        WaitlistOffered("e1", "r1", "p~1", 2, T0 + timedelta(seconds=60)),
        WaitlistLeft("e1", "r1"),
        HoldExtended("p~1", T0 + timedelta(seconds=90)),
    ):
        encoded = codec.encode_event(event)
        assert codec.decode_event(encoded.event_type, encoded.schema_version, encoded.payload) == event


def test_a_pool_configured_before_waitlists_reads_with_the_defaults() -> None:
    old = b'{"capacity":5,"zone":"north","slot_start":null,"slot_end":null}'  # PoolConfigured v2
    event = Codec().decode_event("PoolConfigured", 2, old)
    assert event == PoolConfigured(5, "north", None, None, DEFAULT_MAX_HOLD_SECONDS, DEFAULT_WAITLIST_LIMIT)
    assert Codec().decode_event("PoolConfigured", 1, b'{"capacity":5,"zone":"north"}') == event


def test_a_snapshot_keeps_the_waitlist_and_a_snapshot_v3_reads_with_an_empty_one() -> None:
    state, taken = full_pool(2)
    state.max_hold_seconds = 7_200
    entries = [join(), join(quantity=2), join()]
    for command in entries:
        run(state, command)
    run(state, LeaveWaitlist(entries[2].entry_id))
    run(state, Release(taken[0].reservation_id))
    codec = Codec()
    version, payload = codec.encode_snapshot(state)
    assert version == 4 and codec.decode_snapshot(version, payload) == state
    old = _snapshot_v3_of(codec, state)
    decoded = codec.decode_snapshot(3, old)
    assert decoded.waitlist == {} and decoded.waiting == {} and decoded.max_hold_seconds == DEFAULT_MAX_HOLD_SECONDS
    assert decoded.reservations == state.reservations


def _snapshot_v3_of(codec: Codec, state: PoolState) -> bytes:
    _, payload = codec.encode_snapshot(state)
    fields = PoolSnapshotV3.model_fields
    data = {k: v for k, v in json.loads(payload).items() if k in fields}
    return PoolSnapshotV3.model_validate(data).model_dump_json().encode()


@pytest.mark.parametrize("settings", [{"max_hold_seconds": 0}, {"waitlist_limit": -1}])
def test_pool_settings_out_of_range_are_refused(settings: dict[str, int]) -> None:
    assert isinstance(decide(PoolState("p"), ConfigurePool(1, "z", **settings), T0), InvalidCommand)  # type: ignore[arg-type]


def test_the_operators_check_tells_waitlists_that_differ() -> None:
    state, _ = full_pool(1)
    entries = [join(), join()]
    for command in entries:
        run(state, command)
    other = state.copy()
    run(other, LeaveWaitlist(entries[0].entry_id))
    found = differences(state, other)
    assert "the entries waiting, or their order, differ" in found
    assert any(line.startswith(f"waitlist entry {entries[0].entry_id!r}") for line in found)
    assert differences(state, state.copy()) == []


def test_the_webhooks_map_the_offers_a_pool_writes_and_nothing_else_of_the_waitlist() -> None:
    journal, clock = InMemoryJournal(), Clock()
    writer = writer_on(journal, clock)
    taken = hold(seconds=600)
    writer.execute([ConfigurePool(1, "z"), taken])
    entries = [join(request_id="w-1"), join(request_id="w-2")]
    writer.execute(entries)
    writer.execute([LeaveWaitlist(entries[1].entry_id), ExtendHold(taken.reservation_id, 900)])
    writer.execute([Release(taken.reservation_id)])
    mapper, fold = EventMapper(), new_fold("p")
    events = [e for stored in journal.read("p") for e in mapper.map("p", fold, stored)]
    assert [e.event_type for e in events] == ["pool.sold_out", "pool.back_on_sale", "waitlist.offered", "pool.sold_out"]
    offered = events[2].data
    assert {k: offered[k] for k in ("pool_id", "entry_id", "request_id", "reservation_id", "quantity")} == {
        "pool_id": "p",
        "entry_id": entries[0].entry_id,
        "request_id": "w-1",
        "reservation_id": entries[0].reservation_id,
        "quantity": 1,
    }
    assert datetime.fromisoformat(offered["expires_at"]) == T0 + timedelta(seconds=60)
