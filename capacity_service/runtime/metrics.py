"""The service's metrics, as Ray metrics (``_ray.counter`` ...): one class per process kind, created once
per process. Prometheus sees them with Ray's ``ray_`` prefix, e.g. ``ray_capacity_http_requests_total``.
docs/operations.md lists them all."""

from __future__ import annotations

import asyncio
import bisect
import math
from collections.abc import Callable
from typing import Protocol

from capacity_service.application.metrics import HostStats
from capacity_service.runtime import _ray

# Seconds: from a fast local append or answer to the 10 s call timeout.
LATENCY_BOUNDARIES = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
# How long counts wait in the process before they go to Ray (which exports every ~10 s anyway).
FLUSH_INTERVAL_S = 1.0


class _Counter(Protocol):
    def inc(self, value: float = ..., tags: dict[str, str] = ...) -> None: ...


CounterFactory = Callable[[str, str, tuple[str, ...]], _Counter]


class BatchedCounts:
    """Counters and latency histograms counted in the process and added to Ray's counters at most once per
    ``FLUSH_INTERVAL_S``: one Ray metric record per answer cost the reserve path about 10%
    (docs/performance.md); counting here costs a dict update.

    A histogram is exported as Prometheus reads one: cumulative ``<name>_bucket{le=...}``, ``<name>_sum``
    and ``<name>_count`` series (Ray counters, since a Ray histogram takes one observation per call), so
    ``histogram_quantile`` works on it as on any histogram. Called from one thread: the event loop's.
    Counts of the last second are lost if the process ends before its flush."""

    def __init__(self, counter: CounterFactory = _ray.counter) -> None:
        self._make_counter = counter
        self._counters: dict[str, tuple[_Counter, tuple[str, ...]]] = {}
        self._counts: dict[tuple[str, tuple[str, ...]], float] = {}
        self._histograms: dict[str, tuple[_Counter, _Counter, _Counter, tuple[str, ...]]] = {}
        self._buckets: dict[tuple[str, tuple[str, ...]], list[int]] = {}
        self._sums: dict[tuple[str, tuple[str, ...]], float] = {}
        self._flush: asyncio.TimerHandle | None = None

    def counter(self, name: str, description: str, tag_keys: tuple[str, ...] = ()) -> str:
        self._counters[name] = (self._make_counter(name, description, tag_keys), tag_keys)
        return name

    def histogram(self, name: str, description: str, tag_keys: tuple[str, ...] = ()) -> str:
        self._histograms[name] = (
            self._make_counter(f"{name}_bucket", description, (*tag_keys, "le")),
            self._make_counter(f"{name}_sum", f"{description}: their sum", tag_keys),
            self._make_counter(f"{name}_count", f"{description}: how many", tag_keys),
            tag_keys,
        )
        return name

    def inc(self, name: str, tags: tuple[str, ...], value: float = 1) -> None:
        """Add ``value`` to counter ``name``; ``tags``: its tag values, in the order of its tag keys."""
        key = (name, tags)
        self._counts[key] = self._counts.get(key, 0) + value
        self._flush_soon()

    def observe(self, name: str, tags: tuple[str, ...], seconds: float) -> None:
        key = (name, tags)
        buckets = self._buckets.get(key)
        if buckets is None:
            buckets = self._buckets[key] = [0] * (len(LATENCY_BOUNDARIES) + 1)
        buckets[bisect.bisect_left(LATENCY_BOUNDARIES, seconds)] += 1  # bucket i: up to LATENCY_BOUNDARIES[i]
        self._sums[key] = self._sums.get(key, 0.0) + seconds
        self._flush_soon()

    def _flush_soon(self) -> None:
        if self._flush is None:
            try:
                self._flush = asyncio.get_running_loop().call_later(FLUSH_INTERVAL_S, self.flush)
            except RuntimeError:  # no event loop in this thread: at once
                self.flush()

    def flush(self) -> None:
        """Hand what was counted since the last flush to Ray."""
        self._flush = None
        counts, self._counts = self._counts, {}
        for (name, tags), value in counts.items():
            counter, tag_keys = self._counters[name]
            if value > 0:
                counter.inc(value, tags=dict(zip(tag_keys, tags, strict=True)))
        buckets, self._buckets = self._buckets, {}
        sums, self._sums = self._sums, {}
        for (name, tags), counted in buckets.items():
            bucket, total, count, tag_keys = self._histograms[name]
            labels = dict(zip(tag_keys, tags, strict=True))
            cumulative = 0
            for upper, n in zip([*LATENCY_BOUNDARIES, math.inf], counted, strict=True):
                cumulative += n
                if cumulative:  # Ray's counters take only positive increments
                    bucket.inc(cumulative, tags={**labels, "le": "+Inf" if upper == math.inf else repr(upper)})
            count.inc(cumulative, tags=labels)
            if sums[(name, tags)] > 0:
                total.inc(sums[(name, tags)], tags=labels)


class RayHostMetrics:
    """A pool host's: its journal appends (latency, failures), expired holds, and its gauges."""

    def __init__(self, store: str, counts: BatchedCounts | None = None) -> None:
        self._store = store
        self._counts = counts or BatchedCounts()
        self._append_seconds = self._counts.histogram(
            "capacity_journal_append_seconds",
            "Time of one group commit (all pools ready at that moment) to the journal",
            ("store",),
        )
        self._appends = self._counts.counter(
            "capacity_journal_appends_total", "Pool appends written to the journal", ("store", "outcome")
        )
        self._expired = self._counts.counter("capacity_holds_expired_total", "Holds expired by their pool's timer")
        self._offered = self._counts.counter(
            "capacity_waitlist_offered_total", "Waitlist entries offered a hold when units came free"
        )
        self._orders = self._counts.counter(
            "capacity_orders_total", "Orders come to rest, by status (held, confirmed, failed, cancelled)", ("status",)
        )
        self._gauges = {
            name: _ray.gauge(f"capacity_{name}", description)
            for name, description in (
                ("pools_hosted", "Pools hosted by this process"),
                ("pools_recovering", "Pools being recovered by this process"),
                ("commands_queued", "Commands waiting for their pool's writer"),
                ("holds_pending", "Holds not confirmed, released or expired yet"),
                ("breaker_open", "1 while the journal circuit breaker is open or half-open"),
            )
        }

    def appended(self, seconds: float, appends: int, failures: int) -> None:
        self._counts.observe(self._append_seconds, (self._store,), seconds)
        if appends > failures:
            self._counts.inc(self._appends, (self._store, "ok"), appends - failures)
        if failures:
            self._counts.inc(self._appends, (self._store, "failed"), failures)

    def holds_expired(self, count: int) -> None:
        self._counts.inc(self._expired, (), count)

    def waitlist_offered(self, count: int) -> None:
        self._counts.inc(self._offered, (), count)

    def order_rested(self, status: str) -> None:
        self._counts.inc(self._orders, (status,), 1)

    def show(self, stats: HostStats) -> None:
        for name, value in (
            ("pools_hosted", stats.pools_hosted),
            ("pools_recovering", stats.pools_recovering),
            ("commands_queued", stats.commands_queued),
            ("holds_pending", stats.holds_pending),
            ("breaker_open", int(stats.breaker_open)),
        ):
            self._gauges[name].set(value)


class RayRequestMetrics:
    """An HTTP replica's: requests by route and status, and their latency by route."""

    def __init__(self, counts: BatchedCounts | None = None) -> None:
        self._counts = counts or BatchedCounts()
        self._requests = self._counts.counter(
            "capacity_http_requests_total", "HTTP requests answered", ("route", "status")
        )
        self._seconds = self._counts.histogram(
            "capacity_http_request_seconds", "Time to answer an HTTP request", ("route",)
        )

    def answered(self, route: str, status: int, seconds: float) -> None:
        self._counts.inc(self._requests, (route, str(status)))
        self._counts.observe(self._seconds, (route,), seconds)


class RayCacheMetrics:
    """An availability cache replica's: how stale it may be (its last full sync with the pools) and its size."""

    def __init__(self) -> None:
        self._sync_age = _ray.gauge(
            "capacity_cache_sync_age_seconds",
            "Seconds since the replica last pulled every live pool (its staleness bound); -1 before the first",
        )
        self._pools = _ray.gauge("capacity_cache_pools", "Pools the replica holds a view of")

    def show(self, sync_age_s: float | None, pools: int) -> None:
        self._sync_age.set(-1.0 if sync_age_s is None else sync_age_s)
        self._pools.set(pools)


class RayWarehouseMetrics:
    """A warehouse stream's: how far behind the journal the warehouse is."""

    def __init__(self) -> None:
        self._behind = _ray.gauge("capacity_warehouse_rows_behind", "Events accepted, not in the warehouse yet")
        self._seconds = _ray.gauge(
            "capacity_warehouse_seconds_behind", "Age of the oldest event accepted and not in the warehouse yet"
        )
        self._lagging = _ray.gauge("capacity_warehouse_pools_lagging", "Pools whose events the catch-up must read")
        self._delivered = _ray.gauge("capacity_warehouse_rows_delivered", "Rows written to the warehouse so far")

    def show(self, rows_behind: int, seconds_behind: float, pools_lagging: int, delivered: int) -> None:
        self._behind.set(rows_behind)
        self._seconds.set(seconds_behind)
        self._lagging.set(pools_lagging)
        self._delivered.set(delivered)


class RayWebhookMetrics:
    """The webhooks actor's: deliveries, retries and how far behind each webhook is (tagged by webhook id,
    whose number ``webhooks.max_webhooks`` bounds)."""

    def __init__(self, counts: BatchedCounts | None = None) -> None:
        self._counts = counts or BatchedCounts()
        self._deliveries = self._counts.counter(
            "capacity_webhook_deliveries_total",
            "Webhook POSTs, by outcome (delivered: a 2xx; failed)",
            ("webhook", "outcome"),
        )
        self._retries = self._counts.counter(
            "capacity_webhook_retries_total", "Webhook POSTs that repeat one that failed", ("webhook",)
        )
        self._lag = self._counts.histogram(
            "capacity_webhook_lag_seconds", "From the journal's event to the receiver's 2xx", ("webhook",)
        )
        self._behind = _ray.gauge(
            "capacity_webhook_events_behind", "Journal events past the webhook's cursors", ("webhook",)
        )
        self._pending = _ray.gauge(
            "capacity_webhook_pending", "Webhook events read from the journal, not acknowledged yet", ("webhook",)
        )
        self._seconds = _ray.gauge(
            "capacity_webhook_seconds_behind", "Age of the oldest webhook event not acknowledged yet", ("webhook",)
        )

    def delivered(self, webhook_id: str, lag_s: float) -> None:
        self._counts.inc(self._deliveries, (webhook_id, "delivered"))
        self._counts.observe(self._lag, (webhook_id,), lag_s)

    def failed(self, webhook_id: str) -> None:
        self._counts.inc(self._deliveries, (webhook_id, "failed"))

    def retried(self, webhook_id: str) -> None:
        self._counts.inc(self._retries, (webhook_id,))

    def show(self, webhook_id: str, events_behind: int, pending: int, seconds_behind: float) -> None:
        tags = {"webhook": webhook_id}
        self._behind.set(events_behind, tags=tags)
        self._pending.set(pending, tags=tags)
        self._seconds.set(seconds_behind, tags=tags)


# How often the gauges of a process are refreshed.
GAUGE_INTERVAL_S = 5.0
