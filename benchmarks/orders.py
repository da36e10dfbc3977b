"""Orders over HTTP in one run on `capacity-service start` as it starts by default: two-line orders and
chosen-slot reserves side by side with single reserves (wrk, 2 threads, 16 connections), then a ramp of
two-line orders until it breaks.

Setup: `scripts/setup dev` once; then

    .venv/bin/python benchmarks/orders.py [--journal sqlite|postgres|cassandra] [--seconds 10] [--rounds 3]
        [--connections 16] [--ramp-levels 8 32 128 512 1024] [--ramp-seconds 6]

Everything is created over HTTP: the 500 scenario pools over 50 zones the other HTTP benchmarks load
(``_common.seed_scenario_pools``, 1,000,000,000 units each, so no run comes near using one up), and a zone
of its own for each chosen run. The scenarios, each ``--seconds`` of wrk at ``--connections``
(benchmarks/wrk/):

- single (``reserve_spread.lua``): a reserve of one unit on a random pool of the 500, http_load's spread
  scenario: the reference.
- orders (``order_spread.lua``): ``POST /v1/orders`` with two lines of one unit on two distinct random pools
  of the same 500, no hold (its lines are taken active at once).
- chosen (``reserve_chosen.lua``): a reserve with ``choose`` (the run's zone, one unit, prefer earliest) on
  fresh pools: the zone's 10 earliest slots are full (5 of capacity 0, and 5 of capacity 2 filled over HTTP
  once the availability cache lists them with room, just before wrk starts, so that the cache still lists
  them until it learns), the later slots hold 1,000 units each (enough of them for 8,000 reserves/s), so
  that the earliest open ones fill in turn during the run and the cache lists each just-filled pool until
  it learns. Afterwards every pool of the zone is read over HTTP: the full pools' reserved must not have
  changed, no pool's reserved may exceed its capacity, and the units taken on the open pools must cover
  every 201 wrk counted (they may exceed it by the requests in flight when wrk stopped).

``--rounds N`` interleaves: every round runs the three scenarios on the same service, every other round
in reverse order, so that the machine's drift (±20% within minutes) falls on all alike. Reported per
scenario: the median run by requests/s (the lower middle one for an even count) with its median and p99
latency, and every run's requests/s; orders/single (of the median runs, and the median of the rounds'
ratios) against the target of 0.40, and each p99 against the target of 50 ms.

Then the ramp (``_common.closed_loop_level``, as ramp.py): at each of ``--ramp-levels``, that many
connections each place a two-line order, wait for its answer and place the next; a 429 is waited out as
its Retry-After asks. Per level: accepted orders per second, their median and p99, 429s, and answers that
did not come within 10 s (timeouts). Target: 429s at every level past the knee (the level with the most
accepted per second), and no timeouts.

``--journal`` (default sqlite): the service on that journal, its server started here on loopback
(benchmarks/_journals.py). wrk, the ramp's client and the service share this machine's 2 cores.
Results: benchmarks/results/orders.json and .png (orders-JOURNAL.json on another journal).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import statistics
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (
    SCENARIO_POOLS,
    answers_of,
    argument_parser,
    closed_loop_level,
    command_line,
    ensure_wrk,
    exit_cleanly_on_sigterm,
    knee,
    median_run,
    pool_request,
    run_wrk,
    save_figure,
    scenario_pools,
    seed_scenario_pools,
    send_all,
    started_service,
    write_results_and_plot,
)
from benchmarks._journals import add_journal_option, journal_server, results_name

# Each scenario and its wrk script (benchmarks/wrk/).
SCENARIOS = {"single": "reserve_spread", "orders": "order_spread", "chosen": "reserve_chosen"}
DESCRIBED = {
    "single": "a reserve on 1 of 500 pools",
    "orders": "an order of 2 lines on 2 of 500 pools",
    "chosen": "a chosen reserve, earliest slots full",
}
RATIO_TARGET = 0.40  # orders/s over single reserves/s
P99_TARGET_MS = 50.0
WARM_UP_S = 3

# The chosen scenario's zone, fresh for each run: its earliest slots full, the later ones open.
EMPTY_POOLS = 5  # capacity 0
FILLED_POOLS, FILLED_CAPACITY = 5, 2  # filled over HTTP once the cache lists them with room
OPEN_CAPACITY = 1_000  # each later slot: the earliest ones fill in turn during a run
OPEN_RATE = 8_000  # chosen reserves per second the open slots are sized for (beyond it: 409s, counted)
FIRST_SLOT = datetime(2030, 1, 1, tzinfo=UTC)


def say(line: str) -> None:
    print(line, flush=True)


# --- the chosen scenario's zone ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChosenZone:
    zone: str
    capacity: dict[str, int]  # every pool of the zone
    full: dict[str, int]  # the earliest pools: their reserved when wrk starts
    open: list[str]  # the later ones, empty when wrk starts


def seed_chosen_zone(port: int, zone: str, seconds: float) -> ChosenZone:
    """The zone's pools created over HTTP, one slot an hour; the filled ones filled once the availability
    cache lists them (and every open one) with room, so that it still lists them when wrk starts."""
    full_count = EMPTY_POOLS + FILLED_POOLS
    open_count = math.ceil(seconds * OPEN_RATE / OPEN_CAPACITY)
    pool_ids = [f"{zone}:{k:04d}" for k in range(full_count + open_count)]
    capacity = {
        pool_id: 0 if k < EMPTY_POOLS else FILLED_CAPACITY if k < full_count else OPEN_CAPACITY
        for k, pool_id in enumerate(pool_ids)
    }
    slots = {
        pool_id: (FIRST_SLOT + timedelta(hours=k), FIRST_SLOT + timedelta(hours=k + 1))
        for k, pool_id in enumerate(pool_ids)
    }
    send_all(port, "PUT", [pool_request(p, capacity[p], zone, slots[p]) for p in pool_ids], expected=(201,))
    filled, open_ = pool_ids[EMPTY_POOLS:full_count], pool_ids[full_count:]
    _wait_until_listed(port, zone, {*filled, *open_})
    fills = [("/v1/reservations", json.dumps({"pool_id": p, "quantity": FILLED_CAPACITY}).encode()) for p in filled]
    send_all(port, "POST", fills, expected=(201,))
    full = {p: 0 for p in pool_ids[:EMPTY_POOLS]} | {p: FILLED_CAPACITY for p in filled}
    return ChosenZone(zone, capacity, full, open_)


def _wait_until_listed(port: int, zone: str, pool_ids: set[str], timeout_s: float = 30.0) -> None:
    request = [("/v1/availability", json.dumps({"zone": zone}).encode())]
    deadline = time.monotonic() + timeout_s
    while True:
        [answer] = answers_of(port, "POST", request, connections=1)
        missing = pool_ids - {pool["pool_id"] for pool in answer["pools"]}
        if not missing:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"availability of {zone} still lacks {len(missing)} pools after {timeout_s:.0f} s")
        time.sleep(0.05)


def check_chosen_zone(port: int, seeded: ChosenZone, accepted: int) -> dict[str, Any]:
    """Every pool of the zone read over HTTP: no answer came from a pool without room."""
    time.sleep(1)  # the requests in flight when wrk stopped are decided by now
    pools = answers_of(port, "GET", [(f"/v1/pools/{p}", None) for p in seeded.capacity])
    reserved = {pool["pool_id"]: pool["reserved"] for pool in pools}
    over = sorted(pool["pool_id"] for pool in pools if pool["reserved"] > pool["capacity"])
    full_changed = sorted(p for p, was in seeded.full.items() if reserved[p] != was)
    taken = sum(reserved[p] for p in seeded.open)
    return {
        "zone": seeded.zone,
        "pools": len(pools),
        "full_pools": len(seeded.full),
        "open_pools_filled": sum(reserved[p] == seeded.capacity[p] for p in seeded.open),
        "accepted": accepted,
        "units_taken_on_open_pools": taken,
        "pools_over_capacity": over,
        "full_pools_changed": full_changed,
        "ok": not over and not full_changed and taken >= accepted,
    }


# --- side by side --------------------------------------------------------------------------------------------


def run_scenario(wrk: str, port: int, scenario: str, seconds: float, connections: int, label: str) -> dict[str, Any]:
    """One wrk run of ``scenario``; a chosen one on a zone of its own (``chosen-<label>``), checked after."""
    url = f"http://127.0.0.1:{port}"
    if scenario != "chosen":
        return run_wrk(wrk, url, SCENARIOS[scenario], seconds, connections)
    seeded = seed_chosen_zone(port, f"chosen-{label}", seconds)
    run = run_wrk(wrk, url, SCENARIOS[scenario], seconds, connections, [seeded.zone])
    run["check"] = check_chosen_zone(port, seeded, run["requests"] - run["non_2xx"])
    if not run["check"]["ok"]:
        say(f"  CHECK FAILED: {run['check']}")
    return run


def interleaved(wrk: str, port: int, rounds: int, seconds: float, connections: int) -> dict[str, list[dict[str, Any]]]:
    """Every scenario once per round, every other round in reverse order, after one warm-up each."""
    for scenario in SCENARIOS:
        run_scenario(wrk, port, scenario, min(WARM_UP_S, seconds), connections, "warmup")
    runs: dict[str, list[dict[str, Any]]] = {scenario: [] for scenario in SCENARIOS}
    for round_number in range(1, rounds + 1):
        order = list(SCENARIOS) if round_number % 2 else list(SCENARIOS)[::-1]
        for scenario in order:
            runs[scenario].append(run_scenario(wrk, port, scenario, seconds, connections, str(round_number)))
        say(
            f"  round {round_number:2}: "
            + ", ".join(
                f"{s} {runs[s][-1]['requests_per_s']:5.0f}/s (p99 {runs[s][-1]['p99_ms']:.1f} ms)" for s in SCENARIOS
            )
        )
    return runs


def summary(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    rows = {
        scenario: {
            **median_run(mine),
            "p99_max_ms": max(run["p99_ms"] for run in mine),
            "non_2xx_total": sum(run["non_2xx"] for run in mine),
            "p99_target_met": all(run["p99_ms"] < P99_TARGET_MS for run in mine),
        }
        for scenario, mine in runs.items()
    }
    ratios = [o["requests_per_s"] / s["requests_per_s"] for o, s in zip(runs["orders"], runs["single"], strict=True)]
    ratio = rows["orders"]["requests_per_s"] / rows["single"]["requests_per_s"]
    checks = [run["check"] for run in runs["chosen"]]
    return {
        "scenarios": rows,
        "orders_vs_single": {
            "of_median_runs": ratio,
            "round_ratios": ratios,
            "round_ratio_median": statistics.median(ratios),
            "target": RATIO_TARGET,
            "met": ratio >= RATIO_TARGET,
        },
        "chosen_checked": {"runs": len(checks), "all_ok": all(check["ok"] for check in checks)},
    }


# --- the ramp ------------------------------------------------------------------------------------------------


def order_body(rng: random.Random) -> bytes:
    """Two lines of one unit on two distinct random pools of the 500, no hold."""
    first, second = rng.sample(range(SCENARIO_POOLS), 2)
    lines = [{"pool_id": f"pool-{first}", "quantity": 1}, {"pool_id": f"pool-{second}", "quantity": 1}]
    return json.dumps({"lines": lines}).encode()


def ramp(port: int, levels: list[int], seconds: float) -> list[dict[str, Any]]:
    asyncio.run(closed_loop_level(port, "/v1/orders", order_body, 8, 2))  # warm-up
    rows = []
    for connections in levels:
        row = asyncio.run(closed_loop_level(port, "/v1/orders", order_body, connections, seconds))
        rows.append(row)
        say(
            f"  ramp {connections:5} conns: {row['accepted_per_s']:6.0f} orders/s accepted, "
            f"p99 {row['accepted_p99_ms'] or float('nan'):7.1f} ms, statuses {row['statuses']}, "
            f"load generator {row['load_generator_cpu_share']:.0%} of a core"
        )
    return rows


def ramp_verdict(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The knee, and the target: 429s at every level past it, no timeouts at any level (None: no level is
    past the knee, so whether it refuses past it is not known)."""
    found = knee(rows)
    past = [row for row in rows if row["connections"] > found["connections"]]
    timeouts = sum(row["statuses"].get("timeout", 0) for row in rows)
    refusing_past_knee = all(row["statuses"].get("429", 0) > 0 for row in past)
    return {
        "knee": found,
        "levels_past_knee": [row["connections"] for row in past],
        "refused_at_every_level_past_knee": refusing_past_knee if past else None,
        "timeouts": timeouts,
        "met": (refusing_past_knee and timeouts == 0) if past else None,
    }


# --- reporting -----------------------------------------------------------------------------------------------


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "NOT met", None: "not known"}[met]


def report(results: dict[str, Any]) -> None:
    say(f"\n{command_line()}")
    say(
        f"  {results['journal']} journal, {results['rounds']} round(s) of {results['seconds']:g} s per scenario, "
        f"{results['connections']} connections"
    )
    for scenario, row in results["scenarios"].items():
        check = ""
        if scenario == "chosen":
            checked = results["chosen_checked"]
            check = f"  checked over HTTP: {'ok' if checked['all_ok'] else 'FAILED'} ({checked['runs']} runs)"
        say(
            f"  {scenario:7} ({DESCRIBED[scenario]}): {row['requests_per_s']:7.0f} req/s  median "
            f"{row['median_ms']:.1f} ms  p99 {row['p99_ms']:.1f} ms (target < {P99_TARGET_MS:.0f} ms: "
            f"{_verdict(row['p99_target_met'])}; worst run {row['p99_max_ms']:.1f} ms)  non-2xx "
            f"{row['non_2xx_total']}  runs {[round(x) for x in row['runs_requests_per_s']]}{check}"
        )
    ratio = results["orders_vs_single"]
    say(
        f"  orders / single: {ratio['of_median_runs']:.2f} (rounds' ratios: median {ratio['round_ratio_median']:.2f})"
        f"  target >= {RATIO_TARGET:.2f}: {_verdict(ratio['met'])}"
    )
    verdict = results["ramp"]["verdict"]
    found, high = verdict["knee"], verdict["knee"]["at_highest_load"]
    say(
        f"  ramp of two-line orders: knee at {found['connections']} conns, {found['accepted_per_s']:.0f} orders/s "
        f"(p99 {found['accepted_p99_ms'] or float('nan'):.1f} ms); at {high['connections']} conns "
        f"{high['share_of_peak'] or 0:.0%} of it, p99 {high['accepted_p99_ms'] or float('nan'):.1f} ms, "
        f"{high['refused_share']:.0%} refused; 429s past the knee: "
        f"{_verdict(verdict['refused_at_every_level_past_knee'])}, timeouts {verdict['timeouts']}; "
        f"target: {_verdict(verdict['met'])}"
    )


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, (bars, throughput, latency) = plt.subplots(1, 3, figsize=(16, 5))
    rows = results["scenarios"]
    for x, row in enumerate(rows.values()):
        bars.bar(x, row["requests_per_s"], 0.6)
        runs = row["runs_requests_per_s"]
        bars.scatter([x] * len(runs), runs, s=9, color="black", zorder=3)
        bars.annotate(
            f"p99 {row['p99_ms']:.0f} ms",
            (x, max([row["requests_per_s"], *runs])),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            fontsize=8,
        )
    bars.set_xticks(range(len(rows)), [f"{s}\n{textwrap.fill(DESCRIBED[s], 24)}" for s in rows], fontsize=7)
    bars.set(
        ylabel=f"requests/s (wrk -c{results['connections']})",
        title=f"side by side, {results['journal']}: orders/single {results['orders_vs_single']['of_median_runs']:.2f}",
    )
    levels = results["ramp"]["rows"]
    connections = [row["connections"] for row in levels]
    throughput.plot(connections, [row["accepted_per_s"] for row in levels], "o-", label="accepted orders/s")
    throughput.plot(
        connections, [row["statuses"].get("429", 0) / row["seconds"] for row in levels], "x:", label="429/s"
    )
    throughput.set(title="ramp of two-line orders", xscale="log", xlabel="connections", ylabel="answers/s")
    throughput.legend(fontsize=8)
    latency.plot(connections, [row["accepted_p99_ms"] for row in levels], "o-", label="accepted p99")
    latency.axhline(P99_TARGET_MS, color="grey", linestyle="--", label=f"{P99_TARGET_MS:.0f} ms")
    latency.set(title="ramp: accepted p99", xscale="log", yscale="log", xlabel="connections", ylabel="ms")
    latency.legend(fontsize=8)
    for ax in (throughput, latency):
        ax.set_xticks(connections, [str(c) for c in connections])
        ax.tick_params(axis="x", which="minor", bottom=False, labelbottom=False)
    save_figure(fig, path)


def main() -> None:
    exit_cleanly_on_sigterm()
    parser = argument_parser(__doc__)
    parser.add_argument("--seconds", type=float, default=10, help="of each scenario's wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="every scenario once per round, interleaved")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--ramp-levels", type=int, nargs="+", default=[8, 32, 128, 512, 1024])
    parser.add_argument("--ramp-seconds", type=float, default=6.0, help="of each ramp level")
    add_journal_option(parser)
    args = parser.parse_args()
    if args.rounds < 1 or args.seconds < 1:
        parser.error("--rounds and --seconds must be at least 1")
    wrk = ensure_wrk()
    with (
        journal_server(args.journal) as journal,
        tempfile.TemporaryDirectory(prefix="bench-orders-") as tmp,
        started_service(Path(tmp), environment=journal.environment) as port,
    ):
        seeding = seed_scenario_pools(port)
        say(f"{len(scenario_pools())} scenario pools created over HTTP in {seeding:.1f} s")
        runs = interleaved(wrk, port, args.rounds, args.seconds, args.connections)
        ramp_rows = ramp(port, args.ramp_levels, args.ramp_seconds)
    results = {
        "journal": args.journal,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "connections": args.connections,
        "pools_created_s": seeding,
        "p99_target_ms": P99_TARGET_MS,
        **summary(runs),
        "runs": runs,
        "ramp": {
            "levels": args.ramp_levels,
            "seconds": args.ramp_seconds,
            "rows": ramp_rows,
            "verdict": ramp_verdict(ramp_rows),
        },
    }
    report(results)
    write_results_and_plot(results_name("orders", args.journal), results, lambda png: plot(results, png))
    if not results["chosen_checked"]["all_ok"]:
        sys.exit("a chosen reserve was answered from a pool without room: see chosen's checks in the results")


if __name__ == "__main__":
    main()
