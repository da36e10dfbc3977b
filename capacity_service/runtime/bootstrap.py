"""The composition root: where settings become journals, warehouse sinks, pool hosts, routers and the
Python API's operations. Actors and entry points call it; nothing else constructs an adapter, a host or a
router (``tests/unit/test_architecture.py`` checks).

What runs on Ray is imported inside the functions that make it: the CLI's offline commands and the demo
open a journal here without loading Ray."""

from __future__ import annotations

from typing import TYPE_CHECKING

from capacity_service.adapters.journal import Journal, open_journal
from capacity_service.adapters.warehouse import WarehouseSink, open_sink, stream_of
from capacity_service.adapters.webhooks import WebhookStore, open_webhook_store
from capacity_service.application.host_first import HostFirstConfigurer, HostFirstSender
from capacity_service.application.metrics import NO_METRICS, NO_WEBHOOK_METRICS, HostMetrics, WebhookMetrics
from capacity_service.application.operations import PoolGateway
from capacity_service.application.order_driver import OrderDriver
from capacity_service.application.order_host import OrderHost
from capacity_service.application.pool_host import PoolHost
from capacity_service.application.publishing import EventPublisher, EventPublishers
from capacity_service.application.schedule_host import ScheduleHost
from capacity_service.application.warehouse_stream import WarehouseStream
from capacity_service.application.webhook_delivery import JOURNAL_PAGE_EVENTS, WebhookAdmin, WebhookDeliveries
from capacity_service.settings import CassandraJournalSettings, ServiceSettings, SqlJournalSettings

if TYPE_CHECKING:
    from capacity_service.runtime.router import PoolRouter


def journal(settings: SqlJournalSettings | CassandraJournalSettings) -> Journal:
    """The journal the settings name (its driver imported on demand)."""
    return open_journal(settings)


def warehouse_sink(settings: ServiceSettings, owner: str) -> WarehouseSink:
    return open_sink(settings.warehouse.sink, owner=owner)


def pool_host(settings: ServiceSettings, opened_journal: Journal, metrics: HostMetrics | None = None) -> PoolHost:
    """A host of pools that publishes to the cache replicas and, when on, to the warehouse streams and the
    webhooks actor (which streams moved)."""
    from capacity_service.runtime.fanout import CacheFanout
    from capacity_service.runtime.warehouse_feed import WarehouseFeed
    from capacity_service.runtime.webhook_hints import WebhookHints

    events: list[EventPublisher] = []
    if settings.warehouse.enabled:
        events.append(WarehouseFeed(settings))
    if settings.webhooks.enabled:
        events.append(WebhookHints(settings))
    return PoolHost(
        opened_journal,
        settings.write_side,
        settings.snapshots,
        views=CacheFanout(settings),
        events=EventPublishers(*events) if events else None,
        metrics=metrics or NO_METRICS,
    )


def order_host(
    settings: ServiceSettings, pools: PoolHost, opened_journal: Journal, metrics: HostMetrics | None = None
) -> OrderHost:
    """The orders of a process hosting ``pools``: their driver sends commands to the pools running there
    directly, to the others through a router."""
    hosting = settings.hosting
    sender = HostFirstSender(pools, router(settings))
    # A reserve is never decided after its deadline; answers in flight and clocks get a margin beyond it.
    driver = OrderDriver(sender, late_s=hosting.answer_grace_s + 1.0)
    return OrderHost(
        opened_journal, pools.shared, driver, hosting.answer_grace_s, metrics or NO_METRICS, events=pools.events
    )


def schedule_host(settings: ServiceSettings, pools: PoolHost, opened_journal: Journal) -> ScheduleHost:
    """The schedules of a process hosting ``pools``: their driver configures the pools running there in one
    call to ``pools``, the others through a router."""
    configurer = HostFirstConfigurer(pools, router(settings))
    return ScheduleHost(opened_journal, pools.shared, configurer, settings.hosting.call_timeout_s)


def warehouse_stream(settings: ServiceSettings, shard: int) -> WarehouseStream:
    """The stream that delivers the events of the pools ``shard`` owns to the warehouse."""
    warehouse = settings.warehouse
    return WarehouseStream(
        warehouse,
        open_sink=lambda: warehouse_sink(settings, owner=f"stream-{shard}"),
        open_journal=lambda: journal(settings.journal),
        owns=lambda pool_id: stream_of(pool_id, warehouse.streams) == shard,
    )


def webhook_store(settings: SqlJournalSettings | CassandraJournalSettings) -> WebhookStore:
    """Where webhook registrations and cursors live: the journal's own database."""
    return open_webhook_store(settings)


def webhook_deliveries(settings: ServiceSettings, metrics: WebhookMetrics | None = None) -> WebhookDeliveries:
    """Every webhook's registration and delivery (one per service: the webhooks actor's), reading the journal
    in small pages (``JOURNAL_PAGE_EVENTS``)."""
    from capacity_service.adapters.webhooks.http import AiohttpTransport

    return WebhookDeliveries(
        settings.webhooks,
        open_store=lambda: webhook_store(settings.journal),
        open_journal=lambda: journal(webhook_journal_settings(settings.journal)),
        transport=AiohttpTransport(),
        metrics=metrics or NO_WEBHOOK_METRICS,
    )


def webhook_journal_settings(
    settings: SqlJournalSettings | CassandraJournalSettings,
) -> SqlJournalSettings | CassandraJournalSettings:
    """The journal's settings for the webhooks' reads: the same journal, fetched in pages of
    ``JOURNAL_PAGE_EVENTS``."""
    return settings.model_copy(update={"fetch_size": JOURNAL_PAGE_EVENTS})


def webhook_admin(settings: ServiceSettings) -> WebhookAdmin:
    """The operator's calls on webhooks, made on the service's webhooks actor."""
    from capacity_service.runtime.webhook_actor import RayWebhookAdmin

    return RayWebhookAdmin(settings)


def router(settings: ServiceSettings) -> PoolRouter:
    from capacity_service.runtime.router import PoolRouter

    return PoolRouter(settings, journals=lambda: journal(settings.journal))


def python_api(
    settings: ServiceSettings | None, namespace: str, ray_address: str | None
) -> tuple[ServiceSettings, PoolGateway]:
    """What a Python client routes with: the running service's settings in ``namespace`` (or ``settings``,
    checked against them, starting the service if none runs), and a router."""
    from capacity_service.runtime import _ray, service

    namespace = settings.hosting.namespace if settings is not None else namespace
    _ray.ensure_initialized(ray_address, namespace)
    attached = service.attach(settings, namespace)
    return attached, router(attached)
