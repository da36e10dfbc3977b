"""The capacity pool domain. Imports nothing from Ray, Cassandra or SQLAlchemy."""

from capacity_service.domain.commands import ConfigurePool, PoolCommand, Release, Reserve
from capacity_service.domain.events import CapacityReleased, CapacityReserved, PoolConfigured, PoolEvent
from capacity_service.domain.ids import (
    InvalidId,
    check_pool_id,
    is_valid_pool_id,
    new_reservation_id,
    pool_of_reservation,
)
from capacity_service.domain.persisted import PersistedEvent
from capacity_service.domain.pool import (
    Decision,
    InsufficientCapacity,
    InvalidCommand,
    PoolNotFound,
    PoolState,
    PoolView,
    Rejection,
    RequestIdConflict,
    Reservation,
    ReservationNotFound,
    ReservationStatus,
    apply,
    apply_all,
    decide,
    view_of,
)

__all__ = [
    "CapacityReleased",
    "CapacityReserved",
    "ConfigurePool",
    "Decision",
    "InsufficientCapacity",
    "InvalidCommand",
    "InvalidId",
    "PersistedEvent",
    "PoolCommand",
    "PoolConfigured",
    "PoolEvent",
    "PoolNotFound",
    "PoolState",
    "PoolView",
    "Rejection",
    "Release",
    "RequestIdConflict",
    "Reservation",
    "ReservationNotFound",
    "ReservationStatus",
    "Reserve",
    "apply",
    "apply_all",
    "check_pool_id",
    "decide",
    "is_valid_pool_id",
    "new_reservation_id",
    "pool_of_reservation",
    "view_of",
]
