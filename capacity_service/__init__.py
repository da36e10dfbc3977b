"""capacity_service: an event-sourced capacity reservation service on Ray.

The public surface: the clients, their results and errors, and the settings. Everything else is an
implementation module (``capacity_service.application.pool_host``, ``capacity_service.adapters.journal``,
...) that may change.
"""

from typing import TYPE_CHECKING, Any

from capacity_service.errors import (
    CapacityError,
    HoldExpired,
    InsufficientCapacity,
    InvalidRequest,
    NoCapacityInWindow,
    OrderFailed,
    OrderIdConflict,
    OrderLineRefused,
    OrderNotFound,
    OrderNotHeld,
    OutcomeUnknown,
    Overloaded,
    Paused,
    PoolNotFound,
    PoolRetired,
    RequestIdConflict,
    ReservationActive,
    ReservationNotFound,
    ReservationReleased,
    ScheduleNotFound,
    SettingsMismatch,
    TooManyWebhooks,
    Unavailable,
    WaitlistEntryNotFound,
    WaitlistFull,
    WebhookNotFound,
)
from capacity_service.models import (
    Order,
    OrderLineInfo,
    OrderLineRequest,
    Pool,
    ReleaseReceipt,
    ReservationInfo,
    ReservationReceipt,
    Schedule,
    ScheduleRefusal,
    ScheduleTemplate,
    ScheduleZone,
    WaitlistPlace,
    Webhook,
    WebhookStatus,
)
from capacity_service.settings import (
    CassandraJournalSettings,
    HostingSettings,
    HttpSettings,
    ParquetSinkSettings,
    ReadSideSettings,
    RedshiftSinkSettings,
    ServiceSettings,
    SnapshotSettings,
    SqlJournalSettings,
    SqlSinkSettings,
    WarehouseSettings,
    WebhookSettings,
    WriteSideSettings,
    service_settings,
)

if TYPE_CHECKING:
    from capacity_service.client import AsyncCapacityClient, CapacityClient


def __getattr__(name: str) -> Any:
    # The clients pull in Ray; importing the settings or the errors should not.
    if name in ("CapacityClient", "AsyncCapacityClient"):
        from capacity_service import client

        return getattr(client, name)
    raise AttributeError(f"module 'capacity_service' has no attribute {name!r}")


__all__ = [
    "AsyncCapacityClient",
    "CapacityClient",
    "CapacityError",
    "CassandraJournalSettings",
    "HoldExpired",
    "HostingSettings",
    "HttpSettings",
    "InsufficientCapacity",
    "InvalidRequest",
    "NoCapacityInWindow",
    "Order",
    "OrderFailed",
    "OrderIdConflict",
    "OrderLineInfo",
    "OrderLineRefused",
    "OrderLineRequest",
    "OrderNotFound",
    "OrderNotHeld",
    "OutcomeUnknown",
    "Overloaded",
    "ParquetSinkSettings",
    "Paused",
    "Pool",
    "PoolNotFound",
    "PoolRetired",
    "ReadSideSettings",
    "RedshiftSinkSettings",
    "ReleaseReceipt",
    "RequestIdConflict",
    "ReservationActive",
    "ReservationInfo",
    "ReservationNotFound",
    "ReservationReceipt",
    "ReservationReleased",
    "Schedule",
    "ScheduleNotFound",
    "ScheduleRefusal",
    "ScheduleTemplate",
    "ScheduleZone",
    "ServiceSettings",
    "SettingsMismatch",
    "SnapshotSettings",
    "SqlJournalSettings",
    "SqlSinkSettings",
    "TooManyWebhooks",
    "Unavailable",
    "WaitlistEntryNotFound",
    "WaitlistFull",
    "WaitlistPlace",
    "WarehouseSettings",
    "Webhook",
    "WebhookNotFound",
    "WebhookSettings",
    "WebhookStatus",
    "WriteSideSettings",
    "service_settings",
]
