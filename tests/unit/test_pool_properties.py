"""Property-based: no interleaving of reserves, holds, confirms, releases, expiries (the clock moving on),
capacity changes, waitlist joins and leaves, and extends breaks the pool's invariants: never oversold, every
hold (offered ones included) ends exactly once, every entry is offered at most once and in order (the skip
rule), and no entry waits in an open pool while it fits in what is free."""

from collections import Counter
from datetime import UTC, datetime, timedelta

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from capacity_service.adapters.codec import Codec
from capacity_service.domain import (
    CapacityHeld,
    CapacityReleased,
    CapacityReserved,
    ConfigurePool,
    Confirm,
    ExpireHolds,
    ExtendHold,
    HoldConfirmed,
    HoldsExpired,
    JoinWaitlist,
    LeaveWaitlist,
    PausePool,
    PoolCommand,
    PoolEvent,
    PoolState,
    Release,
    ReservationStatus,
    Reserve,
    ResumePool,
    WaitlistOffered,
    apply,
    apply_all,
    decide,
    new_reservation_id,
    new_waitlist_entry_id,
)

REQUEST_IDS = st.sampled_from([f"req-{i}" for i in range(12)])


class PoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.state = PoolState("pool-prop")
        self.events: list[PoolEvent] = []
        self.issued: list[str] = []
        self.entries: list[str] = []
        self.now = datetime(2026, 12, 3, tzinfo=UTC)

    def _run(self, command: PoolCommand) -> list[PoolEvent] | None:
        decision = decide(self.state, command, self.now)
        if not isinstance(decision, list):
            return None
        for event in decision:
            if isinstance(event, CapacityReserved | CapacityHeld | WaitlistOffered):
                # The rule under test: a reserve (or an offer) is accepted only if it fits at that moment.
                assert self.state.reserved + event.quantity <= self.state.capacity
            if isinstance(event, WaitlistOffered):  # in order: no entry waiting ahead of it fitted
                assert self.state.offers_open  # never while paused or retired
                free = self.state.capacity - self.state.reserved
                ahead = list(self.state.waiting)[: list(self.state.waiting).index(event.entry_id)]
                assert all(self.state.waitlist[e].quantity > free for e in ahead)
            apply(self.state, event)
        self.events.extend(decision)
        return decision

    @rule(capacity=st.integers(min_value=0, max_value=30))
    def configure(self, capacity: int) -> None:
        self._run(ConfigurePool(capacity, "zone-a"))

    @rule(
        quantity=st.integers(min_value=-1, max_value=8),
        request_id=REQUEST_IDS,
        hold_seconds=st.none() | st.integers(min_value=1, max_value=20),
    )
    def reserve(self, quantity: int, request_id: str, hold_seconds: int | None) -> None:
        reservation_id = new_reservation_id(self.state.pool_id)
        before = self.state.reserved
        known = self.state.reservation_for_request(request_id)
        self._run(Reserve(quantity, request_id, reservation_id, hold_seconds))
        self.issued.append(reservation_id)
        if known is not None:
            assert self.state.reserved == before  # a repeat never takes capacity again

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        if not self.issued:
            return
        self._run(Release(data.draw(st.sampled_from(self.issued))))

    @rule(data=st.data())
    def confirm(self, data: st.DataObject) -> None:
        if self.issued:
            self._run(Confirm(data.draw(st.sampled_from(self.issued))))

    @rule(seconds=st.integers(min_value=0, max_value=15))
    def time_passes_and_due_holds_expire(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)
        due = [
            r.reservation_id
            for r in self.state.reservations.values()
            if r.status is ReservationStatus.HELD and r.expires_at is not None and r.expires_at <= self.now
        ]
        self._run(ExpireHolds(tuple(due)))
        assert not any(
            r.status is ReservationStatus.HELD and r.expires_at is not None and r.expires_at <= self.now
            for r in self.state.reservations.values()
        )

    @rule(quantity=st.integers(min_value=0, max_value=6), request_id=REQUEST_IDS, hold=st.integers(1, 20))
    def join_the_waitlist(self, quantity: int, request_id: str, hold: int) -> None:
        command = JoinWaitlist(
            new_waitlist_entry_id(), request_id, quantity, hold, new_reservation_id(self.state.pool_id)
        )
        self._run(command)
        self.entries.append(command.entry_id)
        self.issued.append(command.reservation_id)

    @rule(data=st.data())
    def leave_the_waitlist(self, data: st.DataObject) -> None:
        if self.entries:
            self._run(LeaveWaitlist(data.draw(st.sampled_from(self.entries))))

    @rule(data=st.data(), seconds=st.integers(min_value=1, max_value=30))
    def extend(self, data: st.DataObject, seconds: int) -> None:
        if self.issued:
            self._run(ExtendHold(data.draw(st.sampled_from(self.issued)), seconds))

    @rule(paused=st.booleans())
    def pause_or_resume(self, paused: bool) -> None:
        self._run(PausePool("drill") if paused else ResumePool())

    @invariant()
    def no_entry_waits_in_an_open_pool_while_it_fits(self) -> None:
        if self.state.offers_open:
            assert all(self.state.waitlist[e].quantity > self.state.remaining for e in self.state.waiting)

    @invariant()
    def an_entry_is_offered_at_most_once(self) -> None:
        counts = Counter(e.entry_id for e in self.events if isinstance(e, WaitlistOffered))
        assert all(n == 1 for n in counts.values())

    @invariant()
    def reserved_is_what_held_and_active_reservations_hold(self) -> None:
        taken = sum(r.quantity for r in self.state.reservations.values() if r.status.takes_capacity)
        assert self.state.reserved == taken
        assert self.state.reserved >= 0
        assert self.state.remaining == max(0, self.state.capacity - self.state.reserved)

    @invariant()
    def a_request_id_takes_capacity_at_most_once(self) -> None:
        counts = Counter(e.request_id for e in self.events if isinstance(e, CapacityReserved | CapacityHeld))
        assert all(n == 1 for n in counts.values())

    @invariant()
    def every_hold_ends_exactly_once(self) -> None:
        """A hold ends by a confirm, a release while held, or its expiry: one of them, once; until then it
        is held."""
        held = {e.reservation_id for e in self.events if isinstance(e, CapacityHeld | WaitlistOffered)}
        ends: Counter[str] = Counter()
        still_held = set(held)
        for event in self.events:
            if isinstance(event, HoldsExpired):  # one event for every hold expired at once
                ended = list(event.reservation_ids)
            elif isinstance(event, HoldConfirmed | CapacityReleased):
                ended = [event.reservation_id]
            else:
                continue
            for reservation_id in ended:
                if reservation_id in still_held:
                    ends[reservation_id] += 1
                    still_held.discard(reservation_id)
                elif not isinstance(event, CapacityReleased):
                    raise AssertionError(f"{event} for a reservation that was not held")
        assert all(n == 1 for n in ends.values())
        for reservation_id in held:
            is_held = self.state.reservations[reservation_id].status is ReservationStatus.HELD
            assert is_held == (reservation_id in still_held)

    @invariant()
    def replaying_the_events_reproduces_the_state(self) -> None:
        replayed = apply_all(PoolState(self.state.pool_id), self.events)
        assert replayed == self.state

    @invariant()
    def the_snapshot_round_trip_reproduces_the_state(self) -> None:
        codec = Codec()
        version, payload = codec.encode_snapshot(self.state)
        assert codec.decode_snapshot(version, payload) == self.state


TestPoolMachine = PoolMachine.TestCase
TestPoolMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
