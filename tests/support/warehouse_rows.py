"""Warehouse rows for tests: a pool's plausible history, folded exactly as the catch-up path does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from capacity_service.adapters.warehouse.rows import Delivery, WarehouseRow, next_rows
from capacity_service.domain import CapacityReleased, CapacityReserved, PoolConfigured, PoolEvent, WaitlistOffered

T0 = datetime(2026, 12, 1, 23, 59, 59, tzinfo=UTC)  # histories cross midnight: two date partitions


def history(pool_id: str, n: int, start: datetime = T0) -> list[WarehouseRow]:
    """``n`` rows of one pool: configured, then reserves and releases, every fifth a waitlist's offer taking
    units as a reserve does (seq_nr 1..n)."""
    rows: list[WarehouseRow] = []
    before = Delivery(pool_id)
    for seq_nr in range(1, n + 1):
        event: PoolEvent
        if seq_nr == 1:
            event = PoolConfigured(100, "north", start, start + timedelta(hours=2))
        elif seq_nr % 3 == 0:
            event = CapacityReleased(f"r-{seq_nr - 1}", 2)
        elif seq_nr % 5 == 0:
            expires_at = start + timedelta(minutes=10)
            event = WaitlistOffered(f"e-{seq_nr}", f"w-{seq_nr}", f"r-{seq_nr}", 2, expires_at)
        else:
            event = CapacityReserved(f"r-{seq_nr}", 2, f"req-{seq_nr}")
        [row] = next_rows(before, seq_nr, event, start + timedelta(milliseconds=300 * seq_nr))
        rows.append(row)
        before = Delivery.after(row)
    return rows
