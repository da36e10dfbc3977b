"""Holds with expiry: the pool's rules, the writer's clock and timer heap, the host's timer, recovery,
the snapshot format, and the HTTP calls (in process)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from capacity_service.adapters.codec import Codec, DecodingError, PoolSnapshotV1
from capacity_service.adapters.journal.memory import InMemoryJournal
from capacity_service.application.pool_host import PoolHost
from capacity_service.application.pool_writer import PoolWriter
from capacity_service.domain import (
    CapacityHeld,
    CapacityReleased,
    ConfigurePool,
    Confirm,
    ExpireHolds,
    HoldConfirmed,
    HoldHasExpired,
    HoldsExpired,
    InvalidCommand,
    NotEnoughCapacity,
    PersistedEvent,
    PoolEvent,
    PoolState,
    Release,
    ReservationStatus,
    ReservationWasReleased,
    Reserve,
    apply_all,
    decide,
    new_reservation_id,
)
from capacity_service.entrypoints.http.app import create_app
from capacity_service.errors import HoldExpired as HoldExpiredError
from capacity_service.settings import HttpSettings, SnapshotSettings
from tests.support.faulty_journal import FaultyJournal
from tests.support.in_process import InProcessBackend

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def hold(quantity: int = 1, seconds: int = 60, request_id: str | None = None, pool_id: str = "p") -> Reserve:
    rid = new_reservation_id(pool_id)
    return Reserve(quantity, request_id or rid, rid, seconds)


def configured(capacity: int = 5) -> PoolState:
    return apply_all(PoolState("p"), [e for e in decide(PoolState("p"), ConfigurePool(capacity, "z"))])  # type: ignore[union-attr]


def run(state: PoolState, command: Reserve | Confirm | Release | ExpireHolds, now: datetime = T0) -> list[PoolEvent]:
    decision = decide(state, command, now)
    assert isinstance(decision, list), decision
    apply_all(state, decision)
    return decision


# ---------------------------------------------------------------------- the pool's rules


def test_a_hold_takes_capacity_until_it_expires_and_then_gives_it_back() -> None:
    state = configured(capacity=3)
    command = hold(quantity=2, seconds=30)
    [held] = run(state, command)
    assert held == CapacityHeld(command.reservation_id, 2, command.request_id, T0 + timedelta(seconds=30))
    assert (state.reserved, state.remaining) == (2, 1)
    assert isinstance(decide(state, hold(quantity=2), T0), NotEnoughCapacity)  # held counts as taken
    assert run(state, ExpireHolds((command.reservation_id,)), T0 + timedelta(seconds=29)) == []  # not yet
    assert run(state, ExpireHolds((command.reservation_id,)), T0 + timedelta(seconds=30)) == [
        HoldsExpired((command.reservation_id,), (2,))
    ]
    assert state.reservations[command.reservation_id].status is ReservationStatus.EXPIRED
    assert state.reserved == 0
    assert run(state, ExpireHolds((command.reservation_id,)), T0 + timedelta(seconds=99)) == []  # once


def test_confirm_makes_a_hold_active_for_good_and_is_idempotent() -> None:
    state = configured()
    command = hold(seconds=10)
    run(state, command)
    assert run(state, Confirm(command.reservation_id)) == [HoldConfirmed(command.reservation_id)]
    assert run(state, Confirm(command.reservation_id)) == []
    confirmed = state.reservations[command.reservation_id]
    assert (confirmed.status, confirmed.expires_at) == (ReservationStatus.ACTIVE, None)
    assert run(state, ExpireHolds((command.reservation_id,)), T0 + timedelta(days=2)) == []
    assert state.reserved == 1


def test_confirm_after_expiry_or_release_is_refused_and_changes_nothing() -> None:
    state = configured()
    expired, released = hold(seconds=1), hold(seconds=100)
    run(state, expired)
    run(state, released)
    run(state, ExpireHolds((expired.reservation_id,)), T0 + timedelta(seconds=1))
    run(state, Release(released.reservation_id))
    before = state.copy()
    assert decide(state, Confirm(expired.reservation_id), T0) == HoldHasExpired(expired.reservation_id)
    assert decide(state, Confirm(released.reservation_id), T0) == ReservationWasReleased(released.reservation_id)
    assert run(state, Release(expired.reservation_id)) == []  # nothing to give back
    assert state == before


def test_a_repeated_hold_with_its_request_id_is_the_same_hold() -> None:
    state = configured()
    first = hold(request_id="checkout-7")
    run(state, first)
    again = Reserve(1, "checkout-7", new_reservation_id("p"), 60)
    assert run(state, again, T0 + timedelta(seconds=5)) == []
    assert state.reservation_for_request("checkout-7") == state.reservations[first.reservation_id]
    assert state.reserved == 1


def test_a_hold_needs_the_pools_clock_and_a_length_in_range() -> None:
    state = configured()
    assert isinstance(decide(state, hold(), None), InvalidCommand)
    assert isinstance(decide(state, hold(seconds=0), T0), InvalidCommand)
    assert isinstance(decide(state, hold(seconds=86_401), T0), InvalidCommand)
    assert state.reserved == 0


# ---------------------------------------------------------------------- the writer


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def writer_on(journal: InMemoryJournal, clock: Clock, every: int = 1000) -> PoolWriter:
    writer = PoolWriter("p", journal, snapshots=SnapshotSettings(every_n_events=every, keep=2), clock=clock)
    writer.start()
    return writer


def event_types(journal: InMemoryJournal) -> list[str]:
    return [stored.event_type for stored in journal.read("p")]


def test_due_holds_expire_before_the_next_command_is_decided_in_the_same_append() -> None:
    journal, clock = InMemoryJournal(), Clock()
    writer = writer_on(journal, clock)
    writer.execute([ConfigurePool(1, "z")])
    held = hold(seconds=5)
    writer.execute([held])
    assert writer.next_expiry() == T0 + timedelta(seconds=5)
    clock.now = T0 + timedelta(seconds=6)
    [outcome] = writer.execute([hold(seconds=5)])  # fits only because the first one expires first
    assert outcome.rejection is None
    assert event_types(journal) == ["PoolConfigured", "CapacityHeld", "HoldExpired", "CapacityHeld"]
    assert writer.state.reservations[held.reservation_id].status is ReservationStatus.EXPIRED


def test_a_hold_that_expired_while_the_pool_was_down_expires_at_recovery_before_anything_else() -> None:
    journal, clock = InMemoryJournal(), Clock()
    writer = writer_on(journal, clock, every=2)  # a snapshot (v2, with the hold) is taken on the way
    writer.execute([ConfigurePool(1, "z")])
    held = hold(seconds=5)
    writer.execute([held])
    assert writer.snapshot_if_due()
    clock.now = T0 + timedelta(hours=1)
    recovered = writer_on(journal, clock)  # a new incarnation
    assert recovered.state.reservations[held.reservation_id].status is ReservationStatus.HELD
    assert recovered.next_expiry() == T0 + timedelta(seconds=5)
    [wake_up] = recovered.execute([ExpireHolds()])
    assert wake_up.rejection is None and wake_up.events == ()  # the wake-up itself decides nothing
    assert event_types(journal)[-1] == "HoldExpired"
    assert recovered.state.reserved == 0 and recovered.next_expiry() is None
    with pytest.raises(Exception, match=r"fenced|epoch"):
        writer.execute([Confirm(held.reservation_id)])  # the old incarnation cannot write (fencing)


def test_a_storm_of_expiries_goes_out_in_bounded_appends() -> None:
    journal, clock = InMemoryJournal(), Clock()
    writer = writer_on(journal, clock)
    writer.execute([ConfigurePool(5_000, "z")])
    writer.execute([hold(seconds=1) for _ in range(4_500)])
    clock.now = T0 + timedelta(seconds=2)
    sizes = []
    while writer.next_expiry() is not None:
        seq_nr, reserved = writer.seq_nr, writer.state.reserved
        writer.execute([ExpireHolds()])
        assert writer.seq_nr == seq_nr + 1  # one event for the whole batch
        sizes.append(reserved - writer.state.reserved)
    assert sizes == [2_000, 2_000, 500]
    assert writer.state.reserved == 0


def test_snapshots_keep_holds_and_old_snapshots_still_read() -> None:
    state = configured(capacity=10)
    kept, confirmed, expired = hold(seconds=7), hold(seconds=7), hold(seconds=1)
    for command in (kept, confirmed, expired):
        run(state, command)
    run(state, Confirm(confirmed.reservation_id))
    run(state, ExpireHolds((expired.reservation_id,)), T0 + timedelta(seconds=2))
    codec = Codec()
    version, payload = codec.encode_snapshot(state)
    assert version == 4
    assert codec.decode_snapshot(version, payload) == state
    old = PoolSnapshotV1(
        pool_id="p",
        exists=True,
        capacity=3,
        zone="z",
        slot_start=None,
        slot_end=None,
        reserved=1,
        reservation_ids=["a", "b"],
        quantities=[1, 2],
        request_ids=["ra", "rb"],
        released=[False, True],
    )
    decoded = codec.decode_snapshot(1, old.model_dump_json().encode())
    assert [r.status for r in decoded.reservations.values()] == [ReservationStatus.ACTIVE, ReservationStatus.RELEASED]


def test_the_new_events_round_trip_through_the_codec() -> None:
    codec = Codec()
    for event in (
        CapacityHeld("p~1", 2, "r", T0 + timedelta(seconds=3)),
        HoldConfirmed("p~1"),
        HoldsExpired(("p~1", "p~2"), (2, 1)),
        CapacityReleased("p~1", 2),
    ):
        encoded = codec.encode_event(event)
        assert codec.decode_event(encoded.event_type, encoded.schema_version, encoded.payload) == event


def test_an_expiry_of_one_hold_written_before_batches_reads_as_a_batch_of_one() -> None:
    old = b'{"reservation_id":"p~1","quantity":2}'  # HoldExpired v1, as journals before batches hold it
    assert Codec().decode_event("HoldExpired", 1, old) == HoldsExpired(("p~1",), (2,))


def test_an_expiry_that_names_no_hold_or_not_one_quantity_each_is_refused() -> None:
    for payload in (b'{"reservation_ids":[],"quantities":[]}', b'{"reservation_ids":["p~1"],"quantities":[1,2]}'):
        with pytest.raises(DecodingError):
            Codec().decode_event("HoldExpired", 2, payload)


# ---------------------------------------------------------------------- the host's timer


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[float, PersistedEvent]] = []

    def publish_events(self, events: Sequence[PersistedEvent]) -> None:
        self.events.extend((time.time(), e) for e in events)

    def expiries(self) -> list[tuple[float, str]]:
        """(when published, reservation id) of every expired hold."""
        return [
            (at, reservation_id)
            for at, e in self.events
            if isinstance(e.event, HoldsExpired)
            for reservation_id in e.event.reservation_ids
        ]


def test_the_host_expires_a_hold_on_its_own_within_a_second_of_its_expiry() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        host = PoolHost(InMemoryJournal(), events=recorder)
        await host.execute("p", ConfigurePool(2, "z"))
        commands = [hold(seconds=1) for _ in range(2)]
        outcomes = [await host.execute("p", command) for command in commands]
        expires_at = max(o.reservation.expires_at for o in outcomes if o.reservation and o.reservation.expires_at)
        deadline = time.monotonic() + 5
        while len(recorder.expiries()) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(recorder.expiries()) == 2, "nothing expired the holds"
        lag = max(at for at, _ in recorder.expiries()) - expires_at.timestamp()
        assert 0 <= lag < 1.0
        assert (await host.view("p")).remaining == 2
        await asyncio.sleep(0.3)
        assert len(recorder.expiries()) == 2  # once

    asyncio.run(scenario())


def test_an_expiry_the_journal_refused_is_retried_and_lands_once() -> None:
    async def scenario() -> None:
        journal = FaultyJournal()
        host = PoolHost(journal)
        await host.execute("p", ConfigurePool(1, "z"))
        command = hold(seconds=1)
        await host.execute("p", command)
        journal.failing = True
        await asyncio.sleep(1.5)  # the timer fires into the outage
        journal.failing = False
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and "HoldExpired" not in [e.event_type for e in journal.read("p")]:
            await asyncio.sleep(0.05)
        types = [e.event_type for e in journal.read("p")]
        assert types.count("HoldExpired") == 1, types
        found = await host.reservation("p", command.reservation_id)  # waits for the write to settle
        assert found is not None and found.status is ReservationStatus.EXPIRED
        assert (await host.view("p")).remaining == 1

    asyncio.run(scenario())


# ---------------------------------------------------------------------- HTTP (in process)


@pytest.fixture
def http() -> Iterator[TestClient]:
    app = create_app(InProcessBackend(), HttpSettings())
    with TestClient(app) as client:
        assert client.put("/v1/pools/north:1", json={"capacity": 2, "zone": "north"}).status_code == 201
        yield client


def test_http_hold_confirm_and_status(http: TestClient) -> None:
    answer = http.post("/v1/reservations", json={"pool_id": "north:1", "quantity": 2, "hold_seconds": 600})
    assert answer.status_code == 201
    body = answer.json()
    assert body["status"] == "held" and body["remaining"] == 0
    expires_at = datetime.fromisoformat(body["expires_at"])
    assert timedelta(seconds=590) < expires_at - datetime.now(UTC) <= timedelta(seconds=600)
    rid = body["reservation_id"]
    assert http.get(f"/v1/reservations/{rid}").json()["status"] == "held"
    for _ in range(2):  # idempotent
        confirmed = http.post(f"/v1/reservations/{rid}/confirm")
        assert confirmed.status_code == 200, confirmed.text
        assert confirmed.json()["status"] == "active" and confirmed.json()["expires_at"] is None
    assert http.delete(f"/v1/reservations/{rid}").status_code == 200
    refused = http.post(f"/v1/reservations/{rid}/confirm")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "reservation_released"
    unknown = http.post("/v1/reservations/north:1~nope/confirm")
    assert unknown.status_code == 404


def test_http_a_hold_expires_and_its_confirm_is_409(http: TestClient) -> None:
    body = http.post("/v1/reservations", json={"pool_id": "north:1", "hold_seconds": 1}).json()
    time.sleep(1.6)
    assert http.get(f"/v1/reservations/{body['reservation_id']}").json()["status"] == "expired"
    refused = http.post(f"/v1/reservations/{body['reservation_id']}/confirm")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "hold_expired"
    assert http.get("/v1/pools/north:1").json()["remaining"] == 2


@pytest.mark.parametrize("hold_seconds", [0, 86_401, -5, "60", 1.5, True])
def test_http_a_hold_length_out_of_range_is_422_and_takes_nothing(http: TestClient, hold_seconds: object) -> None:
    answer = http.post("/v1/reservations", json={"pool_id": "north:1", "hold_seconds": hold_seconds})
    assert answer.status_code == 422, answer.text
    assert http.get("/v1/pools/north:1").json()["remaining"] == 2


def test_the_client_raises_hold_expired() -> None:
    async def scenario() -> None:
        backend = InProcessBackend()
        await backend.put_pool("p", 1, "z", None, None)
        receipt = await backend.client.reserve("p", hold_seconds=1)
        assert receipt.status == "held" and receipt.expires_at is not None
        await asyncio.sleep(1.5)
        with pytest.raises(HoldExpiredError):
            await backend.client.confirm(receipt.reservation_id)

    asyncio.run(scenario())
