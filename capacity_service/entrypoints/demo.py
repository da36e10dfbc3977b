"""A walk through the Python API on the embedded defaults: a pool that survives restarts.

Each run opens the SQLite journal, (re)starts the pool's writer, which claims a new epoch and
recovers from snapshot + events, takes and gives back capacity, and shows that a second incarnation
recovers the same state while the first one is fenced off.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from capacity_service.adapters.journal import WriterFenced
from capacity_service.application.pool_writer import PoolWriter
from capacity_service.domain import ConfigurePool, Release, ReservationStatus, Reserve, new_reservation_id
from capacity_service.runtime import bootstrap
from capacity_service.settings import SnapshotSettings, SqlJournalSettings

DEMO_POOL = "demo.north:2026-12-01T08"


def run_demo(settings: SqlJournalSettings, say: Callable[[str], None] = print) -> PoolWriter:
    with bootstrap.journal(settings) as journal:
        snapshots = SnapshotSettings(every_n_events=5, keep=2)
        writer = PoolWriter(DEMO_POOL, journal, snapshots=snapshots)
        writer.start()
        view = writer.view()
        if view.exists:
            say(
                f"recovered {DEMO_POOL} from {settings.url}: {view.reserved}/{view.capacity} reserved, "
                f"{view.version} events in the journal"
            )
        else:
            writer.execute([ConfigurePool(capacity=10, zone="north")])
            say(f"created pool {DEMO_POOL} with capacity 10 in {settings.url}")

        request_id = f"order-{uuid.uuid4().hex[:8]}"
        command = Reserve(2, request_id, new_reservation_id(DEMO_POOL))
        outcome = writer.execute([command])[0]
        if outcome.rejection is not None:
            oldest = next(r for r in writer.state.reservations.values() if r.status is ReservationStatus.ACTIVE)
            writer.execute([Release(oldest.reservation_id)])
            say(f"pool full ({outcome.rejection}); released {oldest.reservation_id} and retried")
            outcome = writer.execute([command])[0]
        assert outcome.reservation is not None
        say(
            f"reserved 2 units as {outcome.reservation.reservation_id} (request {request_id}); "
            f"remaining {outcome.view.remaining}"
        )

        retry = writer.execute([Reserve(2, request_id, new_reservation_id(DEMO_POOL))])[0]
        say(
            f"retried request {request_id}: same reservation "
            f"{retry.reservation == outcome.reservation}, remaining still {retry.view.remaining}"
        )
        writer.snapshot_if_due()

        successor = PoolWriter(DEMO_POOL, journal, snapshots=snapshots)
        successor.start()
        say(f"a new incarnation (epoch {successor.epoch}) recovered the same state: {successor.state == writer.state}")
        try:
            writer.execute([Reserve(1, "zombie", new_reservation_id(DEMO_POOL))])
        except WriterFenced:
            say(f"the old incarnation (epoch {writer.epoch}) is fenced: its write was rejected")
        say("run this again: the pool comes back from the journal with everything above in it")
        return successor
