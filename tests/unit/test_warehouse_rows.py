"""The warehouse's rows of each event, on both paths: handed over live by the writer (``rows_of``) and
rebuilt from the journal by the catch-up (``next_rows``). Both must agree for every kind of event,
holds included, or the warehouse would show a different pool depending on which path delivered a row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from capacity_service.adapters.codec import Codec
from capacity_service.adapters.journal.memory import InMemoryJournal
from capacity_service.adapters.warehouse.rows import Delivery, WarehouseRow, next_rows, rows_of
from capacity_service.application.pool_writer import PoolWriter
from capacity_service.domain import (
    ConfigurePool,
    Confirm,
    ExpireHolds,
    ExtendHold,
    JoinWaitlist,
    LeaveWaitlist,
    PoolCommand,
    Release,
    Reserve,
    RetirePool,
    new_reservation_id,
    new_waitlist_entry_id,
)

T0 = datetime(2026, 12, 3, 12, tzinfo=UTC)


def compared(row: WarehouseRow) -> tuple[object, ...]:
    return (
        row.event_id,
        row.seq_nr,
        row.part,
        row.event_type,
        row.quantity,
        row.reservation_id,
        row.request_id,
        row.capacity,
        row.reserved,
    )


def test_live_and_caught_up_rows_agree_for_every_event_holds_included() -> None:
    now = [T0]
    journal = InMemoryJournal()
    writer = PoolWriter("p", journal, clock=lambda: now[0])
    writer.start()
    ids = [new_reservation_id("p") for _ in range(5)]
    commands: list[PoolCommand] = [
        ConfigurePool(10, "z"),
        Reserve(2, "plain", ids[0]),
        Reserve(3, "kept", ids[1], 60),
        Reserve(1, "lapsed", ids[2], 5),
        Reserve(1, "let-go", ids[3], 60),
        Reserve(1, "lapsed-too", ids[4], 5),
        Confirm(ids[1]),
        Release(ids[3]),
        Release(ids[0]),
        RetirePool(),
    ]
    live = [row for command in commands for e in writer.execute_batch([command]).persisted for row in rows_of(e)]
    now[0] = T0 + timedelta(seconds=10)
    live += [row for e in writer.execute_batch([ExpireHolds()]).persisted for row in rows_of(e)]
    assert [r.event_type for r in live] == [
        "PoolConfigured",
        "CapacityReserved",
        "CapacityHeld",
        "CapacityHeld",
        "CapacityHeld",
        "CapacityHeld",
        "HoldConfirmed",
        "CapacityReleased",
        "CapacityReleased",
        "PoolRetired",
        "HoldExpired",  # both lapsed holds in one event of two parts, one row each
        "HoldExpired",
    ]
    assert [r.reserved for r in live] == [0, 2, 5, 6, 7, 8, 8, 7, 5, 5, 4, 3]
    assert [(r.seq_nr, r.part) for r in live[-2:]] == [(11, 1), (11, 2)]
    assert {r.reservation_id for r in live[-2:]} == {ids[2], ids[4]}
    assert live[-1].event_id == "p/11/2" and live[0].event_id == "p/1"

    codec, delivered, caught_up = Codec(), Delivery("p"), []
    for stored in journal.read("p"):
        event = codec.decode_event(stored.event_type, stored.schema_version, stored.payload)
        rows = next_rows(delivered, stored.seq_nr, event, stored.recorded_at)
        caught_up += rows
        delivered = Delivery.after(rows[-1])
    assert [compared(r) for r in caught_up] == [compared(r) for r in live]


def test_live_and_caught_up_rows_agree_for_waitlist_events_and_extended_holds() -> None:
    now = [T0]
    journal = InMemoryJournal()
    writer = PoolWriter("p", journal, clock=lambda: now[0])
    writer.start()
    taken = new_reservation_id("p")
    entries = [JoinWaitlist(new_waitlist_entry_id(), f"w-{i}", 1, 30, new_reservation_id("p")) for i in range(3)]
    commands: list[PoolCommand] = [
        ConfigurePool(1, "z"),
        Reserve(1, "held", taken, 60),
        ExtendHold(taken, 120),
        *entries,
        LeaveWaitlist(entries[1].entry_id),
        Release(taken),
    ]
    live = [row for command in commands for e in writer.execute_batch([command]).persisted for row in rows_of(e)]
    now[0] = T0 + timedelta(seconds=31)
    live += [row for e in writer.execute_batch([ExpireHolds()]).persisted for row in rows_of(e)]
    assert [r.event_type for r in live] == [
        "PoolConfigured",
        "CapacityHeld",
        "HoldExtended",
        "WaitlistJoined",
        "WaitlistJoined",
        "WaitlistJoined",
        "WaitlistLeft",
        "CapacityReleased",
        "WaitlistOffered",  # the released unit, to the first entry
        "HoldExpired",  # its offer lapsed ...
        "WaitlistOffered",  # ... and went to the third (the second left)
    ]
    assert [r.reserved for r in live] == [0, 1, 1, 1, 1, 1, 1, 0, 1, 0, 1]
    assert [r.request_id for r in live if r.event_type == "WaitlistOffered"] == ["w-0", "w-2"]
    assert [r.reservation_id for r in live if r.event_type == "WaitlistOffered"] == [
        entries[0].reservation_id,
        entries[2].reservation_id,
    ]
    assert live[6].request_id == "w-1" and live[2].reservation_id == taken

    codec, delivered, caught_up = Codec(), Delivery("p"), []
    for stored in journal.read("p"):
        event = codec.decode_event(stored.event_type, stored.schema_version, stored.payload)
        rows = next_rows(delivered, stored.seq_nr, event, stored.recorded_at)
        caught_up += rows
        delivered = Delivery.after(rows[-1])
    assert [compared(r) for r in caught_up] == [compared(r) for r in live]
