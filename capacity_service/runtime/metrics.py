"""The service's metrics, as Ray metrics (``_ray.counter`` ...): one class per process kind, created once
per process. Prometheus sees them with Ray's ``ray_`` prefix, e.g. ``ray_capacity_http_requests_total``.
docs/operations.md lists them all."""

from __future__ import annotations

from capacity_service.application.metrics import HostStats
from capacity_service.runtime import _ray

# Seconds: from a fast local append or answer to the 10 s call timeout.
LATENCY_BOUNDARIES = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]


class RayHostMetrics:
    """A pool host's: its journal appends (latency, failures), expired holds, and its gauges."""

    def __init__(self, store: str) -> None:
        self._tags = {"store": store}
        self._append_seconds = _ray.histogram(
            "capacity_journal_append_seconds",
            "Time of one group commit (all pools ready at that moment) to the journal",
            LATENCY_BOUNDARIES,
            ("store",),
        )
        self._appends = _ray.counter(
            "capacity_journal_appends_total", "Pool appends written to the journal", ("store", "outcome")
        )
        self._expired = _ray.counter("capacity_holds_expired_total", "Holds expired by their pool's timer")
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
        self._append_seconds.observe(seconds, tags=self._tags)
        if appends > failures:
            self._appends.inc(appends - failures, tags={**self._tags, "outcome": "ok"})
        if failures:
            self._appends.inc(failures, tags={**self._tags, "outcome": "failed"})

    def holds_expired(self, count: int) -> None:
        self._expired.inc(count)

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

    def __init__(self) -> None:
        self._requests = _ray.counter("capacity_http_requests_total", "HTTP requests answered", ("route", "status"))
        self._seconds = _ray.histogram(
            "capacity_http_request_seconds", "Time to answer an HTTP request", LATENCY_BOUNDARIES, ("route",)
        )

    def answered(self, route: str, status: int, seconds: float) -> None:
        self._requests.inc(1, tags={"route": route, "status": str(status)})
        self._seconds.observe(seconds, tags={"route": route})


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


# How often the gauges of a process are refreshed.
GAUGE_INTERVAL_S = 5.0
