"""Failover and cold start on a multi-node Ray cluster on this machine (a head and 3 workers,
``ray.cluster_utils.Cluster``, fast failure detection as in ``capacity_service/runtime/health.py``),
SQLite journal shared by all nodes.

Setup: `scripts/setup dev` once; then

    .venv/bin/python benchmarks/failover.py                  # both parts, 3 repeats each
    .venv/bin/python benchmarks/failover.py --repeats 5 --parts failover

- failover: a steady stream of reserves (4 callers) over the pools; the worker hosting the most pools is
  killed (SIGKILL of all its processes); measured from the kill to every one of its pools having
  answered a reserve begun after the kill. A fresh worker joins before the next repeat.
  Two layouts: 20 pools as 20 actors, 100 pools sharded over 6 actors.
- cold start: 100 registered pools (5 reservations each) in the journal, a new cluster on it, and one
  watchdog sweep (at most ``watchdog_concurrency`` = 8 recoveries at once): from the sweep's start to
  every pool recovered and serving. Sharded (8 actors): 100 actor processes at once are too heavy for 2
  cores (see README).

Prints median and p99 with the command; writes benchmarks/results/failover.json.
"""

from __future__ import annotations

import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import argument_parser, command_line, exit_cleanly_on_sigterm, summarize, write_results
from capacity_service.client import CapacityClient
from capacity_service.runtime.local import POOL_RESOURCES, local_cluster
from capacity_service.settings import (
    HostingMode,
    HostingSettings,
    ServiceSettings,
    SqlJournalSettings,
    WarehouseSettings,
)
from tests.support.multinode import (
    ReserveStream,
    check_journal,
    lose_busiest_worker,
    pools_by_node,
)

CAPACITY = 1_000_000


def settings_for(journal: SqlJournalSettings, mode: HostingMode, shards: int) -> ServiceSettings:
    return ServiceSettings(
        journal=journal,
        hosting=HostingSettings(
            mode=mode,
            shards=shards,
            namespace=f"bench-{uuid.uuid4().hex[:8]}",
            actor_resources=POOL_RESOURCES,
            call_timeout_s=30,
            watchdog_concurrency=8,
        ),
        warehouse=WarehouseSettings(enabled=False),
    )


def failover(
    journal: SqlJournalSettings, mode: HostingMode, pools_count: int, shards: int, repeats: int
) -> dict[str, Any]:
    settings = settings_for(journal, mode, shards)
    samples: list[float] = []
    detected: list[float] = []
    moved: list[int] = []
    with local_cluster(workers=3) as cluster, CapacityClient(settings) as client:
        pools = [f"fo-{uuid.uuid4().hex[:8]}" for _ in range(pools_count)]
        for pool_id in pools:
            client.configure_pool(pool_id, CAPACITY, "north")
        client.start_watchdog()
        stream = ReserveStream(client, pools)
        stream.start()
        try:
            for i in range(repeats):
                time.sleep(3.0)
                failover = lose_busiest_worker(cluster, settings, stream)
                samples.append(failover.seconds)
                detected.append(failover.detected_s)
                moved.append(failover.pools_moved)
                print(
                    f"  {mode} {pools_count} pools, kill {i + 1}: node declared dead after {failover.detected_s:.2f} s,"
                    f" its {failover.pools_moved} pools served again after {failover.seconds:.2f} s"
                )
            time.sleep(2.0)
        finally:
            stream.stop()
        totals = check_journal(settings, stream, CAPACITY)  # nothing acknowledged lost, nothing doubled
    return {
        "mode": mode,
        "pools": pools_count,
        "actors": pools_count if mode == "actor_per_pool" else shards,
        "pools_moved": moved,
        "seconds": samples,
        "summary": summarize(samples),
        "detected_seconds": detected,
        "detected_summary": summarize(detected),
        "journal": totals,
    }


def cold_start(journal: SqlJournalSettings, pools_count: int, shards: int, repeats: int) -> dict[str, Any]:
    settings = settings_for(journal, "sharded", shards)
    with local_cluster(workers=3), CapacityClient(settings) as client:
        pools = [f"cs-{uuid.uuid4().hex[:8]}" for _ in range(pools_count)]
        for pool_id in pools:
            client.configure_pool(pool_id, CAPACITY, "north")
            for _ in range(5):
                client.reserve(pool_id)
    samples: list[float] = []
    for i in range(repeats):
        fresh = settings.model_copy(
            update={"hosting": settings.hosting.model_copy(update={"namespace": f"bench-{uuid.uuid4().hex[:8]}"})}
        )
        with local_cluster(workers=3), CapacityClient(fresh) as client:
            began = time.perf_counter()
            report = client.sweep(timeout_s=600)
            seconds = time.perf_counter() - began
            assert report.healthy and report.alive >= pools_count, report
            assert all(client.get_pool(p).reserved == 5 for p in pools)
            spread = len(pools_by_node(fresh, pools))
        samples.append(seconds)
        print(f"  cold start {i + 1}: {pools_count} pools on {shards} actors over {spread} nodes in {seconds:.2f} s")
    return {
        "mode": "sharded",
        "pools": pools_count,
        "actors": shards,
        "watchdog_concurrency": settings.hosting.watchdog_concurrency,
        "max_concurrent_recoveries": settings.write_side.max_concurrent_recoveries,
        "seconds": samples,
        "summary": summarize(samples),
    }


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--parts", default="failover,cold_start")
    args = parser.parse_args()
    exit_cleanly_on_sigterm()
    parts = set(args.parts.split(","))
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as tmp:
        if "failover" in parts:
            print("failover: kill the worker hosting the most pools under a stream of reserves")
            runs: tuple[tuple[HostingMode, int, int], ...] = (("actor_per_pool", 20, 1), ("sharded", 100, 6))
            results["failover"] = [
                failover(SqlJournalSettings(url=f"sqlite:///{tmp}/{mode}.db"), mode, pools, shards, args.repeats)
                for mode, pools, shards in runs
            ]
        if "cold_start" in parts:
            print("cold start: 100 registered pools, a new cluster, one watchdog sweep")
            results["cold_start"] = cold_start(SqlJournalSettings(url=f"sqlite:///{tmp}/cold.db"), 100, 8, args.repeats)
    print(f"\n{command_line()}")
    for run in results.get("failover", []):
        s = run["summary"]
        d = run["detected_summary"]
        print(
            f"failover, {run['pools']} pools on {run['actors']} actors: kill -> all its pools serving "
            f"median {s['median_ms'] / 1000:.2f} s, p99 {s['p99_ms'] / 1000:.2f} s (n={s['n']}); "
            f"kill -> node declared dead median {d['median_ms'] / 1000:.2f} s, p99 {d['p99_ms'] / 1000:.2f} s"
        )
    if "cold_start" in results:
        s = results["cold_start"]["summary"]
        print(
            f"cold start, 100 pools on 8 actors: median {s['median_ms'] / 1000:.2f} s, "
            f"p99 {s['p99_ms'] / 1000:.2f} s (n={s['n']})"
        )
    print(f"written: {write_results('failover', results)}")


if __name__ == "__main__":
    main()
