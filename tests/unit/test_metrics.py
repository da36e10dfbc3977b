"""What the service reports for monitoring moves as traffic, failures and expiries happen: the HTTP edge's
requests (fast lane included) by route template and status, a host's appends, failures, expiries and gauges.
(The Ray metrics behind them are scraped end to end in tests/e2e/test_start_command.py.)"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from fastapi.testclient import TestClient

from capacity_service.adapters.journal.memory import InMemoryJournal
from capacity_service.application.host_first import HostFirstSender
from capacity_service.application.order_driver import OrderDriver
from capacity_service.application.order_host import OrderHost
from capacity_service.application.pool_host import PoolHost
from capacity_service.domain import ConfigurePool, JoinWaitlist, Reserve, new_reservation_id, new_waitlist_entry_id
from capacity_service.domain.order import Attempt, OrderLine, PlaceOrder
from capacity_service.entrypoints.http.app import create_app
from capacity_service.entrypoints.http.routes import route_of
from capacity_service.runtime.metrics import FLUSH_INTERVAL_S, BatchedCounts, RayHostMetrics, RayRequestMetrics
from capacity_service.settings import HttpSettings, WriteSideSettings
from tests.support.faulty_journal import FaultyJournal
from tests.support.in_process import InProcessBackend, InProcessRouter


class Recorder:
    def __init__(self) -> None:
        self.answers: list[tuple[str, int, float]] = []
        self.appends: list[tuple[float, int, int]] = []
        self.expired = 0
        self.offered = 0
        self.orders: list[str] = []

    def answered(self, route: str, status: int, seconds: float) -> None:
        self.answers.append((route, status, seconds))

    def appended(self, seconds: float, appends: int, failures: int) -> None:
        self.appends.append((seconds, appends, failures))

    def holds_expired(self, count: int) -> None:
        self.expired += count

    def waitlist_offered(self, count: int) -> None:
        self.offered += count

    def order_rested(self, status: str) -> None:
        self.orders.append(status)


def test_every_answer_is_counted_by_route_template_and_status() -> None:
    recorder = Recorder()
    with TestClient(create_app(InProcessBackend(), HttpSettings(), recorder)) as http:
        http.put("/v1/pools/p1", json={"capacity": 1, "zone": "north"})
        taken = http.post("/v1/reservations", json={"pool_id": "p1"}).json()  # the fast lane
        http.post("/v1/reservations", json={"pool_id": "p1"})  # none left: 409
        http.get(f"/v1/reservations/{taken['reservation_id']}")
        http.get("/v1/pools/ghost")
        http.get("/wp-admin/setup.php")
        http.post("/v1/admin/pools/p1/check")
    routes = [(route, status) for route, status, _ in recorder.answers]
    assert routes == [
        ("/v1/pools/{pool_id}", 201),
        ("/v1/reservations", 201),
        ("/v1/reservations", 409),
        ("/v1/reservations/{reservation_id}", 200),
        ("/v1/pools/{pool_id}", 404),
        ("other", 404),
        ("/v1/admin/pools/{pool_id}/check", 200),
    ]
    assert all(seconds > 0 for _, _, seconds in recorder.answers)


def test_route_templates_are_a_bounded_set_whatever_the_path() -> None:
    assert route_of("/v1/reservations/abc/confirm") == "/v1/reservations/{reservation_id}/confirm"
    assert route_of("/v1/admin/pools/x/drop-table") == "other"
    assert route_of("/v1/admin/pools/x/reset") == "/v1/admin/pools/{pool_id}/reset"
    assert route_of("/v1/pools/a/b") == "other"
    assert route_of("/healthz") == "/healthz"


def test_a_hosts_appends_failures_expiries_and_gauges() -> None:
    journal, recorder = FaultyJournal(), Recorder()
    journal.reads_fail_too = False

    async def scenario() -> None:
        host = PoolHost(journal, WriteSideSettings(breaker_failure_threshold=1), metrics=recorder)
        await host.execute("p", ConfigurePool(10, "z"))
        rid = new_reservation_id("p")
        await host.execute("p", Reserve(2, "held", rid, hold_seconds=1))
        stats = host.stats()
        assert (stats.pools_hosted, stats.holds_pending, stats.commands_queued, stats.breaker_open) == (1, 1, 0, False)
        assert [(appends, failures) for _, appends, failures in recorder.appends] == [(1, 0), (1, 0)]
        for _ in range(40):  # the pool's own timer expires the hold about a second later
            if recorder.expired:
                break
            await asyncio.sleep(0.05)
        assert recorder.expired == 1 and host.stats().holds_pending == 0
        journal.failing = True
        answer: Any = await asyncio.gather(
            host.execute("p", Reserve(1, "r", new_reservation_id("p"))), return_exceptions=True
        )
        assert isinstance(answer[0], Exception)
        assert recorder.appends[-1][1:] == (1, 1)  # the failed append is counted as failed
        assert host.stats().breaker_open

    asyncio.run(scenario())


def test_the_dashboard_plots_only_series_the_service_exports() -> None:
    """docs/grafana/capacity_service.json names each series; a renamed metric would leave a panel empty."""
    import json
    import re
    from pathlib import Path

    source = Path("capacity_service/runtime/metrics.py").read_text()
    exported = set(re.findall(r'"(capacity_\w+)"', source)) | set(re.findall(r'f"capacity_\{name\}"', source))
    exported |= {f"capacity_{name}" for name in re.findall(r'\("(\w+)", "', source)}
    dashboard = json.loads(Path("docs/grafana/capacity_service.json").read_text())
    plotted = {
        re.sub(r"_(bucket|count|sum)_total$", "", name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"ray_(capacity_\w+)", target["expr"])
    }
    assert len(plotted) >= 10
    assert plotted <= exported, plotted - exported


class FakeRayCounter:
    """What ``ray.util.metrics.Counter`` is given: its increments with their tags."""

    made: ClassVar[dict[str, FakeRayCounter]] = {}

    def __init__(self, name: str, description: str, tag_keys: tuple[str, ...]) -> None:
        self.tag_keys = tag_keys
        self.incs: list[tuple[float, dict[str, str]]] = []
        FakeRayCounter.made[name] = self

    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
        assert value > 0, "Ray's counters refuse increments that are not positive"
        assert set(tags or {}) == set(self.tag_keys)
        self.incs.append((value, dict(tags or {})))

    def total(self, **tags: str) -> float:
        return sum(value for value, seen in self.incs if all(seen.get(k) == v for k, v in tags.items()))


def test_answers_reach_ray_once_per_flush_as_a_histogram_prometheus_reads() -> None:
    FakeRayCounter.made.clear()

    async def answer_then_wait() -> list[int]:
        metrics = RayRequestMetrics(BatchedCounts(FakeRayCounter))
        for seconds in (0.0004, 0.003, 0.003, 0.07, 30.0):
            metrics.answered("/v1/reservations", 201, seconds)
        metrics.answered("/v1/reservations", 429, 0.0001)
        before_flush = [len(counter.incs) for counter in FakeRayCounter.made.values()]
        await asyncio.sleep(FLUSH_INTERVAL_S + 0.2)
        return before_flush

    assert asyncio.run(answer_then_wait()) == [0, 0, 0, 0], "nothing goes to Ray per answer"
    made = FakeRayCounter.made
    requests = made["capacity_http_requests_total"]
    assert requests.total(status="201") == 5 and requests.total(status="429") == 1
    assert len(requests.incs) == 2, "one increment per series per flush"
    buckets = made["capacity_http_request_seconds_bucket"]
    cumulative = {tags["le"]: value for value, tags in buckets.incs}
    assert cumulative["0.001"] == 2  # 0.4 ms and the 429's 0.1 ms
    assert cumulative["0.005"] == 4
    assert cumulative["0.1"] == 5
    assert cumulative["10.0"] == 5 and cumulative["+Inf"] == 6, "30 s is counted beyond the last boundary"
    assert made["capacity_http_request_seconds_count"].total(route="/v1/reservations") == 6
    assert abs(made["capacity_http_request_seconds_sum"].total() - 30.0765) < 1e-9


def test_counts_outside_an_event_loop_go_to_ray_at_once() -> None:
    FakeRayCounter.made.clear()
    metrics = RayHostMetrics("sqlite", BatchedCounts(FakeRayCounter))
    metrics.appended(0.002, appends=3, failures=1)
    metrics.holds_expired(7)
    metrics.waitlist_offered(3)
    made = FakeRayCounter.made
    assert made["capacity_journal_appends_total"].total(outcome="ok") == 2
    assert made["capacity_journal_appends_total"].total(outcome="failed") == 1
    assert made["capacity_holds_expired_total"].total() == 7
    assert made["capacity_waitlist_offered_total"].total() == 3
    assert made["capacity_journal_append_seconds_count"].total(store="sqlite") == 1


def test_orders_are_counted_when_they_come_to_rest() -> None:
    recorder = Recorder()

    async def scenario() -> None:
        journal = InMemoryJournal()
        pools = PoolHost(journal)
        driver = OrderDriver(HostFirstSender(pools, InProcessRouter(pools, journal)), late_s=0.1)
        orders = OrderHost(journal, pools.shared, driver, answer_grace_s=0.5, metrics=recorder)
        await pools.execute("p", ConfigurePool(1, "z"))
        for order_id in ("o1", "o2"):
            lines = (OrderLine(1, (Attempt("p", new_reservation_id("p"), f"order:{order_id}:0:0"),)),)
            deadline = datetime.now(UTC) + timedelta(seconds=5)
            await orders.execute(order_id, PlaceOrder(lines, None, deadline, order_id), time.time() + 5)

    asyncio.run(scenario())
    assert recorder.orders == ["confirmed", "failed"]  # the second found the pool full


def test_waitlist_offers_are_counted() -> None:
    recorder = Recorder()

    async def scenario() -> None:
        pools = PoolHost(InMemoryJournal(), metrics=recorder)
        await pools.execute("p", ConfigurePool(0, "z"))
        for request_id in ("a", "b", "c"):
            await pools.execute("p", JoinWaitlist(new_waitlist_entry_id(), request_id, 1, 60, new_reservation_id("p")))
        await pools.execute("p", ConfigurePool(2, "z"))

    asyncio.run(scenario())
    assert recorder.offered == 2
