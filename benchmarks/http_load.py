"""Side by side, in one run: capacity_service over HTTP (Ray Serve) and the yardstick (stateless FastAPI +
asyncpg + PostgreSQL, a conditional UPDATE per reserve), loaded with wrk (2 threads, 16 connections,
10 s) on this machine: availability over 50 zones, reserves spread over 500 pools, reserves on one hot
pool, and a 10:2:1 availability:reserve:release mix.

Setup: `scripts/setup dev` once; then

    .venv/bin/python benchmarks/http_load.py [--journal sqlite|postgres|cassandra] [--seconds 10]
        [--connections 16] [--runs 3] [--rounds 1] [--targets yardstick,capacity_service,shards_1,fast]
        [--baseline COMMIT]

``--journal`` (default sqlite) runs capacity_service on that journal, its server started here on loopback
(benchmarks/_journals.py), and first measures what that database does alone through its driver at the
same concurrency (its own limit), printing each scenario's ratio to it. On ``--journal postgres`` the
yardstick uses the same PostgreSQL server.

Both run on the same 2 cores as wrk. The yardstick's PostgreSQL fsyncs every commit, as our SQLite journal
does. capacity_service runs as `capacity-service start` (SQLite journal), with pools created over HTTP:
as it starts by default (pools on one shard actor per CPU, one on this SQLite journal; the Serve replica
answers HTTP itself, on loopback), beside `--shards 1` (the earlier benchmark path) and, when asked,
`--fast-ingress` (Serve's HAProxy in front of it). ``--baseline COMMIT`` also runs that commit's
`capacity-service start` (from a temporary git worktree) in the same run, to compare a change side by side.
Results: benchmarks/results/http_load.json and .png.

This machine drifts by ±20% within minutes, and a target measured a few minutes after another may meet a
faster or slower spell. ``--rounds N`` interleaves: each round starts every target afresh and runs every
scenario ``--runs`` times, and every other round runs the targets in reverse order, so each target's
runs spread over the same stretch of time. Reported per target and scenario: the median run of all its
runs (the lower middle one for an even count), each run's requests/s, and the ratio to the yardstick.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (
    REPO,
    argument_parser,
    ensure_wrk,
    exit_cleanly_on_sigterm,
    median_run,
    run_wrk,
    scenario_pools,
    seed_scenario_pools,
    started_service,
    started_yardstick,
    write_results_and_plot,
)
from benchmarks._journals import JournalServer, add_journal_option, database_limits, journal_server, results_name

SCENARIOS = ["availability", "reserve_spread", "reserve_hot", "mixed"]


Runs = dict[str, list[dict[str, Any]]]  # scenario -> wrk runs


def bench_yardstick(wrk: str, args: argparse.Namespace, say: Any, shared: JournalServer) -> Runs:
    with started_yardstick(shared.postgres_conninfo) as port:
        url = f"http://127.0.0.1:{port}"
        return {s: _scenario(wrk, url, "yardstick", s, args, say) for s in SCENARIOS}


def bench_capacity_service(
    wrk: str, args: argparse.Namespace, say: Any, target_key: str, journal: JournalServer, code: Path = REPO
) -> Runs:
    """``capacity_service``: `capacity-service start` as it starts by default; ``shards_1``: with `--shards 1`
    (the old benchmark path); ``fast``: with `--fast-ingress`; ``baseline``: by default, from ``code`` (a
    worktree of another commit)."""
    target = _target_name(target_key, args)
    options = [
        *(["--shards", "1"] if target_key == "shards_1" else []),
        *(["--fast-ingress"] if target_key == "fast" else []),
        *(["--no-warehouse"] if args.no_warehouse else []),
    ]
    with (
        tempfile.TemporaryDirectory(prefix="bench-cs-") as tmp,
        started_service(Path(tmp), *options, environment=_environment(journal, target_key), code=code) as port,
    ):
        seeding = seed_scenario_pools(port)
        say(f"  {target:26} {len(scenario_pools())} pools created over HTTP in {seeding:.1f} s")
        url = f"http://127.0.0.1:{port}"
        return {s: _scenario(wrk, url, target, s, args, say) for s in SCENARIOS}


def _environment(journal: JournalServer, target_key: str) -> dict[str, str]:
    """The journal's settings; the baseline gets a keyspace of its own on Cassandra, whose layout changes
    between commits (decision 0011)."""
    settings = journal.environment.get("CAPACITY_JOURNAL")
    if target_key != "baseline" or settings is None:
        return journal.environment
    return {**journal.environment, "CAPACITY_JOURNAL": json.dumps({**json.loads(settings), "keyspace": "baseline"})}


def _limits_line(limits: dict[str, Any]) -> str:
    return ", ".join(
        f"{kind} {limits[kind]['writes_per_s']}/s "
        f"(median {limits[kind]['median_ms']:.1f} ms, p99 {limits[kind]['p99_ms']:.1f} ms)"
        for kind in ("conditional", "plain")
        if kind in limits
    )


def _target_name(target: str, args: argparse.Namespace) -> str:
    return {
        "fast": "capacity_service (HAProxy)",
        "capacity_service": "capacity_service (default)",
        "shards_1": "capacity_service (--shards 1)",
        "baseline": f"capacity_service @{args.baseline}",
    }.get(target, target)


def _scenario(
    wrk: str, url: str, target: str, scenario: str, args: argparse.Namespace, say: Any
) -> list[dict[str, Any]]:
    """``--runs`` wrk runs after a warm-up."""
    run_wrk(wrk, url, scenario, 3, args.connections)  # warm-up
    runs = [run_wrk(wrk, url, scenario, args.seconds, args.connections) for _ in range(args.runs)]
    say(f"  {target:26} {scenario:15} runs {[round(run['requests_per_s']) for run in runs]} req/s")
    return runs


def summarize(target: str, scenario: str, runs: list[dict[str, Any]], rounds: int) -> dict[str, Any]:
    """The median run by requests/s (the lower middle one for an even count), with every run's requests/s."""
    row = median_run(runs)
    row["target"] = target
    row["rounds"] = rounds
    return row


def plot(rows: list[dict[str, Any]], path: Path, connections: int, journal: str) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.8))
    targets = sorted({r["target"] for r in rows})
    width = 0.8 / len(targets)
    for i, target in enumerate(targets):
        mine = [next(r for r in rows if r["target"] == target and r["scenario"] == s) for s in SCENARIOS]
        bars = ax.bar(
            [j + i * width for j in range(len(SCENARIOS))], [r["requests_per_s"] for r in mine], width, label=target
        )
        for bar, r in zip(bars, mine, strict=True):
            runs = r["runs_requests_per_s"]  # every run as a dot: the bar alone hides how far they spread
            center = bar.get_x() + bar.get_width() / 2
            ax.scatter([center] * len(runs), runs, s=9, color="black", zorder=3, label=None)
            ax.annotate(
                f"p99 {r['p99_ms']:.0f} ms",
                (center, max([bar.get_height(), *runs])),  # above the highest dot
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=7,
            )
    ax.set_xticks([j + width * (len(targets) - 1) / 2 for j in range(len(SCENARIOS))], SCENARIOS)
    ax.set_ylabel(f"requests/s (wrk -t{min(2, connections)} -c{connections})")
    ax.set_title(f"HTTP throughput on 2 cores, {journal} journal, side by side (bars: median run; dots: every run)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--runs", type=int, default=1, help="wrk runs per scenario and round")
    parser.add_argument(
        "--rounds", type=int, default=1, help="start every target this many times, alternating; medians over all runs"
    )
    parser.add_argument("--targets", default="yardstick,capacity_service,shards_1")
    parser.add_argument("--no-warehouse", action="store_true", help="capacity_service without its analytics stream")
    parser.add_argument("--results", default=None, help="name of the results file (default: http_load[-JOURNAL])")
    parser.add_argument(
        "--baseline", default=None, help="a commit to run beside this checkout (a git worktree of it, by default)"
    )
    add_journal_option(parser)
    args = parser.parse_args()
    if args.rounds < 1 or args.runs < 1:
        parser.error("--rounds and --runs must be at least 1")
    exit_cleanly_on_sigterm()
    wrk = ensure_wrk()

    def say(line: str) -> None:
        print(line, flush=True)

    with journal_server(args.journal) as journal, ExitStack() as cleanup:
        baseline = None
        if args.baseline:
            baseline = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="bench-baseline-"))) / "code"
            subprocess.run(
                ["git", "worktree", "add", "-q", "--detach", str(baseline), args.baseline], cwd=REPO, check=True
            )
            cleanup.callback(
                subprocess.run, ["git", "worktree", "remove", "--force", str(baseline)], cwd=REPO, check=False
            )
        run(args, wrk, say, journal, baseline)


def run(args: argparse.Namespace, wrk: str, say: Any, journal: JournalServer, baseline: Path | None = None) -> None:
    limits = database_limits(journal, concurrency=args.connections)
    say(
        f"{journal.kind} alone (its driver, {limits['concurrency']} writes in flight, one row each): "
        f"{_limits_line(limits)}"
    )
    benches = {
        "yardstick": lambda: bench_yardstick(wrk, args, say, journal),
        "capacity_service": lambda: bench_capacity_service(wrk, args, say, "capacity_service", journal),
        "shards_1": lambda: bench_capacity_service(wrk, args, say, "shards_1", journal),
        "fast": lambda: bench_capacity_service(wrk, args, say, "fast", journal),
        "baseline": lambda: bench_capacity_service(wrk, args, say, "baseline", journal, code=baseline or REPO),
    }
    wanted = {name.strip() for name in args.targets.split(",")} | ({"baseline"} if baseline else set())
    targets = [t for t in benches if t in wanted]
    collected: dict[str, Runs] = {t: {s: [] for s in SCENARIOS} for t in targets}
    for round_nr in range(1, args.rounds + 1):
        for target in targets if round_nr % 2 else reversed(targets):
            say(f"round {round_nr}/{args.rounds}: {_target_name(target, args)}")
            for scenario, runs in benches[target]().items():
                collected[target][scenario] += runs
    rows = [summarize(_target_name(t, args), s, collected[t][s], args.rounds) for t in targets for s in SCENARIOS]
    yardstick = {r["scenario"]: r["requests_per_s"] for r in rows if r["target"] == "yardstick"}
    plain = limits["plain"]["writes_per_s"]
    for r in rows:
        if r["target"] != "yardstick" and r["scenario"] in yardstick:
            r["vs_yardstick"] = round(r["requests_per_s"] / yardstick[r["scenario"]], 2)
        if r["target"] != "yardstick" and r["scenario"].startswith("reserve"):
            r["vs_database_plain_writes"] = round(r["requests_per_s"] / plain, 2)
            if "conditional" in limits:
                r["vs_database_conditional_writes"] = round(
                    r["requests_per_s"] / limits["conditional"]["writes_per_s"], 2
                )
        say(
            f"{r['target']:26} {r['scenario']:15} {r['requests_per_s']:>8.0f} req/s  median {r['median_ms']:.1f} ms  "
            f"p99 {r['p99_ms']:.1f} ms  non-2xx {r['non_2xx']}"
            + (f"  x{r['vs_yardstick']:.2f} of the yardstick" if "vs_yardstick" in r else "")
            + (
                f"  x{r['vs_database_plain_writes']:.2f} of {journal.kind}'s plain writes"
                if "vs_database_plain_writes" in r
                else ""
            )
            + (
                f" (x{r['vs_database_conditional_writes']:.2f} of its conditional ones)"
                if "vs_database_conditional_writes" in r
                else ""
            )
            + f"  runs {[round(x) for x in r['runs_requests_per_s']]}  ({r['command']})"
        )
    results = {
        "journal": journal.kind,
        "database_alone": limits,
        "rows": rows,
        "warehouse": not args.no_warehouse,
        "connections": args.connections,
        "rounds": args.rounds,
        "runs_per_round": args.runs,
    }
    name = args.results or results_name("http_load", journal.kind)
    write_results_and_plot(name, results, lambda png: plot(rows, png, args.connections, journal.kind))


if __name__ == "__main__":
    main()
