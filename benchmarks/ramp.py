"""Offered load rising until it breaks, side by side in one run: capacity_service as `capacity-service start`
runs it by default (SQLite journal, pools created over HTTP) and the yardstick (FastAPI + asyncpg +
PostgreSQL, a conditional UPDATE per reserve), on two scenarios: reserves spread over 500 pools, and
reserves on one hot pool.

Setup: `scripts/setup dev` once; then

    .venv/bin/python benchmarks/ramp.py [--journal sqlite|postgres|cassandra] [--levels 8 32 128 512 1024]
        [--seconds 6] [--targets capacity_service,yardstick]

``--journal``: capacity_service on that journal, its server started here on loopback
(benchmarks/_journals.py; the yardstick then uses the same PostgreSQL server on ``postgres``); results in
ramp-JOURNAL.json. Default: the embedded SQLite journal.

At each level, that many connections each send a reserve, wait for its answer, and send the next (a
closed loop: the offered load rises with the connections); after a 429 (or 503) a connection waits the
second its Retry-After asks, as a client of the contract does. Reported per level: accepted reserves (201)
per second, their median and p99 latency, refusals (429 overloaded), other errors, and answers that did
not come within 10 s. The knee: the level with the most accepted reserves per second. What the service
should do past it: answer 429s at once, keep the accepted ones fast (p99 under the original system's
100 ms) and keep its throughput instead of collapsing.

The load comes from this script's own lean HTTP/1.1 client (an asyncio connection per client, no HTTP
library: httpx cost more CPU per request than the service here), in one process on the same 2 cores.
Results: benchmarks/results/ramp.json and .png.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (
    HOT_POOL,
    SCENARIO_POOLS,
    argument_parser,
    closed_loop_level,
    command_line,
    exit_cleanly_on_sigterm,
    knee,
    save_figure,
    seed_scenario_pools,
    started_service,
    started_yardstick,
    write_results_and_plot,
)
from benchmarks._journals import JournalServer, add_journal_option, journal_server, results_name

SCENARIOS = ["reserve_spread", "reserve_hot"]
P99_TARGET_MS = 100.0


def reserve_body(scenario: str) -> Callable[[random.Random], bytes]:
    """The body of a reserve of one unit: of the hot pool, or of a random pool of the spread ones."""

    def body(rng: random.Random) -> bytes:
        pool = HOT_POOL if scenario == "reserve_hot" else f"pool-{rng.randrange(SCENARIO_POOLS)}"
        return json.dumps({"pool_id": pool, "quantity": 1}).encode()

    return body


def run_level(port: int, scenario: str, connections: int, seconds: float) -> dict[str, Any]:
    return asyncio.run(closed_loop_level(port, "/v1/reservations", reserve_body(scenario), connections, seconds))


def ramp(port: int, target: str, levels: list[int], seconds: float) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {}
    for scenario in SCENARIOS:
        run_level(port, scenario, 8, 2)  # warm-up
        rows = []
        for connections in levels:
            row = run_level(port, scenario, connections, seconds)
            rows.append(row)
            print(
                f"  {target:18} {scenario:15} {connections:5} conns: {row['accepted_per_s']:7.0f} accepted/s, "
                f"p99 {row['accepted_p99_ms'] or float('nan'):7.1f} ms, statuses {row['statuses']}, "
                f"load generator {row['load_generator_cpu_share']:.0%} of a core",
                flush=True,
            )
        results[scenario] = rows
    return results


def ramp_capacity_service(levels: list[int], seconds: float, journal: JournalServer) -> dict[str, list[dict[str, Any]]]:
    with (
        tempfile.TemporaryDirectory(prefix="bench-ramp-") as tmp,
        started_service(Path(tmp), environment=journal.environment) as port,
    ):
        seed_scenario_pools(port)
        return ramp(port, "capacity_service", levels, seconds)


def ramp_yardstick(levels: list[int], seconds: float, journal: JournalServer) -> dict[str, list[dict[str, Any]]]:
    with started_yardstick(journal.postgres_conninfo) as port:
        return ramp(port, "yardstick", levels, seconds)


def plot(results: dict[str, dict[str, list[dict[str, Any]]]], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(SCENARIOS), figsize=(6 * len(SCENARIOS), 8), squeeze=False)
    for column, scenario in enumerate(SCENARIOS):
        top, bottom = axes[0][column], axes[1][column]
        for target, by_scenario in results.items():
            rows = by_scenario.get(scenario, [])
            levels = [row["connections"] for row in rows]
            top.plot(levels, [row["accepted_per_s"] for row in rows], "o-", label=f"{target}: accepted/s")
            top.plot(
                levels, [row["statuses"].get("429", 0) / row["seconds"] for row in rows], "x:", label=f"{target}: 429/s"
            )
            bottom.plot(levels, [row["accepted_p99_ms"] for row in rows], "o-", label=target)
        top.set(title=f"{scenario}: throughput", xscale="log", xlabel="connections", ylabel="answers/s")
        bottom.axhline(P99_TARGET_MS, color="grey", linestyle="--", label="100 ms")
        bottom.set(title=f"{scenario}: accepted p99", xscale="log", yscale="log", xlabel="connections", ylabel="ms")
        top.legend(fontsize=8)
        bottom.legend(fontsize=8)
    save_figure(fig, path)


def main() -> None:
    exit_cleanly_on_sigterm()
    parser = argument_parser(__doc__)
    parser.add_argument("--levels", type=int, nargs="+", default=[8, 32, 128, 512, 1024])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--targets", default="capacity_service,yardstick")
    add_journal_option(parser)
    args = parser.parse_args()
    runners = {"capacity_service": ramp_capacity_service, "yardstick": ramp_yardstick}
    with journal_server(args.journal) as journal:
        results = {target: runners[target](args.levels, args.seconds, journal) for target in args.targets.split(",")}
    knees = {target: {s: knee(rows) for s, rows in by_scenario.items()} for target, by_scenario in results.items()}
    print(f"\n{command_line()}")
    for target, by_scenario in knees.items():
        for scenario, found in by_scenario.items():
            high = found["at_highest_load"]
            print(
                f"  {target:18} {scenario:15} knee at {found['connections']} conns: {found['accepted_per_s']:.0f} "
                f"accepted/s (p99 {found['accepted_p99_ms']:.1f} ms); at {high['connections']} conns: "
                f"{high['share_of_peak']:.0%} of it, p99 {high['accepted_p99_ms'] or float('nan'):.1f} ms, "
                f"{high['refused_share']:.0%} refused, {high['timeouts']} timeouts"
            )
    document = {"command": command_line(), "journal": args.journal, "levels": args.levels, "results": results}
    write_results_and_plot(
        results_name("ramp", args.journal), {**document, "knees": knees}, lambda png: plot(results, png)
    )


if __name__ == "__main__":
    main()
