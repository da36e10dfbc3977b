"""The warehouse's table shape: one row per journal event, with the pool's state right after it; an event
about several holds (``HoldsExpired``) has one row per hold, its parts, in the event's order.

A ``Delivery`` is how far one pool has been delivered, together with the pool's running totals at that
point: everything needed to turn the next journal events into rows without replaying the pool from the
start (a release carries its quantity, so ``reserved`` folds forward from the event alone).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import date, datetime
from typing import NamedTuple

from capacity_service.domain import (
    CapacityHeld,
    CapacityReleased,
    CapacityReserved,
    HoldConfirmed,
    HoldExtended,
    HoldsExpired,
    PersistedEvent,
    PoolConfigured,
    PoolEvent,
    PoolReset,
    WaitlistJoined,
    WaitlistLeft,
    WaitlistOffered,
)
from capacity_service.domain.order import OrderEvent, OrderPlaced
from capacity_service.domain.schedule import ScheduleEvent, SchedulePoolsApplied


class WarehouseRow(NamedTuple):
    """A tuple, so that a batch turns into columns with one ``zip`` (see ``parquet.rows_to_table``)."""

    event_id: str  # "<pool_id>/<seq_nr>", or "<pool_id>/<seq_nr>/<part>" for a part: unique, stable
    pool_id: str
    seq_nr: int
    part: int  # 0 for an event of one row; 1, 2, ... for the parts of an event about several holds
    event_type: str
    event_version: int  # the schema version the row's fields follow (after upcasting)
    # reserved, released, offered or waited-for units; None where an event has none (PoolConfigured)
    quantity: int | None
    reservation_id: str | None
    request_id: str | None  # a waitlist event's: the entry's request id (the entry id is not a column)
    capacity: int  # the pool's state after the event
    reserved: int
    remaining: int
    zone: str
    slot_start: datetime | None
    slot_end: datetime | None
    occurred_at: datetime
    event_date: date  # occurred_at's UTC date: the Parquet partition


@dataclass(frozen=True, slots=True)
class Delivery:
    """A pool delivered up to ``seq_nr``, and its state after that event."""

    pool_id: str
    seq_nr: int = 0
    capacity: int = 0
    reserved: int = 0
    zone: str = ""
    slot_start: datetime | None = None
    slot_end: datetime | None = None

    @staticmethod
    def after(row: WarehouseRow) -> Delivery:
        return Delivery(row.pool_id, row.seq_nr, row.capacity, row.reserved, row.zone, row.slot_start, row.slot_end)


def event_id(pool_id: str, seq_nr: int, part: int = 0) -> str:
    return f"{pool_id}/{seq_nr}" if part == 0 else f"{pool_id}/{seq_nr}/{part}"


def rows_of(persisted: PersistedEvent) -> list[WarehouseRow]:
    """The rows of an event a pool's or an order's writer just made durable (the live path)."""
    if isinstance(persisted.event, OrderEvent):
        return [order_rows(Delivery(persisted.pool_id), persisted.seq_nr, persisted.event, persisted.occurred_at)]
    after = Delivery(
        persisted.pool_id,
        persisted.seq_nr,
        persisted.capacity,
        persisted.reserved,
        persisted.zone,
        persisted.slot_start,
        persisted.slot_end,
    )
    return _rows(after, persisted.event, persisted.occurred_at)


def next_rows(before: Delivery, seq_nr: int, event: PoolEvent, occurred_at: datetime) -> list[WarehouseRow]:
    """The rows of the event after ``before`` (the catch-up path, from the journal): the pool's totals are
    folded forward from the event alone."""
    capacity, reserved, zone = before.capacity, before.reserved, before.zone
    slot_start, slot_end = before.slot_start, before.slot_end
    if isinstance(event, PoolConfigured):
        capacity, zone, slot_start, slot_end = event.capacity, event.zone, event.slot_start, event.slot_end
    elif isinstance(event, PoolReset):
        target = event.state
        capacity, reserved, zone = target.capacity, target.reserved, target.zone
        slot_start, slot_end = target.slot_start, target.slot_end
    elif isinstance(event, CapacityReserved | CapacityHeld | WaitlistOffered):
        reserved += event.quantity
    elif isinstance(event, CapacityReleased):
        reserved -= event.quantity
    elif isinstance(event, HoldsExpired):
        reserved -= sum(event.quantities)
    after = Delivery(before.pool_id, seq_nr, capacity, reserved, zone, slot_start, slot_end)
    return _rows(after, event, occurred_at)


def order_rows(before: Delivery, seq_nr: int, event: OrderEvent, occurred_at: datetime) -> WarehouseRow:
    """The row of an order's event (``pool_id`` holds the order's stream id, ``order~<id>``; an order has no
    pool state: capacity, reserved and remaining are 0, zone empty). ``quantity``: the units an
    ``OrderPlaced`` asks for over all its lines."""
    quantity = sum(line.quantity for line in event.lines) if isinstance(event, OrderPlaced) else None
    after = Delivery(before.pool_id, seq_nr)
    return _row(after, 0, 0, event, quantity, None, None, occurred_at)


def schedule_rows(before: Delivery, seq_nr: int, event: ScheduleEvent, occurred_at: datetime) -> WarehouseRow:
    """The row of a schedule's event (``pool_id`` holds the schedule's stream id, ``schedule~<id>``; no pool
    state, as an order's). ``quantity``: the pools a ``SchedulePoolsApplied`` batch configured."""
    quantity = event.tally.pools if isinstance(event, SchedulePoolsApplied) else None
    return _row(Delivery(before.pool_id, seq_nr), 0, 0, event, quantity, None, None, occurred_at)


def _rows(after: Delivery, event: PoolEvent, occurred_at: datetime) -> list[WarehouseRow]:
    """The rows of ``event``, given the pool's state ``after`` it (one path for live and caught-up rows)."""
    if isinstance(event, HoldsExpired):
        return _expiry_rows(after, event, occurred_at)
    quantity: int | None = None
    reservation_id: str | None = None
    request_id: str | None = None
    if isinstance(event, CapacityReserved | CapacityHeld | WaitlistOffered | WaitlistJoined):
        quantity, reservation_id, request_id = event.quantity, event.reservation_id, event.request_id
    elif isinstance(event, CapacityReleased):
        quantity, reservation_id = event.quantity, event.reservation_id
    elif isinstance(event, HoldConfirmed | HoldExtended):
        reservation_id = event.reservation_id
    elif isinstance(event, WaitlistLeft):
        request_id = event.request_id
    return [_row(after, after.reserved, 0, event, quantity, reservation_id, request_id, occurred_at)]


def _expiry_rows(after: Delivery, event: HoldsExpired, occurred_at: datetime) -> list[WarehouseRow]:
    """One row per expired hold, each with the pool's state after that hold's units came back."""
    parts, reserved = [], after.reserved + sum(event.quantities)
    for part, (reservation_id, quantity) in enumerate(zip(event.reservation_ids, event.quantities, strict=True), 1):
        reserved -= quantity
        parts.append(_row(after, reserved, part, event, quantity, reservation_id, None, occurred_at))
    return parts


def _row(
    after: Delivery,
    reserved: int,
    part: int,
    event: PoolEvent | OrderEvent | ScheduleEvent,
    quantity: int | None,
    reservation_id: str | None,
    request_id: str | None,
    occurred_at: datetime,
) -> WarehouseRow:
    return WarehouseRow(
        event_id=event_id(after.pool_id, after.seq_nr, part),
        pool_id=after.pool_id,
        seq_nr=after.seq_nr,
        part=part,
        event_type=event.TYPE,
        event_version=event.VERSION,
        quantity=quantity,
        reservation_id=reservation_id,
        request_id=request_id,
        capacity=after.capacity,
        reserved=reserved,
        remaining=max(0, after.capacity - reserved),
        zone=after.zone,
        slot_start=after.slot_start,
        slot_end=after.slot_end,
        occurred_at=occurred_at,
        event_date=occurred_at.date(),
    )


# Column names and order of every sink (Parquet schema, SQL tables, Redshift COPY).
COLUMNS: tuple[str, ...] = WarehouseRow._fields

# Column names and order of the cursor tables (SQL, Redshift): the fields of ``Delivery``.
DELIVERY_COLUMNS: tuple[str, ...] = tuple(field.name for field in fields(Delivery))
