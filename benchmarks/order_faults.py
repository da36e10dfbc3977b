"""A fault run of orders: two-line orders under load on a local multi-node Ray cluster (a head and 3
workers, ``ray.cluster_utils.Cluster``) with sharded hosting (2 shard actors host pools and orders alike),
while the shard actors' processes are killed -9 in turn (each is an order host and a pool host; Ray
restarts it, the watchdog starts its live orders again). Afterwards every answer that settled nothing is
settled by repeating its order with its id, and the history checker (``tests/support/multinode.py``)
reads the journal: every order confirmed has every line taken, every other none, no pool oversold, and no
unit taken that no confirmed order explains (nothing leaked).

Setup: `scripts/setup dev` once; then

    .venv/bin/python benchmarks/order_faults.py                    # 10,000 orders, SQLite journal
    .venv/bin/python benchmarks/order_faults.py --orders 2000 --kill-every 5

Prints the answers, the orders per second and the checker's verdict with the command; writes
benchmarks/results/order_faults.json. Exits non-zero if the checker disagrees with the journal.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (
    argument_parser,
    command_line,
    exit_cleanly_on_sigterm,
    save_figure,
    write_results_and_plot,
)
from capacity_service.client import CapacityClient
from capacity_service.runtime import _ray
from capacity_service.runtime.actor_api import PoolApi, call
from capacity_service.runtime.local import POOL_RESOURCES, local_cluster
from capacity_service.runtime.names import shard_name
from capacity_service.settings import (
    HostingSettings,
    ServiceSettings,
    SnapshotSettings,
    SqlJournalSettings,
    WarehouseSettings,
    WebhookSettings,
)
from tests.support.multinode import OrderStream, check_orders


def settings_on(journal: SqlJournalSettings) -> ServiceSettings:
    return ServiceSettings(
        journal=journal,
        hosting=HostingSettings(
            mode="sharded",
            shards=2,
            namespace=f"faults-{uuid.uuid4().hex[:8]}",
            actor_resources=POOL_RESOURCES,  # on the workers: the head offers no pool_host
            call_timeout_s=10,
            watchdog_interval_s=1.0,
        ),
        warehouse=WarehouseSettings(enabled=False),  # not under test; saves processes on 2 cores
        webhooks=WebhookSettings(enabled=False),
        snapshots=SnapshotSettings(every_n_events=100_000),
    )


def kill_shard(settings: ServiceSettings, shard: int) -> None:
    handle = _ray.lookup_actor(shard_name(shard), settings.hosting.namespace)
    if handle is None:
        return
    try:
        described = asyncio.run(_ray.ask(handle, call(PoolApi.describe), 30))
    except Exception:  # restarting from the last kill: the next one gets it
        return
    pid = described.get("pid")
    if isinstance(pid, int):
        os.kill(pid, signal.SIGKILL)


def run(orders: int, pools: int, capacity: int, callers: int, kill_every_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="order-faults-") as tmp, local_cluster(workers=3):
        settings = settings_on(SqlJournalSettings(url=f"sqlite:///{Path(tmp) / 'journal.db'}"))
        with CapacityClient(settings) as client:
            try:
                client.start_watchdog()
                pool_ids = [f"of-{uuid.uuid4().hex[:8]}" for _ in range(pools)]
                for pool_id in pool_ids:
                    client.configure_pool(pool_id, capacity, "north")
                stream = OrderStream(client, pool_ids, callers=callers)
                kills: list[float] = []
                timeline: list[tuple[float, int]] = []
                began = last_kill = time.monotonic()
                stream.start()
                try:
                    while len(stream.first_answers) < orders:
                        time.sleep(0.2)
                        timeline.append((time.monotonic() - began, len(stream.first_answers)))
                        if time.monotonic() - last_kill >= kill_every_s:
                            kill_shard(settings, len(kills) % 2)
                            last_kill = time.monotonic()
                            kills.append(last_kill - began)
                            shard = (len(kills) - 1) % 2
                            print(f"  {len(stream.first_answers):6} orders answered; killed shard {shard}", flush=True)
                finally:
                    stream.stop()
                elapsed = time.monotonic() - began
                first = Counter(stream.first_answers.values())
                stream.settle(300)
                totals = check_orders(settings, stream, capacity)
            finally:
                _ray.kill_namespace(settings.hosting.namespace)
    return {
        "orders": len(stream.first_answers),
        "orders_per_s": len(stream.first_answers) / elapsed,
        "seconds": elapsed,
        "kills": len(kills),
        "killed_at_s": kills,
        "timeline": timeline,
        "first_answers": dict(first),
        "after_settling": dict(Counter(stream.answers.values())),
        "checked": totals,
        "all_or_nothing": True,  # check_orders raised otherwise
    }


def main() -> None:
    exit_cleanly_on_sigterm()
    parser = argument_parser(__doc__)
    parser.add_argument("--orders", type=int, default=10_000, help="orders placed before the load stops")
    parser.add_argument("--pools", type=int, default=50)
    parser.add_argument("--capacity", type=int, default=1_000, help="per pool: most orders are taken")
    parser.add_argument("--callers", type=int, default=8)
    parser.add_argument("--kill-every", type=float, default=8.0, help="seconds between two kills")
    args = parser.parse_args()
    results = {"command": command_line(), **run(args.orders, args.pools, args.capacity, args.callers, args.kill_every)}
    print(f"\n{results['command']}")
    print(
        f"  {results['orders']} two-line orders in {results['seconds']:.0f} s ({results['orders_per_s']:.0f}/s), "
        f"{results['kills']} shard processes killed -9"
    )
    print(f"  first answers: {results['first_answers']}; after settling: {results['after_settling']}")
    print(f"  history checker: all or nothing, none oversold, nothing leaked: {results['checked']}")
    write_results_and_plot("order_faults", results, lambda png: plot(results, png))


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 4))
    times = [t for t, _ in results["timeline"]]
    answered = [n for _, n in results["timeline"]]
    axis.plot(times, answered, label="orders answered")
    for index, at in enumerate(results["killed_at_s"]):
        axis.axvline(at, color="red", linestyle=":", label="a shard process killed -9" if index == 0 else None)
    axis.set(
        title=f"{results['orders']} two-line orders, {results['kills']} kills: all or nothing, nothing leaked",
        xlabel="seconds",
        ylabel="orders answered",
    )
    axis.legend(fontsize=8)
    save_figure(figure, path)


if __name__ == "__main__":
    main()
