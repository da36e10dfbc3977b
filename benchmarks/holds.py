"""Holds at scale, on `capacity-service start` as a user runs it (defaults: SQLite journal, warehouse on),
everything created over HTTP:

Setup: `scripts/setup dev` once; then

    .venv/bin/python benchmarks/holds.py [--holds 100000] [--rounds 20] [--seconds 3] [--parts storm,overhead]

1. The storm. One pool; ``--holds`` holds are placed on it over HTTP, each with the ``hold_seconds`` that
   makes it expire within the same wall-clock second T. From two seconds before T until the last hold has
   expired, 8 connections keep reserving on the same pool. Reported: the reserves' median and p99 during
   the storm (target: p99 under 50 ms), and the expiry lag of every hold, from its ``expires_at`` to the
   time its ``HoldExpired`` event was recorded in the journal (target: p99 under 1 s). The journal is
   read through the CLI's dump (``capacity-service events``).
2. What the hold machinery costs plain reserves, side by side with it off: this checkout and a git worktree
   of the same commit with ``holds_off.patch`` applied (no pending expiries, no timer: what every batch
   of plain reserves pays for holds), both started the same way and running at once, 100 pools each;
   ``--rounds`` rounds in which 16 connections reserve on one for ``--seconds``, then on the other, the
   order alternating (``_common.side_by_side``; target: under 5%). The patch fails to apply when the
   code it takes out has changed: then it must be made again.

The load comes from the benchmarks' lean HTTP/1.1 client (``_common.LeanConnection``) on the same 2
cores. Results: benchmarks/results/holds.json and .png.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (
    REPO,
    LeanConnection,
    add_side_by_side_options,
    argument_parser,
    command_line,
    exit_cleanly_on_sigterm,
    reserve_during,
    save_figure,
    seed_pools,
    side_by_side,
    started_service,
    summarize,
    write_results_and_plot,
)

STORM_POOL = "storm"
RESERVE_CONNECTIONS = 8
P99_RESERVE_TARGET_MS = 50.0
P99_LAG_TARGET_S = 1.0
OVERHEAD_TARGET = 0.05
HOLDS_OFF_PATCH = Path(__file__).with_name("holds_off.patch")


async def place_holds(port: int, count: int, expire_at: float) -> float:
    """``count`` holds on the storm pool, each expiring within the second after ``expire_at``; returns how
    long placing them took."""
    began = time.monotonic()
    next_index = 0

    async def placer() -> None:
        nonlocal next_index
        connection = LeanConnection(port)
        try:
            while next_index < count:
                next_index += 1
                hold_seconds = math.ceil(expire_at - time.time())
                body = json.dumps({"pool_id": STORM_POOL, "hold_seconds": hold_seconds}).encode()
                status, answer = await connection.request("POST", "/v1/reservations", body)
                if status != 201:
                    raise RuntimeError(f"placing a hold: {status} {answer[:200]!r}")
        finally:
            connection.close()

    await asyncio.gather(*(placer() for _ in range(16)))
    return time.monotonic() - began


def expiry_lags(data_dir: Path) -> list[float]:
    """Seconds from each hold's ``expires_at`` to its ``HoldExpired`` event's ``recorded_at``."""
    dump = subprocess.run(
        [str(Path(sys.executable).with_name("capacity-service")), "--data-dir", str(data_dir), "events", STORM_POOL],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout
    expires: dict[str, datetime] = {}
    lags: list[float] = []
    for line in dump.splitlines():
        event = json.loads(line)
        if event["type"] == "CapacityHeld":
            expires[event["reservation_id"]] = datetime.fromisoformat(event["expires_at"])
        elif event["type"] == "HoldExpired":  # every hold the pool expired at once
            recorded = datetime.fromisoformat(event["recorded_at"])
            lags += [(recorded - expires[rid]).total_seconds() for rid in event["reservation_ids"]]
    return lags


def storm(holds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-holds-") as tmp, started_service(Path(tmp)) as port:
        seed_pools(port, [STORM_POOL], holds * 2)
        # Time to place them all, with a margin: no hold expires while placing.
        expire_at = math.ceil(time.time() + 20 + holds / 1_500)
        placing_s = asyncio.run(place_holds(port, holds, expire_at))
        print(f"  placed {holds} holds in {placing_s:.1f} s; they expire at T = {expire_at} (+1 s)", flush=True)
        if time.time() > expire_at - 2:
            raise RuntimeError("placing the holds took longer than the margin: rerun with fewer --holds")
        time.sleep(max(0.0, expire_at - 2 - time.time()))
        during = asyncio.run(reserve_during(port, [STORM_POOL], expire_at + 8, RESERVE_CONNECTIONS))
        lags = expiry_lags(Path(tmp))
    lag_summary = summarize(lags) if lags else {}
    reserve_summary = summarize(during)
    return {
        "holds": holds,
        "placing_s": placing_s,
        "expired": len(lags),
        "reserves_during_storm": {**reserve_summary, "per_s": len(during) / 10.0},
        "expiry_lag_ms": lag_summary,
        "lags_s": sorted(lags)[:: max(1, len(lags) // 2_000)],  # a sample, for the plot
        "targets": {
            "reserve_p99_ms_under": P99_RESERVE_TARGET_MS,
            "reserve_p99_met": reserve_summary["p99_ms"] < P99_RESERVE_TARGET_MS,
            "lag_p99_s_under": P99_LAG_TARGET_S,
            "lag_p99_met": bool(lags) and lag_summary["p99_ms"] / 1000 < P99_LAG_TARGET_S,
            "every_hold_expired": len(lags) == holds,
        },
    }


def overhead(rounds: int, seconds: float) -> dict[str, Any]:
    """Plain reserves, side by side: this checkout as it is, and a worktree of the same commit with the hold
    machinery taken out by ``holds_off.patch`` (the pool's pending expiries and its timer, on every batch),
    both started as a user starts them and running at once."""
    with tempfile.TemporaryDirectory(prefix="bench-holds-off-") as tmp:
        holds_off = Path(tmp) / "code"
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(holds_off), "HEAD"], cwd=REPO, check=True)
        try:
            subprocess.run(["git", "apply", str(HOLDS_OFF_PATCH)], cwd=holds_off, check=True)
            with contextlib.ExitStack() as running:
                ports = {
                    "with_holds": running.enter_context(
                        started_service(Path(running.enter_context(tempfile.TemporaryDirectory())))
                    ),
                    "holds_off": running.enter_context(
                        started_service(Path(running.enter_context(tempfile.TemporaryDirectory())), code=holds_off)
                    ),
                }
                for port in ports.values():
                    seed_pools(port)
                found = side_by_side(ports, rounds, seconds)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(holds_off)], cwd=REPO, check=False)
    return {**found, "target_under": OVERHEAD_TARGET, "met": found["throughput_cost"] < OVERHEAD_TARGET}


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    lags = results["storm"]["lags_s"]
    left.plot([100 * i / max(1, len(lags) - 1) for i in range(len(lags))], lags)
    left.axhline(P99_LAG_TARGET_S, color="grey", linestyle="--", label="1 s")
    left.set(
        title=f"expiry lag of {results['storm']['holds']} holds due in one second", xlabel="percentile", ylabel="s"
    )
    left.legend()
    runs = results["overhead"]["runs"]
    for name, rows in runs.items():
        right.plot(range(1, len(rows) + 1), [r["per_s"] for r in rows], "o-", label=name)
    right.set(
        title="plain reserves/s, 16 connections, 100 pools, side by side",
        xlabel="round",
        ylabel="reserves/s",
        ylim=(0, None),
    )
    right.legend()
    save_figure(fig, path)


def main() -> None:
    exit_cleanly_on_sigterm()
    parser = argument_parser(__doc__)
    parser.add_argument("--holds", type=int, default=100_000)
    add_side_by_side_options(parser)
    parser.add_argument("--parts", default="storm,overhead", help="a trial run of one part writes no results")
    args = parser.parse_args()
    parts = args.parts.split(",")
    results: dict[str, Any] = {}
    if "storm" in parts:
        print("storm:", flush=True)
        results["storm"] = storm(args.holds)
    if "overhead" in parts:
        print("plain reserves, side by side:", flush=True)
        results["overhead"] = overhead(args.rounds, args.seconds)
    print(f"\n{command_line()}")
    if "storm" in results:
        storm_results = results["storm"]
        during, lag = storm_results["reserves_during_storm"], storm_results["expiry_lag_ms"]
        print(
            f"  storm: {storm_results['expired']} of {args.holds} holds expired; reserves during it: median "
            f"{during['median_ms']:.1f} ms, p99 {during['p99_ms']:.1f} ms (target < {P99_RESERVE_TARGET_MS:.0f}); "
            f"expiry lag median {lag.get('median_ms', float('nan')) / 1000:.2f} s, "
            f"p99 {lag.get('p99_ms', float('nan')) / 1000:.2f} s (target < {P99_LAG_TARGET_S:.0f})"
        )
    if "overhead" in results:
        mean = results["overhead"]["mean_per_s"]
        print(
            f"  plain reserves: {mean['with_holds']:.0f}/s with holds, {mean['holds_off']:.0f}/s machinery off: "
            f"cost {results['overhead']['throughput_cost']:+.1%} (target < {OVERHEAD_TARGET:.0%})"
        )
    if set(results) == {"storm", "overhead"}:  # one current file: only a whole run replaces it
        write_results_and_plot("holds", results, lambda png: plot(results, png))


if __name__ == "__main__":
    main()
