"""capacity_service: an event-sourced capacity reservation service on Ray."""

from typing import TYPE_CHECKING, Any

from capacity_service.errors import (
    CapacityError,
    InsufficientCapacity,
    InvalidRequest,
    OutcomeUnknown,
    Overloaded,
    PoolNotFound,
    RequestIdConflict,
    ReservationNotFound,
    SettingsMismatch,
    Unavailable,
)
from capacity_service.journal import open_journal
from capacity_service.models import Pool, ReleaseReceipt, ReservationInfo, ReservationReceipt
from capacity_service.pool_writer import CommandOutcome, PoolWriter
from capacity_service.settings import (
    CassandraJournalSettings,
    HostingSettings,
    ServiceSettings,
    SnapshotSettings,
    SqlJournalSettings,
    WriteSideSettings,
)

if TYPE_CHECKING:
    from capacity_service.client import AsyncCapacityClient, CapacityClient


def __getattr__(name: str) -> Any:
    # The clients pull in Ray; importing the domain or a journal adapter should not.
    if name in ("CapacityClient", "AsyncCapacityClient"):
        from capacity_service import client

        return getattr(client, name)
    raise AttributeError(f"module 'capacity_service' has no attribute {name!r}")


__all__ = [
    "AsyncCapacityClient",
    "CapacityClient",
    "CapacityError",
    "CassandraJournalSettings",
    "CommandOutcome",
    "HostingSettings",
    "InsufficientCapacity",
    "InvalidRequest",
    "OutcomeUnknown",
    "Overloaded",
    "Pool",
    "PoolNotFound",
    "PoolWriter",
    "ReleaseReceipt",
    "RequestIdConflict",
    "ReservationInfo",
    "ReservationNotFound",
    "ReservationReceipt",
    "ServiceSettings",
    "SettingsMismatch",
    "SnapshotSettings",
    "SqlJournalSettings",
    "Unavailable",
    "WriteSideSettings",
    "open_journal",
]
