"""The public surface of ``capacity_service`` is pinned: adding to it or taking from it is a decision,
made here on purpose, not a side effect of a refactoring."""

from __future__ import annotations

import subprocess
import sys

import capacity_service

PUBLIC = {
    # the clients, their results and errors
    "AsyncCapacityClient",
    "CapacityClient",
    "Pool",
    "ReleaseReceipt",
    "ReservationInfo",
    "ReservationReceipt",
    "Order",
    "OrderLineInfo",
    "OrderLineRequest",
    "WaitlistPlace",
    "CapacityError",
    "OrderNotFound",
    "OrderLineRefused",
    "OrderIdConflict",
    "OrderFailed",
    "OrderNotHeld",
    "HoldExpired",
    "ReservationReleased",
    "ReservationActive",
    "WaitlistEntryNotFound",
    "WaitlistFull",
    "InsufficientCapacity",
    "InvalidRequest",
    "NoCapacityInWindow",
    "OutcomeUnknown",
    "Overloaded",
    "Paused",
    "PoolNotFound",
    "PoolRetired",
    "RequestIdConflict",
    "ReservationNotFound",
    "SettingsMismatch",
    "Unavailable",
    # schedules (v1.2): the template, the schedule and its refusals, and the error of their calls
    "Schedule",
    "ScheduleRefusal",
    "ScheduleTemplate",
    "ScheduleZone",
    "ScheduleNotFound",
    # webhooks (v1.2): the models and errors of their calls
    "Webhook",
    "WebhookStatus",
    "WebhookNotFound",
    "TooManyWebhooks",
    # the settings
    "ServiceSettings",
    "service_settings",
    "SqlJournalSettings",
    "CassandraJournalSettings",
    "SnapshotSettings",
    "WriteSideSettings",
    "HostingSettings",
    "HttpSettings",
    "ReadSideSettings",
    "WarehouseSettings",
    "ParquetSinkSettings",
    "SqlSinkSettings",
    "RedshiftSinkSettings",
    "WebhookSettings",
}


def test_the_public_surface_is_what_we_decided() -> None:
    assert set(capacity_service.__all__) == PUBLIC
    assert sorted(capacity_service.__all__) == capacity_service.__all__  # one obvious place to look a name up
    for name in capacity_service.__all__:
        assert getattr(capacity_service, name) is not None


def test_every_error_a_client_raises_is_a_capacity_error_except_a_settings_mismatch() -> None:
    errors = [getattr(capacity_service, n) for n in PUBLIC if n.endswith(("Error", "Found", "Capacity"))]
    errors += [
        capacity_service.NoCapacityInWindow,
        capacity_service.OutcomeUnknown,
        capacity_service.Overloaded,
        capacity_service.Unavailable,
    ]
    assert all(issubclass(error, capacity_service.CapacityError) for error in errors)
    assert issubclass(capacity_service.SettingsMismatch, ValueError)


def test_importing_the_package_does_not_import_ray() -> None:
    code = "import sys, capacity_service; print('ray' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "False"
