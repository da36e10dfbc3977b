"""10,000 pools from one schedule, on `capacity-service start` as a user runs it (defaults: SQLite, one shard
actor), applied with `capacity-service schedule apply FILE` as a user applies one:

Setup: `scripts/setup dev` once; then

    .venv/bin/python benchmarks/schedules.py                        # 10,000 pools, SQLite (target: < 10 s)
    .venv/bin/python benchmarks/schedules.py --journal cassandra    # the same on Cassandra (target: < 30 s)
    .venv/bin/python benchmarks/schedules.py --pools 1000           # a smoke test

The template: 20 zones x 10 slots a day x ``--pools``/200 days (``--pools``: a multiple of 200). On a fresh
data dir (and, with ``--journal cassandra|postgres``, a fresh server started here, named to `start` through
the environment as an operator would):

1. apply: `capacity-service schedule apply schedule.yaml --json`, timed from its start to its exit (it puts
   the template, then asks how the apply goes every 0.2 s until it is applied); the service's own time is
   the schedule's ``accepted_at`` to ``finished_at``;
2. the batches: the schedule's stream as `capacity-service events schedule~<id>` dumps it, one event per
   batch of pools (500), each with the time its pools took (``elapsed_ms``): median and p99;
3. again: the same file applied a second time (every pool unchanged: nothing written), timed the same way;
4. checked: the schedule says every pool was created (then unchanged), and 50 random pools answer
   `GET /v1/pools/{id}` with the template's capacity and slot.

Results: benchmarks/results/schedules.json (schedules-JOURNAL.json) and .png: each batch's time, first
apply and again, over the pools done.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (
    REPO,
    argument_parser,
    command_line,
    exit_cleanly_on_sigterm,
    save_figure,
    started_service,
    summarize,
    write_results_and_plot,
)
from benchmarks._journals import add_journal_option, journal_server, results_name

ZONES = 20
SLOTS = ["06:00", "07:30", "09:00", "10:30", "12:00", "13:30", "15:00", "16:30", "18:00", "19:30"]
CAPACITY = 40
SCHEDULE_ID = "bench"
TARGET_S = {"sqlite": 10.0, "cassandra": 30.0}
CAPACITY_SERVICE = [sys.executable, "-m", "capacity_service"]
_LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def template_yaml(days: int) -> str:
    zones = "\n".join(f"  - {{zone: z{k}, capacity: {CAPACITY}}}" for k in range(ZONES))
    last = datetime.fromordinal(datetime(2027, 1, 1).toordinal() + days - 1).date()
    return (
        f"from: 2027-01-01\nto: {last.isoformat()}\nslot_minutes: 90\n"
        f"slot_starts: [{', '.join(SLOTS)}]\nzones:\n{zones}\n"
    )


def apply(port: int, file: Path, environment: dict[str, str]) -> tuple[float, dict[str, Any]]:
    """`schedule apply FILE --json` as a user runs it: seconds from its start to its exit, and the schedule."""
    began = time.monotonic()
    done = subprocess.run(
        [
            *CAPACITY_SERVICE,
            "--url",
            f"http://127.0.0.1:{port}",
            "schedule",
            "apply",
            str(file),
            "--id",
            SCHEDULE_ID,
            "--json",
        ],
        capture_output=True,
        text=True,
        env=environment,
        timeout=600,
        check=False,
    )
    took = time.monotonic() - began
    if done.returncode != 0:
        raise RuntimeError(f"schedule apply exited {done.returncode}: {done.stderr[-2000:]}")
    schedule: dict[str, Any] = json.loads(done.stdout)
    return took, schedule


def batches(data_dir: Path, environment: dict[str, str]) -> list[dict[str, Any]]:
    """The schedule's batch events, as `capacity-service events schedule~ID` dumps them."""
    dumped = subprocess.run(
        [*CAPACITY_SERVICE, "--data-dir", str(data_dir), "events", f"schedule~{SCHEDULE_ID}"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
        check=True,
    ).stdout
    events = [json.loads(line) for line in dumped.splitlines() if line.strip()]
    return [event for event in events if event["type"] == "SchedulePoolsApplied"]


def service_seconds(schedule: dict[str, Any]) -> float:
    accepted, finished = (
        datetime.fromisoformat(schedule[k].replace("Z", "+00:00")) for k in ("accepted_at", "finished_at")
    )
    return (finished - accepted).total_seconds()


def check_pools(port: int, days: int) -> int:
    """50 random pools of the template answer with its capacity and slot; how many were asked."""
    rng = random.Random(7)
    for _ in range(50):
        day = datetime.fromordinal(datetime(2027, 1, 1).toordinal() + rng.randrange(days)).date()
        zone, start = f"z{rng.randrange(ZONES)}", rng.choice(SLOTS)
        pool_id = f"{zone}:{day.isoformat()}T{start[:2]}" + ("" if start.endswith(":00") else f":{start[3:]}")
        with _LOOPBACK.open(f"http://127.0.0.1:{port}/v1/pools/{pool_id}", timeout=30) as answer:
            pool = json.loads(answer.read())
        assert pool["capacity"] == CAPACITY and pool["zone"] == zone, pool
        assert pool["slot_start"] == f"{day.isoformat()}T{start}:00Z", pool
    return 50


def run(pools: int, journal: str) -> dict[str, Any]:
    days = pools // (ZONES * len(SLOTS))
    with journal_server(journal) as server, tempfile.TemporaryDirectory(prefix="bench-schedules-") as tmp:
        data_dir = Path(tmp)
        file = data_dir / "schedule.yaml"
        file.write_text(template_yaml(days))
        environment = {**os.environ, **server.environment, "PYTHONPATH": str(REPO)}
        with started_service(data_dir, environment=server.environment) as port:
            first_s, first = apply(port, file, environment)
            print(
                f"  applied {first['total']:,} pools in {first_s:.2f} s ({service_seconds(first):.2f} s in the service)"
            )
            again_s, again = apply(port, file, environment)
            print(f"  again (every pool unchanged) in {again_s:.2f} s ({service_seconds(again):.2f} s in the service)")
            checked = check_pools(port, days)
            recorded = batches(data_dir, environment)
    assert (first["created"], first["refused"], again["unchanged"]) == (pools, 0, pools), (first, again)
    by_generation = {g: [e["tally"] for e in recorded if e["generation"] == g] for g in (1, 2)}
    latencies = {g: [t["elapsed_ms"] / 1000 for t in tallies] for g, tallies in by_generation.items()}
    return {
        "journal": journal,
        "pools": pools,
        "template": {"zones": ZONES, "slots_a_day": len(SLOTS), "days": days},
        "first_apply": {
            "seconds": first_s,
            "service_seconds": service_seconds(first),
            "batches": summarize(latencies[1]),
            "batch_ms": [t["elapsed_ms"] for t in by_generation[1]],
            "batch_pools": [t["pools"] for t in by_generation[1]],
        },
        "again": {
            "seconds": again_s,
            "service_seconds": service_seconds(again),
            "batches": summarize(latencies[2]),
            "batch_ms": [t["elapsed_ms"] for t in by_generation[2]],
        },
        "pools_checked": checked,
        "target_s": TARGET_S.get(journal),
        "target_met": first_s < TARGET_S[journal] if journal in TARGET_S and pools == 10_000 else None,
    }


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(9, 4.5))
    for key, label in (("first_apply", "first apply (created)"), ("again", "again (unchanged)")):
        times = results[key]["batch_ms"]
        done = [500 * (i + 1) for i in range(len(times))]
        axis.plot(done, times, marker=".", label=f"{label}: {results[key]['seconds']:.1f} s in all")
    axis.set(
        xlabel="pools done",
        ylabel="batch of 500 pools (ms)",
        title=f"{results['pools']:,} pools from one schedule ({results['journal']})",
    )
    axis.legend()
    save_figure(figure, path)


def main() -> None:
    exit_cleanly_on_sigterm()
    parser = argument_parser(__doc__)
    parser.add_argument("--pools", type=int, default=10_000, help="a multiple of 200 (20 zones x 10 slots a day)")
    add_journal_option(parser)
    a = parser.parse_args()
    if a.pools < 200 or a.pools % (ZONES * len(SLOTS)):
        parser.error("--pools: a multiple of 200")
    print(command_line(), flush=True)
    results = run(a.pools, a.journal)
    for key in ("first_apply", "again"):
        measured = results[key]
        batch = measured["batches"]
        print(
            f"{key}: {measured['seconds']:.2f} s ({measured['service_seconds']:.2f} s in the service), "
            f"{batch['n']} batches: median {batch['median_ms']:.0f} ms, p99 {batch['p99_ms']:.0f} ms",
            flush=True,
        )
    write_results_and_plot(results_name("schedules", a.journal), results, lambda path: plot(results, path))


if __name__ == "__main__":
    main()
