"""The warehouse's table shape: one row per journal event, with the pool's state right after it.

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
    HoldExpired,
    PersistedEvent,
    PoolConfigured,
    PoolEvent,
    PoolReset,
)


class WarehouseRow(NamedTuple):
    """A tuple, so that a batch turns into columns with one ``zip`` (see ``parquet.rows_to_table``)."""

    event_id: str  # "<pool_id>/<seq_nr>": unique, stable across replays
    pool_id: str
    seq_nr: int
    event_type: str
    event_version: int  # the schema version the row's fields follow (after upcasting)
    quantity: int | None  # reserved or released units; None for PoolConfigured
    reservation_id: str | None
    request_id: str | None
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


def event_id(pool_id: str, seq_nr: int) -> str:
    return f"{pool_id}/{seq_nr}"


def row_of(persisted: PersistedEvent) -> WarehouseRow:
    """The row of an event the pool writer just made durable (the live path)."""
    event = persisted.event
    return _row(
        persisted.pool_id,
        persisted.seq_nr,
        event,
        persisted.capacity,
        persisted.reserved,
        persisted.zone,
        persisted.slot_start,
        persisted.slot_end,
        persisted.occurred_at,
    )


def next_row(before: Delivery, seq_nr: int, event: PoolEvent, occurred_at: datetime) -> WarehouseRow:
    """The row of the event after ``before`` (the catch-up path, from the journal)."""
    capacity, reserved, zone = before.capacity, before.reserved, before.zone
    slot_start, slot_end = before.slot_start, before.slot_end
    if isinstance(event, PoolConfigured):
        capacity, zone, slot_start, slot_end = event.capacity, event.zone, event.slot_start, event.slot_end
    elif isinstance(event, PoolReset):
        target = event.state
        capacity, reserved, zone = target.capacity, target.reserved, target.zone
        slot_start, slot_end = target.slot_start, target.slot_end
    elif isinstance(event, CapacityReserved | CapacityHeld):
        reserved += event.quantity
    elif isinstance(event, CapacityReleased | HoldExpired):
        reserved -= event.quantity
    return _row(before.pool_id, seq_nr, event, capacity, reserved, zone, slot_start, slot_end, occurred_at)


def _row(
    pool_id: str,
    seq_nr: int,
    event: PoolEvent,
    capacity: int,
    reserved: int,
    zone: str,
    slot_start: datetime | None,
    slot_end: datetime | None,
    occurred_at: datetime,
) -> WarehouseRow:
    quantity = reservation_id = request_id = None
    if isinstance(event, CapacityReserved | CapacityHeld):
        quantity, reservation_id, request_id = event.quantity, event.reservation_id, event.request_id
    elif isinstance(event, CapacityReleased | HoldExpired):
        quantity, reservation_id = event.quantity, event.reservation_id
    elif isinstance(event, HoldConfirmed):
        reservation_id = event.reservation_id
    return WarehouseRow(
        event_id=event_id(pool_id, seq_nr),
        pool_id=pool_id,
        seq_nr=seq_nr,
        event_type=event.TYPE,
        event_version=event.VERSION,
        quantity=quantity,
        reservation_id=reservation_id,
        request_id=request_id,
        capacity=capacity,
        reserved=reserved,
        remaining=max(0, capacity - reserved),
        zone=zone,
        slot_start=slot_start,
        slot_end=slot_end,
        occurred_at=occurred_at,
        event_date=occurred_at.date(),
    )


# Column names and order of every sink (Parquet schema, SQL tables, Redshift COPY).
COLUMNS: tuple[str, ...] = WarehouseRow._fields

# Column names and order of the cursor tables (SQL, Redshift): the fields of ``Delivery``.
DELIVERY_COLUMNS: tuple[str, ...] = tuple(field.name for field in fields(Delivery))
