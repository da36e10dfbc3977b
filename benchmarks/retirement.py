"""Retired pools cost nothing in the background, on `capacity-service start` as a user runs it (defaults),
everything created and retired over HTTP:

Setup: `scripts/setup dev` once; then

    .venv/bin/python benchmarks/retirement.py [--pools 10000] [--retire 9000]

``--pools`` pools are created (PUT); then the background work that runs over every pool is timed, three
times each: a watchdog sweep (every live pool pinged, recovered if it is not running), an availability
cache replica's anti-entropy pull (every live pool's version), and a warehouse stream's catch-up pass
(every pool's journal head against its delivered cursor). Then ``--retire`` of them are retired (DELETE)
and, once they are dormant (no longer hosted), the same is timed again. Target: the sweeps cost in
proportion to the live pools, not to every pool ever made.

Runs beside the service, attached to its Ray as a user's Python client is (the address ``start`` prints),
to start the sweeps and time them. Results: benchmarks/results/retirement.json and .png.
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (
    argument_parser,
    command_line,
    exit_cleanly_on_sigterm,
    save_figure,
    send_all,
    started_service,
    write_results,
)

REPEATS = 3
# How `start` says to reach its Ray.
HINT = r"RAY_AUTH_MODE=(\w+) in its environment: ray\.init\(address='([^']+)'\)"


def timed_sweeps(namespace: str) -> dict[str, Any]:
    """The three background passes, each timed ``REPEATS`` times (median seconds), with what they covered."""
    from capacity_service.runtime import _ray
    from capacity_service.runtime.actor_api import CacheApi, Call, SupervisorApi, WarehouseStreamApi, call
    from capacity_service.runtime.names import CACHE_PREFIX, STREAM_PREFIX, SUPERVISOR_NAME

    supervisor = _ray.lookup_actor(SUPERVISOR_NAME, namespace)
    cache = _ray.lookup_actor(_ray.named_actors(namespace, CACHE_PREFIX)[0], namespace)
    stream = _ray.lookup_actor(_ray.named_actors(namespace, STREAM_PREFIX)[0], namespace)
    assert supervisor is not None and cache is not None and stream is not None

    async def timed(handle: Any, request: Call[Any]) -> tuple[float, Any]:
        began = time.monotonic()
        answer = await _ray.ask(handle, request, 600)
        return time.monotonic() - began, answer

    async def run() -> dict[str, Any]:
        out: dict[str, Any] = {}
        sweeps: tuple[tuple[str, Any, Call[Any]], ...] = (
            ("watchdog_sweep", supervisor, call(SupervisorApi.sweep_now)),
            ("cache_anti_entropy", cache, call(CacheApi.sync)),
            ("warehouse_catch_up", stream, call(WarehouseStreamApi.catch_up)),
        )
        for label, handle, request in sweeps:
            runs = [await timed(handle, request) for _ in range(REPEATS)]
            out[label] = {"median_s": statistics.median(s for s, _ in runs), "runs_s": [s for s, _ in runs]}
            if label == "watchdog_sweep":
                out[label]["pools_pinged"] = runs[-1][1].alive
        return out

    return asyncio.run(run())


def hosted_pools(namespace: str) -> int:
    from capacity_service.runtime import _ray
    from capacity_service.runtime.actor_api import PoolApi, call
    from capacity_service.runtime.names import SHARD_PREFIX

    async def count() -> int:
        total = 0
        for name in _ray.named_actors(namespace, SHARD_PREFIX):
            shard = _ray.lookup_actor(name, namespace)
            assert shard is not None, f"{name} is gone"
            described = await _ray.ask(shard, call(PoolApi.describe), 60)
            pools = described["pools"]
            assert isinstance(pools, list | dict)
            total += len(pools)
        return total

    return asyncio.run(count())


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    labels = ["watchdog_sweep", "cache_anti_entropy", "warehouse_catch_up"]
    before = [results["before"][k]["median_s"] for k in labels]
    after = [results["after"][k]["median_s"] for k in labels]
    fig, axis = plt.subplots(figsize=(9, 4.5))
    xs = range(len(labels))
    axis.bar([x - 0.2 for x in xs], before, 0.4, label=f"{results['pools']} live pools")
    axis.bar(
        [x + 0.2 for x in xs],
        after,
        0.4,
        label=f"{results['pools'] - results['retired']} live, {results['retired']} retired",
    )
    axis.set_xticks(list(xs), labels)
    axis.set(ylabel="seconds (median of 3)", title="background passes over the pools")
    axis.legend()
    save_figure(fig, path)


def main() -> None:
    exit_cleanly_on_sigterm()
    parser = argument_parser(__doc__)
    parser.add_argument("--pools", type=int, default=10_000)
    parser.add_argument("--retire", type=int, default=9_000)
    a = parser.parse_args()
    print(command_line(), flush=True)
    pools = [f"r-{i}" for i in range(a.pools)]
    with tempfile.TemporaryDirectory(prefix="bench-retire-") as tmp:
        printed = Path(tmp) / "start.out"
        with started_service(Path(tmp), output=printed) as port:
            deadline = time.monotonic() + 60  # it prints how to reach its Ray just after it is ready
            while (hint := re.search(HINT, printed.read_text())) is None:
                assert time.monotonic() < deadline, printed.read_text()
                time.sleep(0.5)
            os.environ["RAY_AUTH_MODE"] = hint.group(1)
            import ray

            ray.init(address=hint.group(2), log_to_driver=False)
            from capacity_service.runtime.names import DEFAULT_NAMESPACE

            body = b'{"capacity": 10, "zone": "retire"}'
            created_s = send_all(port, "PUT", [(f"/v1/pools/{p}", body) for p in pools], expected={201})
            print(f"  created {a.pools} pools in {created_s:.1f} s", flush=True)
            before = timed_sweeps(DEFAULT_NAMESPACE)
            before["pools_hosted"] = hosted_pools(DEFAULT_NAMESPACE)
            print(f"  {a.pools} live: {summary(before)}", flush=True)
            retired = pools[: a.retire]
            retired_s = send_all(port, "DELETE", [(f"/v1/pools/{p}", None) for p in retired], expected={200})
            print(f"  retired {a.retire} pools in {retired_s:.1f} s", flush=True)
            deadline = time.monotonic() + 120
            while hosted_pools(DEFAULT_NAMESPACE) > a.pools - a.retire and time.monotonic() < deadline:
                time.sleep(1)
            after = timed_sweeps(DEFAULT_NAMESPACE)
            after["pools_hosted"] = hosted_pools(DEFAULT_NAMESPACE)
            print(f"  {a.pools - a.retire} live, {a.retire} retired: {summary(after)}", flush=True)
            ray.shutdown()
    results = {
        "pools": a.pools,
        "retired": a.retire,
        "created_s": created_s,
        "retired_s": retired_s,
        "before": before,
        "after": after,
        "ratio_after_to_before": {
            k: after[k]["median_s"] / before[k]["median_s"]
            for k in ("watchdog_sweep", "cache_anti_entropy", "warehouse_catch_up")
            if before[k]["median_s"] > 0
        },
    }
    path = write_results("retirement", results)
    plot(results, path.with_suffix(".png"))
    print(f"  wrote {path} and {path.with_suffix('.png').name}", flush=True)


def summary(measured: dict[str, Any]) -> str:
    return (
        ", ".join(
            f"{k} {measured[k]['median_s'] * 1000:.0f} ms"
            for k in ("watchdog_sweep", "cache_anti_entropy", "warehouse_catch_up")
        )
        + f", {measured['pools_hosted']} pools hosted, {measured['watchdog_sweep']['pools_pinged']} pinged"
    )


if __name__ == "__main__":
    main()
