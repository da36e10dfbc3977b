"""Property-based: no sequence of commands breaks the pool's invariants."""

from collections import Counter

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from capacity_service.adapters.codec import Codec
from capacity_service.domain import (
    CapacityReserved,
    ConfigurePool,
    PoolEvent,
    PoolState,
    Release,
    ReservationStatus,
    Reserve,
    apply,
    apply_all,
    decide,
    new_reservation_id,
)

REQUEST_IDS = st.sampled_from([f"req-{i}" for i in range(12)])


class PoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.state = PoolState("pool-prop")
        self.events: list[PoolEvent] = []
        self.issued: list[str] = []

    def _run(self, command: ConfigurePool | Reserve | Release) -> list[PoolEvent] | None:
        decision = decide(self.state, command)
        if not isinstance(decision, list):
            return None
        for event in decision:
            if isinstance(event, CapacityReserved):
                # The rule under test: a reserve is accepted only if it fits at that moment.
                assert self.state.reserved + event.quantity <= self.state.capacity
            apply(self.state, event)
        self.events.extend(decision)
        return decision

    @rule(capacity=st.integers(min_value=0, max_value=30))
    def configure(self, capacity: int) -> None:
        self._run(ConfigurePool(capacity, "zone-a"))

    @rule(quantity=st.integers(min_value=-1, max_value=8), request_id=REQUEST_IDS)
    def reserve(self, quantity: int, request_id: str) -> None:
        reservation_id = new_reservation_id(self.state.pool_id)
        before = self.state.reserved
        known = self.state.reservation_for_request(request_id)
        self._run(Reserve(quantity, request_id, reservation_id))
        self.issued.append(reservation_id)
        if known is not None:
            assert self.state.reserved == before  # a repeat never takes capacity again

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        if not self.issued:
            return
        self._run(Release(data.draw(st.sampled_from(self.issued))))

    @invariant()
    def reserved_is_what_active_reservations_hold(self) -> None:
        active = sum(r.quantity for r in self.state.reservations.values() if r.status is ReservationStatus.ACTIVE)
        assert self.state.reserved == active
        assert self.state.reserved >= 0
        assert self.state.remaining == max(0, self.state.capacity - self.state.reserved)

    @invariant()
    def a_request_id_takes_capacity_at_most_once(self) -> None:
        counts = Counter(e.request_id for e in self.events if isinstance(e, CapacityReserved))
        assert all(n == 1 for n in counts.values())

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
