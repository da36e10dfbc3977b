"""Journal events to webhook events: derived from each stream replayed in order (a pool's remaining going to
0 and back, an order confirmed or cancelled), one per expired hold, and ``WaitlistOffered`` by its stored name."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from capacity_service.adapters.journal.memory import InMemoryJournal
from capacity_service.application.webhook_events import (
    EventMapper,
    WebhookEvent,
    decode_fold,
    encode_fold,
    new_fold,
)
from capacity_service.domain import (
    CapacityHeld,
    CapacityReleased,
    CapacityReserved,
    HoldsExpired,
    PoolConfigured,
    PoolWasRetired,
)
from capacity_service.domain.order import (
    Attempt,
    OrderConfirmed,
    OrderConfirming,
    OrderLine,
    OrderLinesTaken,
    OrderPlaced,
    OrderUndoing,
    OrderUndone,
)
from tests.support.webhooks import Appender, waitlist_offered

NOW = datetime(2026, 12, 1, 8, tzinfo=UTC)


def mapped(
    journal: InMemoryJournal, stream_id: str, from_seq_nr: int = 1, state: bytes | None = None
) -> list[WebhookEvent]:
    mapper, fold = EventMapper(), new_fold(stream_id) if state is None else decode_fold(stream_id, state)
    return [e for stored in journal.read(stream_id, from_seq_nr) for e in mapper.map(stream_id, fold, stored)]


def kinds(events: list[WebhookEvent]) -> list[tuple[str, int]]:
    return [(e.event_type, e.seq_nr) for e in events]


def test_a_pool_sells_out_and_comes_back_on_sale_as_its_remaining_goes_to_0_and_from_0() -> None:
    journal = InMemoryJournal()
    append = Appender(journal)
    append.pool(
        "p",
        PoolConfigured(3, "north", None, None),  # 1: created, on sale: nothing to say
        CapacityReserved("r1", 2, "q1"),  # 2: 1 left
        CapacityHeld("r2", 1, "q2", NOW + timedelta(minutes=5)),  # 3: sold out
        CapacityReleased("r1", 2),  # 4: back on sale
        CapacityReserved("r3", 2, "q3"),  # 5: sold out again
        HoldsExpired(("r2",), (1,)),  # 6: the hold expired: back on sale
        PoolConfigured(5, "north", None, None),  # 7: more capacity, on sale already: nothing
        PoolConfigured(2, "north", None, None),  # 8: capacity cut to what is reserved: sold out
    )
    events = mapped(journal, "p")
    assert kinds(events) == [
        ("pool.sold_out", 3),
        ("pool.back_on_sale", 4),
        ("pool.sold_out", 5),
        ("hold.expired", 6),
        ("pool.back_on_sale", 6),
        ("pool.sold_out", 8),
    ]
    assert events[0].data == {
        "pool_id": "p",
        "zone": "north",
        "slot_start": None,
        "slot_end": None,
        "capacity": 3,
        "remaining": 0,
    }
    assert events[3].data == {"pool_id": "p", "reservation_id": "r2", "quantity": 1}
    assert [e.event_id for e in events[3:5]] == ["p/6/0", "p/6/1"]  # two events of one journal event


def test_one_hold_expired_event_per_hold_of_a_batch() -> None:
    journal = InMemoryJournal()
    append = Appender(journal)
    later = NOW + timedelta(minutes=1)
    append.pool(
        "p", PoolConfigured(10, "z", None, None), CapacityHeld("a", 1, "qa", later), CapacityHeld("b", 2, "qb", later)
    )
    append.pool("p", HoldsExpired(("a", "b"), (1, 2)))
    assert [e.data for e in mapped(journal, "p") if e.event_type == "hold.expired"] == [
        {"pool_id": "p", "reservation_id": "a", "quantity": 1},
        {"pool_id": "p", "reservation_id": "b", "quantity": 2},
    ]


def test_a_retired_pool_neither_sells_out_nor_comes_back() -> None:
    journal = InMemoryJournal()
    append = Appender(journal)
    append.pool(
        "p",
        PoolConfigured(1, "z", None, None),
        PoolWasRetired(),
        CapacityReserved("r", 1, "q"),
        CapacityReleased("r", 1),
    )
    assert mapped(journal, "p") == []


def test_a_pool_created_without_capacity_is_not_sold_out_and_goes_on_sale_when_it_gets_some() -> None:
    journal = InMemoryJournal()
    Appender(journal).pool("p", PoolConfigured(0, "z", None, None), PoolConfigured(4, "z", None, None))
    assert kinds(mapped(journal, "p")) == [("pool.back_on_sale", 2)]


def test_waitlist_offered_is_mapped_by_its_stored_type_and_takes_its_units() -> None:
    journal = InMemoryJournal()
    append = Appender(journal)
    append.pool("p", PoolConfigured(2, "z", None, None))
    append.raw("p", waitlist_offered("p", 2, "res-1"))  # a synthetic event, as the waitlist stores it
    events = mapped(journal, "p")
    assert kinds(events) == [("waitlist.offered", 2), ("pool.sold_out", 2)]
    assert events[0].data == {
        "pool_id": "p",
        "entry_id": "entry-1",
        "request_id": "wait-1",
        "reservation_id": "res-1",
        "quantity": 2,
        "expires_at": "2026-12-01T08:00:00+00:00",
    }


def test_an_event_type_this_mapping_does_not_know_sends_nothing_and_changes_nothing() -> None:
    journal = InMemoryJournal()
    append = Appender(journal)
    append.pool("p", PoolConfigured(1, "z", None, None))
    from capacity_service.adapters.journal import NewEvent

    append.raw("p", NewEvent("WaitlistJoined", 1, b'{"quantity": 1}'))
    append.pool("p", CapacityReserved("r", 1, "q"))
    assert kinds(mapped(journal, "p")) == [("pool.sold_out", 3)]


def order_placed(hold_seconds: int | None) -> OrderPlaced:
    lines = (
        OrderLine(1, (Attempt("vans", "vans.r1", "order:o:0:0"),)),
        OrderLine(2, (Attempt("a", "a.r", "order:o:1:0"), Attempt("b", "b.r", "order:o:1:1")), chosen=True),
    )
    return OrderPlaced(lines, hold_seconds, NOW, "digest")


def test_an_order_placed_without_a_hold_is_confirmed_once_its_lines_are_taken() -> None:
    journal = InMemoryJournal()
    Appender(journal).order("order~o", order_placed(None), OrderLinesTaken((0, 1), None))
    [confirmed] = mapped(journal, "order~o")
    assert (confirmed.event_type, confirmed.event_id) == ("order.confirmed", "order~o/2/0")
    assert confirmed.data == {
        "order_id": "o",
        "lines": [
            {"pool_id": "vans", "reservation_id": "vans.r1", "quantity": 1},
            {"pool_id": "b", "reservation_id": "b.r", "quantity": 2},  # the second candidate served it
        ],
    }


def test_a_held_order_is_confirmed_by_its_confirm_and_cancelled_when_undone() -> None:
    journal = InMemoryJournal()
    append = Appender(journal)
    append.order("order~o", order_placed(600), OrderLinesTaken((0, 0), NOW), OrderConfirming(), OrderConfirmed())
    append.order("order~o", OrderUndoing("cancelled", None, None), OrderUndone())
    events = mapped(journal, "order~o")
    assert kinds(events) == [("order.confirmed", 4), ("order.cancelled", 6)]
    assert events[1].data["reason"] == "cancelled"


def test_an_order_that_failed_took_nothing_and_sends_nothing() -> None:
    journal = InMemoryJournal()
    Appender(journal).order(
        "order~o", order_placed(600), OrderUndoing("line_refused", 1, "insufficient_capacity"), OrderUndone()
    )
    assert mapped(journal, "order~o") == []


def test_the_fold_saved_with_a_cursor_goes_on_where_it_left_off() -> None:
    journal = InMemoryJournal()
    append = Appender(journal)
    append.pool("p", PoolConfigured(1, "z", None, None), CapacityReserved("r", 1, "q"))
    mapper, fold = EventMapper(), new_fold("p")
    for stored in journal.read("p"):
        mapper.map("p", fold, stored)
    saved: Any = encode_fold(fold)
    append.pool("p", CapacityReleased("r", 1))
    assert kinds(mapped(journal, "p", from_seq_nr=3, state=saved)) == [("pool.back_on_sale", 3)]


def test_the_body_is_compact_json_with_sorted_keys() -> None:
    event = WebhookEvent("p/3/0", "pool.sold_out", "p", 3, NOW, {"remaining": 0, "pool_id": "p"})
    assert event.body() == (
        b'{"data":{"pool_id":"p","remaining":0},"id":"p/3/0","occurred_at":"2026-12-01T08:00:00+00:00",'
        b'"type":"pool.sold_out"}'
    )


def test_a_schedule_s_events_make_no_webhook_events_of_their_own() -> None:
    from capacity_service.adapters.codec import ScheduleCodec
    from capacity_service.adapters.journal import NewEvent
    from capacity_service.domain.ids import schedule_stream_id
    from capacity_service.domain.schedule import (
        BatchTally,
        ScheduleApplied,
        ScheduleApplying,
        SchedulePoolsApplied,
        Template,
        ZoneTemplate,
    )

    journal = InMemoryJournal()
    stream = schedule_stream_id("december")
    template = Template((ZoneTemplate("north", 0),), ("08:00",), 60, NOW.date(), NOW.date())
    codec = ScheduleCodec()
    encoded = [
        codec.encode_event(event)
        for event in (
            ScheduleApplying(1, template, 1, NOW),
            SchedulePoolsApplied(1, BatchTally(0, 1, 1, 0, 0, 0, (), 3)),
            ScheduleApplied(1, 0, (), NOW),
        )
    ]
    stored = [NewEvent(e.event_type, e.schema_version, e.payload) for e in encoded]
    journal.append(stream, 0, journal.claim_epoch(stream), stored)
    assert mapped(journal, stream) == []
