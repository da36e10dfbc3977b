"""Write-side benchmarks on a local Ray: one hot pool, many pools, memory per pool, cold start.

Setup: `scripts/setup dev` once; then

    .venv/bin/python benchmarks/pool_actors.py                       # everything, SQLite and Cassandra
    .venv/bin/python benchmarks/pool_actors.py --journals sqlite --seconds 3
    .venv/bin/python benchmarks/pool_actors.py --journals sqlite --parts channel   # same-node channel vs Ray

Callers are asyncio tasks in this driver process, each awaiting one reserve at a time through
``AsyncCapacityClient`` (Ray actor calls, no HTTP). Results: benchmarks/results/pool_actors-<journals>.json and .png.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import argument_parser, exit_cleanly_on_sigterm, summarize, write_results
from benchmarks._journals import journal_settings
from capacity_service.client import AsyncCapacityClient
from capacity_service.errors import InsufficientCapacity
from capacity_service.runtime import _ray
from capacity_service.runtime._ray import kill_namespace
from capacity_service.runtime.actor_api import PoolApi, call
from capacity_service.runtime.router import actor_name
from capacity_service.settings import (
    CassandraJournalSettings,
    HostingMode,
    HostingSettings,
    ServiceSettings,
    SqlJournalSettings,
    WarehouseSettings,
    WriteSideSettings,
)


def pss_mb(pid: int) -> float:
    """Proportional set size of a process: its private memory plus its share of shared pages."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no Pss for {pid}")


async def drive(client: AsyncCapacityClient, pools: list[str], callers: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    rejected = 0
    deadline = time.perf_counter() + seconds

    async def caller(seed: int) -> None:
        nonlocal rejected
        rng = random.Random(seed)
        while time.perf_counter() < deadline:
            pool_id = pools[rng.randrange(len(pools))]
            t0 = time.perf_counter()
            try:
                await client.reserve(pool_id)
            except InsufficientCapacity:
                rejected += 1
            latencies.append(time.perf_counter() - t0)

    began = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(callers)))
    elapsed = time.perf_counter() - began
    return {
        "callers": callers,
        "requests": len(latencies),
        "rejected": rejected,
        "reserves_per_s": len(latencies) / elapsed,
        "latency": summarize(latencies),
    }


async def make_pools(client: AsyncCapacityClient, count: int, capacity: int) -> list[str]:
    pools = [f"bench-{uuid.uuid4().hex[:10]}" for _ in range(count)]
    gate = asyncio.Semaphore(16)

    async def create(pool_id: str) -> None:
        async with gate:
            await client.configure_pool(pool_id, capacity, f"zone-{hash(pool_id) % 50}")

    await asyncio.gather(*(create(p) for p in pools))
    return pools


def settings_for(
    journal: SqlJournalSettings | CassandraJournalSettings, mode: HostingMode, shards: int, group_commit: bool = True
) -> ServiceSettings:
    return ServiceSettings(
        journal=journal,
        write_side=WriteSideSettings(max_batch=256 if group_commit else 1),
        hosting=HostingSettings(mode=mode, shards=shards, namespace=f"bench-{uuid.uuid4().hex[:8]}", call_timeout_s=60),
        warehouse=WarehouseSettings(enabled=False),  # the write side alone; see benchmarks/warehouse.py
    )


async def _drive_hot_pool(settings: ServiceSettings, seconds: float, label: str, say: Any) -> list[dict[str, Any]]:
    """One pool on its own actor, driven by 1, 16 and 64 callers in turn; its namespace removed after."""
    client = AsyncCapacityClient(settings)
    [pool_id] = await make_pools(client, 1, 10**9)
    await drive(client, [pool_id], 16, 1.0)  # warm up
    rows = []
    for callers in (1, 16, 64):
        r = await drive(client, [pool_id], callers, seconds)
        rows.append(r)
        lat = r["latency"]
        say(
            f"  hot pool, {label}, {callers:>2} callers: {r['reserves_per_s']:>6.0f} reserves/s, "
            f"median {lat['median_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms"
        )
    await client.aclose()
    kill_namespace(settings.hosting.namespace)
    return rows


async def hot_pool(journal: Any, seconds: float, say: Any) -> list[dict[str, Any]]:
    rows = []
    for group_commit in (True, False):
        settings = settings_for(journal, "actor_per_pool", 1, group_commit)
        label = f"group commit {'on ' if group_commit else 'off'}"
        rows += [{**r, "group_commit": group_commit} for r in await _drive_hot_pool(settings, seconds, label, say)]
    return rows


async def channel_vs_ray(journal: Any, seconds: float, say: Any) -> list[dict[str, Any]]:
    """The hot pool with commands over the same-node channel and over Ray's RPC, alternating twice (this
    machine drifts by ±20% within minutes: side by side is the only fair comparison)."""
    rows = []
    for round_nr in (1, 2):
        for channel in (True, False):
            settings = settings_for(journal, "actor_per_pool", 1)
            hosting = settings.hosting.model_copy(update={"same_node_channel": channel})
            settings = settings.model_copy(update={"hosting": hosting})
            label = f"over {'the channel' if channel else 'Ray RPC   '}, round {round_nr}"
            driven = await _drive_hot_pool(settings, seconds, label, say)
            rows += [{**r, "channel": channel, "round": round_nr} for r in driven]
    return rows


async def spread(journal: Any, seconds: float, mode: HostingMode, say: Any) -> dict[str, Any]:
    settings = settings_for(journal, mode, 8)
    client = AsyncCapacityClient(settings)
    t0 = time.perf_counter()
    pools = await make_pools(client, 100, 10**9)
    created = time.perf_counter() - t0
    await drive(client, pools, 64, 1.0)
    r = await drive(client, pools, 64, seconds)
    r.update(mode=mode, pools=100, create_s=created)
    lat = r["latency"]
    say(
        f"  100 pools ({mode}), 64 callers: {r['reserves_per_s']:.0f} reserves/s, "
        f"median {lat['median_ms']:.1f} ms, "
        f"p99 {lat['p99_ms']:.1f} ms (creating the pools took {created:.1f} s)"
    )
    kill_namespace(settings.hosting.namespace)
    return r


async def memory_and_cold_start(
    journal: Any, mode: HostingMode, pools_count: int, shards: int, say: Any
) -> dict[str, Any]:
    settings = settings_for(journal, mode, shards)
    settings = settings.model_copy(update={"hosting": settings.hosting.model_copy(update={"watchdog_concurrency": 8})})
    client = AsyncCapacityClient(settings)
    pools = await make_pools(client, pools_count, 1000)
    # Give every pool a realistic few reservations.
    for pool_id in pools:
        for _ in range(5):
            await client.reserve(pool_id)
    names = sorted({actor_name(settings, p) for p in pools})
    pids = []
    for name in names:
        handle = _ray.lookup_actor(name, settings.hosting.namespace)
        assert handle is not None
        pids.append(cast(int, (await _ray.ask(handle, call(PoolApi.describe), 60))["pid"]))
    total_pss = sum(pss_mb(pid) for pid in pids)
    say(
        f"  {mode}: {pools_count} pools on {len(names)} actors: PSS {total_pss:.0f} MB = "
        f"{total_pss / pools_count:.2f} MB per pool"
    )
    # Cold start: every actor gone, then one watchdog sweep brings all registered pools back.
    for name in names:
        handle = _ray.lookup_actor(name, settings.hosting.namespace)
        if handle is not None:
            _ray.kill_actor(handle, restart=False)
    time.sleep(1.0)
    t0 = time.perf_counter()
    report = await client.sweep(timeout_s=600)
    cold_start_s = time.perf_counter() - t0
    assert report.healthy, report.failed
    result = {
        "mode": mode,
        "pools": pools_count,
        "actors": len(names),
        "total_pss_mb": total_pss,
        "pss_mb_per_pool": total_pss / pools_count,
        "cold_start_s": cold_start_s,
        "registered_pools_recovered": report.alive,
        "watchdog_concurrency": 8,
    }
    say(f"  {mode}: cold start of {report.alive} registered pools {cold_start_s:.1f} s")
    kill_namespace(settings.hosting.namespace)
    return result


def plot(results: dict[str, Any], path: Path) -> None:
    if not any(data.get("hot_pool") for data in results["journals"].values()):
        return
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for journal, data in results["journals"].items():
        for group_commit in (True, False):
            rows = [r for r in data.get("hot_pool", []) if r["group_commit"] is group_commit]
            ax.plot(
                [r["callers"] for r in rows],
                [r["reserves_per_s"] for r in rows],
                marker="o",
                linestyle="-" if group_commit else ":",
                label=f"{journal}, group commit {'on' if group_commit else 'off'}",
            )
    ax.axhline(2000, color="red", linestyle="--", linewidth=1, label="target 2,000/s at 64 callers")
    ax.set_xlabel("concurrent callers")
    ax.set_ylabel("reserves/s on one pool")
    ax.set_xscale("log", base=4)
    ax.set_title("one hot pool through Ray handles")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:

    def say(line: str) -> None:
        print(line, flush=True)

    results: dict[str, Any] = {"journals": {}}
    for kind in args.journals.split(","):
        with journal_settings(kind) as journal:
            say(f"{kind} journal")
            data: dict[str, Any] = {}
            if "hot" in args.parts:
                data["hot_pool"] = await hot_pool(journal, args.seconds, say)
            if "channel" in args.parts:
                data["channel_vs_ray"] = await channel_vs_ray(journal, args.seconds, say)
            if "spread" in args.parts:
                data["spread"] = [
                    await spread(journal, args.seconds, mode, say) for mode in ("sharded", "actor_per_pool")
                ]
            if "memory" in args.parts:
                # A process per pool is slow to start: 100 at once swamp a small machine (Ray keeps
                # starting workers), so the per-actor mode is measured with 40.
                data["memory_and_cold_start"] = [
                    await memory_and_cold_start(journal, "actor_per_pool", 40, 1, say),
                    await memory_and_cold_start(journal, "sharded", 100, 4, say),
                    await memory_and_cold_start(journal, "sharded", 2000, 4, say),
                ]
            results["journals"][kind] = data
    return results


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--journals", default="sqlite,cassandra")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--parts", default="hot,spread,memory")
    args = parser.parse_args()
    exit_cleanly_on_sigterm()
    import ray

    ray.init(num_cpus=2, log_to_driver=False, include_dashboard=False)
    try:
        results = asyncio.run(main_async(args))
    finally:
        ray.shutdown()
    path = write_results(f"pool_actors-{args.journals.replace(',', '-')}-{args.parts.replace(',', '-')}", results)
    plot(results, path.with_suffix(".png"))
    plotted = path.with_suffix(".png").exists()
    print(f"results: {path}" + (f" and {path.with_suffix('.png')}" if plotted else ""))


if __name__ == "__main__":
    main()
