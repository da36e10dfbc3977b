"""A multi-node Ray cluster on this machine (``ray.cluster_utils.Cluster``: a head and N workers, each
node its own raylet and processes, all on 127.0.0.1), and what the failover tests and the failover
benchmark do on it: keep a stream of reserves going, find where a pool lives, freeze or kill a node,
and check the journal afterwards.

The cluster itself is ``capacity_service.runtime.local.local_cluster``.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from capacity_service.adapters.codec import Codec
from capacity_service.adapters.journal import open_journal
from capacity_service.application.order_writer import OrderWriter
from capacity_service.application.recovery import recover_pool
from capacity_service.client import CapacityClient
from capacity_service.domain import PoolState
from capacity_service.domain.order import RESTING, OrderStatus
from capacity_service.errors import CapacityError, OrderFailed, OrderLineRefused
from capacity_service.models import OrderLineRequest
from capacity_service.runtime import _ray
from capacity_service.runtime.actor_api import PoolApi, call
from capacity_service.runtime.local import LocalCluster
from capacity_service.runtime.router import actor_name
from capacity_service.settings import ServiceSettings
from tests.support.history import History, check, events_in


@contextmanager
def frozen(pid: int) -> Iterator[None]:
    """SIGSTOP the process; SIGCONT it afterwards, whatever happens."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def actor_info(settings: ServiceSettings, pool_id: str) -> dict[str, Any]:
    """What the pool's actor reports: its node id, process id, and the writer epoch of each pool it
    has started (``describe``)."""
    handle = _ray.lookup_actor(actor_name(settings, pool_id), settings.hosting.namespace)
    assert handle is not None
    described: dict[str, Any] = asyncio.run(_ray.ask(handle, call(PoolApi.describe), 30))
    return described


def try_actor_info(settings: ServiceSettings, pool_id: str) -> dict[str, Any] | None:
    try:
        return actor_info(settings, pool_id)
    except (AssertionError, _ray.ActorGone):
        return None


def journal_state(settings: ServiceSettings, pool_id: str) -> PoolState:
    with open_journal(settings.journal) as journal:
        return recover_pool(journal, Codec(), pool_id).state


def writer_epochs(settings: ServiceSettings, pool_id: str) -> list[int]:
    """The writer epoch of every event of the pool, in stream order."""
    with open_journal(settings.journal) as journal:
        return [event.writer_epoch for event in journal.read(pool_id)]


@dataclass(frozen=True)
class Failure:
    at: float  # monotonic time the call began
    seconds: float  # how long it took to fail
    kind: str
    message: str


@dataclass
class ReserveStream:
    """Callers reserving one unit at a time, round robin over the pools, each with its own request ids.
    Every call and its answer goes into ``history`` (``tests/support/history.py``), checked against the
    journal at the end; what was acknowledged and attempted is also kept per pool."""

    client: CapacityClient
    pools: list[str]
    callers: int = 4
    acknowledged: dict[str, set[str]] = field(default_factory=dict)
    attempted: dict[str, set[str]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    history: History = field(default_factory=History)
    last_ok: dict[str, float] = field(default_factory=dict)  # pool -> monotonic time of its last answer
    full: set[str] = field(default_factory=set)  # pools that answered "insufficient capacity"
    last_attempt: dict[str, float] = field(default_factory=dict)  # pool -> when its latest call began
    # After ``mark(t)``: pool -> when its first call begun after t was answered (reserved or "full").
    answered_after_mark: dict[str, float] = field(default_factory=dict)
    _mark: float = float("inf")
    _stop: threading.Event = field(default_factory=threading.Event)
    _running: threading.Event = field(default_factory=threading.Event)
    _in_flight: int = 0
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        for pool_id in self.pools:
            self.acknowledged[pool_id] = set()
            self.attempted[pool_id] = set()

    def start(self) -> None:
        self._running.set()
        self._threads = [threading.Thread(target=self._run, args=(c,), daemon=True) for c in range(self.callers)]
        for thread in self._threads:
            thread.start()

    def pause(self) -> None:
        """No new calls, and return once the calls under way have been answered."""
        self._running.clear()
        wait_until(lambda: self._in_flight == 0, 120, 0.02)

    def resume(self) -> None:
        self._running.set()

    def stop(self) -> None:
        """Stop the callers, then repeat each call whose outcome is unknown until its pool decides it."""
        self._stop.set()
        self._running.set()
        for thread in self._threads:
            thread.join(timeout=120)
        deadline = time.monotonic() + 120
        while (unsettled := self.history.unsettled()) and time.monotonic() < deadline:
            for op in unsettled:
                self.history.reserve(self.client, op.pool_id, op.quantity, op.request_id)

    def _run(self, caller: int) -> None:
        n = 0
        while not self._stop.is_set():
            self._running.wait()
            pool_id = self.pools[(caller + n) % len(self.pools)]  # every caller goes round every pool
            request_id = f"c{caller}-{n}"
            n += 1
            with self._lock:
                if not self._running.is_set():
                    continue
                self.attempted[pool_id].add(request_id)
                self._in_flight += 1
                began = self.last_attempt[pool_id] = time.monotonic()
            try:
                self._reserve(pool_id, request_id, began)
            finally:
                with self._lock:
                    self._in_flight -= 1

    def _reserve(self, pool_id: str, request_id: str, began: float) -> None:
        operation = self.history.reserve(self.client, pool_id, 1, request_id)
        if operation.code == "insufficient_capacity":
            with self._lock:
                self.full.add(pool_id)
                self._answered(pool_id, began)  # a pool that answers "full" serves
            return
        if operation.outcome != "ok":
            failure = Failure(began, operation.ended - began, operation.code, operation.message)
            with self._lock:
                self.failures.append(failure)
            time.sleep(0.05)
            return
        with self._lock:
            self.acknowledged[pool_id].add(request_id)
            self._answered(pool_id, began)

    def mark(self, at: float) -> None:
        with self._lock:
            self._mark = at
            self.answered_after_mark = {}

    def _answered(self, pool_id: str, began: float) -> None:
        now = time.monotonic()
        self.last_ok[pool_id] = now
        if began > self._mark:
            self.answered_after_mark.setdefault(pool_id, now)


def wait_until(condition: Callable[[], bool], timeout_s: float, pause_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(pause_s)
    return condition()


def check_journal(settings: ServiceSettings, stream: ReserveStream, capacity: int) -> dict[str, int]:
    """Every acknowledged reservation is in the journal once, nothing nobody asked for is, and no
    pool holds more than its capacity. Returns totals."""
    totals = {"acknowledged": 0, "stored": 0}
    for pool_id in stream.pools:
        state = journal_state(settings, pool_id)
        stored = set(state.reservation_by_request)
        lost = stream.acknowledged[pool_id] - stored
        assert not lost, f"{pool_id}: acknowledged but not in the journal: {sorted(lost)[:5]}"
        unasked = stored - stream.attempted[pool_id]
        assert not unasked, f"{pool_id}: in the journal but never requested: {sorted(unasked)[:5]}"
        # One reservation per request id (the journal's state is keyed by it; the events must agree).
        assert len(state.reservations) == len(stored), f"{pool_id}: a request id took capacity twice"
        assert state.reserved == sum(r.quantity for r in state.reservations.values() if r.status.takes_capacity)
        assert state.reserved <= capacity, f"{pool_id}: oversold, {state.reserved} > {capacity}"
        if pool_id in stream.full:  # it said "full", and nothing was released since: it is exactly full
            assert state.reserved == capacity, f"{pool_id}: answered full at {state.reserved} of {capacity}"
        totals["acknowledged"] += len(stream.acknowledged[pool_id])
        totals["stored"] += len(stored)
    problems = check(stream.history, events_in(settings.journal, stream.pools))
    assert not problems, "\n".join(problems[:20])
    return totals


def pools_by_node(settings: ServiceSettings, pools: list[str]) -> dict[str, list[str]]:
    placed: dict[str, list[str]] = {}
    for pool_id in pools:
        placed.setdefault(actor_info(settings, pool_id)["node_id"], []).append(pool_id)
    return placed


@dataclass(frozen=True)
class Failover:
    seconds: float  # from the kill to every pool of the lost node having answered a reserve again
    detected_s: float  # from the kill to Ray listing the node as dead
    pools_moved: int


def lose_busiest_worker(local: LocalCluster, settings: ServiceSettings, stream: ReserveStream) -> Failover:
    """Kill (SIGKILL, all processes) the worker hosting the most of the stream's pools while the stream
    runs; wait until every one of its pools answered a reserve begun after the kill. The cluster gets a
    fresh worker after."""
    placed = pools_by_node(settings, stream.pools)
    victim_id = max(placed, key=lambda node_id: len(placed[node_id]))
    moved = placed[victim_id]
    killed_at = time.monotonic()
    stream.mark(killed_at)
    local.remove_worker(local.worker_of(victim_id))
    detected_at: list[float] = []

    def all_served() -> bool:
        if not detected_at and victim_id not in _ray.alive_node_ids():
            detected_at.append(time.monotonic())
        return all(p in stream.answered_after_mark for p in moved)

    served = wait_until(all_served, 120, 0.05)
    assert served, f"pools of the lost node not serving after 120 s: {moved}"
    failover_s = max(stream.answered_after_mark[p] for p in moved) - killed_at
    local.add_worker()
    return Failover(failover_s, (detected_at or [float("nan")])[0] - killed_at, len(moved))


def worker_log_mentions(local: LocalCluster, pid: int, text: str) -> bool:
    """Whether the log of the Ray worker process ``pid`` contains ``text`` (its stderr, where Python's
    logging goes in a Ray worker)."""
    return any(text in path.read_text(errors="replace") for path in local.logs_dir().glob(f"worker-*-{pid}.err"))


# The answers that settle an order: confirmed, or failed with nothing taken.
SETTLED = ("ok", "refused", "failed")


@dataclass
class OrderStream:
    """Callers placing two-line orders (two distinct pools, one unit each), every order with its own id,
    keeping each order's lines and what the service answered: "ok" (confirmed), "refused" (a line could
    not be served: nothing taken), "failed" (undone for another reason, such as its deadline passing while
    the journal was frozen: nothing taken), or the error of an answer that settles nothing (503, 504, ...)."""

    client: CapacityClient
    pools: list[str]
    callers: int = 4
    answers: dict[str, str] = field(default_factory=dict)
    first_answers: dict[str, str] = field(default_factory=dict)  # before ``settle`` repeated any
    lines: dict[str, list[str]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(self.callers)]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def _run(self, caller: int) -> None:
        rng = random.Random(caller)
        run = uuid.uuid4().hex[:6]  # journals outlive a test: an order id of an earlier run is taken
        n = 0
        while not self._stop.is_set():
            order_id = f"o{run}-{caller}-{n}"
            n += 1
            self.lines[order_id] = rng.sample(self.pools, 2)
            self.answers[order_id] = self.first_answers[order_id] = self.place(order_id)

    def place(self, order_id: str) -> str:
        lines = [OrderLineRequest(pool_id=pool_id, quantity=1) for pool_id in self.lines[order_id]]
        try:
            self.client.place_order(lines, order_id=order_id)
        except OrderLineRefused:
            return "refused"
        except OrderFailed:
            return "failed"
        except CapacityError as exc:
            return type(exc).__name__
        return "ok"

    def settle(self, timeout_s: float) -> None:
        """Repeat every order whose answer settled nothing, with its id, until each is answered."""
        deadline = time.monotonic() + timeout_s
        for order_id, answer in list(self.answers.items()):
            while answer not in SETTLED and time.monotonic() < deadline:
                time.sleep(0.5)
                answer = self.answers[order_id] = self.place(order_id)
        unsettled = {o: a for o, a in self.answers.items() if a not in SETTLED}
        assert not unsettled, f"orders still unsettled: {list(unsettled.items())[:5]}"


def orders_at_rest(settings: ServiceSettings, stream: OrderStream, timeout_s: float = 60) -> None:
    """Wait until every order's stream is at rest (confirmed, failed, cancelled): an order's caller hears
    "confirmed" before the order records it (decision 0009), and an order whose host died records it on its
    next host. Each order still under way is asked for (a read starts it where it is not hosted)."""
    deadline = time.monotonic() + timeout_s
    pending = list(stream.lines)
    while True:
        with open_journal(settings.journal) as journal:
            pending = [
                o for o in pending if (status := _order_status(journal, o)) is not None and status not in RESTING
            ]
        if not pending:
            return
        assert time.monotonic() < deadline, f"orders not at rest: {pending[:5]}"
        for order_id in pending[:50]:
            with suppress(CapacityError):
                stream.client.get_order(order_id)
        time.sleep(0.5)


def _order_status(journal: Any, order_id: str) -> OrderStatus | None:
    writer = OrderWriter(order_id, journal)
    writer.reload()
    return writer.state.status


def check_orders(settings: ServiceSettings, stream: OrderStream, capacity: int) -> dict[str, int]:
    """All lines or none, in the journal: every order the service confirmed (its answer, or its stream)
    has an active reservation on each line's pool, under the line's request id; every other order has
    none left taken; no pool holds more than its capacity, nor anything no confirmed order explains."""
    orders_at_rest(settings, stream)
    states = {pool_id: journal_state(settings, pool_id) for pool_id in stream.pools}
    confirmed_lines: dict[str, int] = dict.fromkeys(stream.pools, 0)
    totals = {"confirmed": 0, "failed": 0}
    with open_journal(settings.journal) as journal:
        for order_id, pools in stream.lines.items():
            writer = OrderWriter(order_id, journal)
            writer.reload()
            status = writer.state.status
            assert stream.answers[order_id] != "ok" or status is OrderStatus.CONFIRMED, (order_id, status)
            assert stream.answers[order_id] not in ("refused", "failed") or status is OrderStatus.FAILED, (
                order_id,
                status,
            )
            taken = []
            for line, pool_id in enumerate(pools):
                found = states[pool_id].reservation_for_request(f"order:{order_id}:{line}:0")
                taken.append(found is not None and found.status.takes_capacity)
            if status is OrderStatus.CONFIRMED:
                assert all(taken), f"{order_id}: confirmed, lines taken {taken}"
                totals["confirmed"] += 1
                for pool_id in pools:
                    confirmed_lines[pool_id] += 1
            else:
                assert not any(taken), f"{order_id}: {status}, but lines taken {taken}"
                totals["failed"] += 1
    for pool_id, state in states.items():
        assert state.reserved <= capacity, f"{pool_id}: oversold, {state.reserved} > {capacity}"
        assert state.reserved == confirmed_lines[pool_id], (
            f"{pool_id}: {state.reserved} reserved, orders explain {confirmed_lines[pool_id]}"
        )
    return totals
