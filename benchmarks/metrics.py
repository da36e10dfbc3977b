"""What metrics cost, and what they show, on `capacity-service start` as a user runs it (defaults: SQLite
journal, warehouse on, metrics on) and with `--no-metrics`, everything created over HTTP:

Setup: `scripts/setup dev` once; then

    .venv/bin/python benchmarks/metrics.py [--rounds 20] [--seconds 3]

1. The cost on the reserve path, side by side: `start` (the default: metrics on) and `start --no-metrics`,
   running at once, 100 pools each. First what each uses while nobody calls it (every process of its
   session, Ray's agents included, over 20 s); then ``--rounds`` rounds in which 16 connections reserve on
   one for ``--seconds``, then on the other, the order alternating, so that the machine's drift falls on
   both (``_common.side_by_side``; target: under 5% of throughput).
2. The series, as a dashboard shows them: in one more run with metrics on (``--series-seconds``), the
   metrics endpoint is scraped every 2 s (requests/s by status, answer p99 from the histogram, journal
   append time, commands queued, holds pending while holds are placed) and plotted.

The load comes from the benchmarks' lean HTTP/1.1 client (``_common.LeanConnection``) on the same 2
cores. Results: benchmarks/results/metrics.json and .png.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (
    LeanConnection,
    add_side_by_side_options,
    argument_parser,
    command_line,
    exit_cleanly_on_sigterm,
    idle_cpu_share,
    reserve_during,
    save_figure,
    seed_pools,
    side_by_side,
    started_service,
    write_results,
)

OVERHEAD_TARGET = 0.05
POOLS = [f"m-{i}" for i in range(100)]
SCRAPE_EVERY_S = 2.0
WINDOW_S = 20.0  # two of Ray's exports at least


def scrape(url: str) -> dict[str, float]:
    """The service's series (``ray_capacity_*``), summed over their labels but the ones named in the key:
    ``name{label=value}`` for the few kept apart, ``name`` for the rest."""
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    series: dict[str, float] = {}
    for line in text.splitlines():
        found = re.match(r"^(ray_capacity_\w+)(?:\{(.*)\})? (\S+)$", line)
        if not found:
            continue
        name, labels, value = found.group(1), dict(re.findall(r'(\w+)="([^"]*)"', found.group(2) or "")), found.group(3)
        kept = {k: labels[k] for k in ("status", "le", "route") if k in labels}
        if name == "ray_capacity_http_requests_total":
            kept.pop("route", None)
        elif "route" in kept and kept["route"] != "/v1/reservations":
            continue
        key = name + ("{" + ",".join(f"{k}={v}" for k, v in sorted(kept.items())) + "}" if kept else "")
        series[key] = series.get(key, 0.0) + float(value)
    return series


def quantile_from_buckets(buckets: dict[float, float], q: float) -> float | None:
    """The ``q`` quantile (seconds) of a cumulative Prometheus histogram's bucket increments."""
    total = buckets.get(float("inf"), 0.0)
    if total <= 0:
        return None
    for bound in sorted(buckets):
        if buckets[bound] >= q * total:
            return bound
    return None


def watch(url: str, until: float, into: list[dict[str, Any]]) -> None:
    while time.time() < until:
        with contextlib.suppress(OSError):
            into.append({"t": time.time(), "series": scrape(url)})
        time.sleep(SCRAPE_EVERY_S)


def place_holds_meanwhile(port: int, until: float) -> None:
    """A trickle of 10-second holds on one pool, so that the holds' series move too."""

    async def run() -> None:
        connection = LeanConnection(port)
        try:
            while time.time() < until:
                body = b'{"pool_id": "m-0", "hold_seconds": 10}'
                await connection.request("POST", "/v1/reservations", body)
                await asyncio.sleep(0.05)
        finally:
            connection.close()

    asyncio.run(run())


def series_round(seconds: float, scrapes: list[dict[str, Any]]) -> None:
    """``start`` (metrics on) under reserves for ``seconds``, holds placed meanwhile, its endpoint scraped."""
    from devenv._process import free_port

    metrics_port = free_port()
    options = ["--metrics-port", str(metrics_port)]
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as tmp, started_service(Path(tmp), *options) as port:
        seed_pools(port, POOLS)
        asyncio.run(reserve_during(port, POOLS, time.time() + 2))  # warm-up
        until = time.time() + seconds
        helpers = [
            threading.Thread(target=watch, args=(f"http://127.0.0.1:{metrics_port}/metrics", until + 6, scrapes)),
            threading.Thread(target=place_holds_meanwhile, args=(port, until)),
        ]
        for helper in helpers:
            helper.start()
        asyncio.run(reserve_during(port, POOLS, until, connections=16))
        for helper in helpers:
            helper.join()


def series_over_time(scrapes: list[dict[str, Any]]) -> dict[str, list[float | None]]:
    """Rates over the last ``WINDOW_S`` and levels at each scrape, as a dashboard plots them:
    Ray's agent updates what it exports about every 10 s, each process on its own beat: a window of two."""
    out: dict[str, list[float | None]] = {k: [] for k in ("t", "ok_per_s", "refused_per_s", "p99_ms", "append_ms")}
    out.update({"queued": [], "holds_pending": []})
    start = scrapes[0]["t"] if scrapes else 0.0
    for index, after in enumerate(scrapes):
        earlier = [s for s in scrapes[:index] if after["t"] - s["t"] >= WINDOW_S]
        if not earlier:
            continue
        before = earlier[-1]
        dt = after["t"] - before["t"]
        a, b = after["series"], before["series"]

        def delta(key: str, a: dict[str, float] = a, b: dict[str, float] = b) -> float:
            return a.get(key, 0.0) - b.get(key, 0.0)

        out["t"].append(after["t"] - start)
        out["ok_per_s"].append(delta("ray_capacity_http_requests_total{status=201}") / dt)
        refused = sum(delta(k) for k in a if k.startswith("ray_capacity_http_requests_total{status=") and "=2" not in k)
        out["refused_per_s"].append(refused / dt)
        prefix = "ray_capacity_http_request_seconds_bucket_total{le="
        buckets = {
            float(k[len(prefix) : k.index(",")].replace("+Inf", "inf")): delta(k)
            for k in a
            if k.startswith(prefix) and "route=/v1/reservations" in k
        }
        p99 = quantile_from_buckets(buckets, 0.99)
        out["p99_ms"].append(None if p99 is None else p99 * 1000)
        count = delta("ray_capacity_journal_append_seconds_count_total")
        appending = delta("ray_capacity_journal_append_seconds_sum_total")
        out["append_ms"].append(appending / count * 1000 if count else None)
        out["queued"].append(a.get("ray_capacity_commands_queued", 0.0))
        out["holds_pending"].append(a.get("ray_capacity_holds_pending", 0.0))
    return out


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    series = results["series"]
    fig, axes = plt.subplots(2, 3, figsize=(15, 7))
    panels = [
        ("answered reserves /s (201) and refusals /s (4xx, 5xx)", ["ok_per_s", "refused_per_s"], "/s"),
        ("reserve answer p99 (histogram bucket)", ["p99_ms"], "ms"),
        ("journal group commit, mean", ["append_ms"], "ms"),
        ("commands queued for pool writers", ["queued"], "commands"),
        ("holds pending", ["holds_pending"], "holds"),
    ]
    for axis, (title, keys, unit) in zip(axes.flat, panels, strict=False):
        for key in keys:
            axis.plot(series["t"], series[key], label=key)
        axis.set(title=title, xlabel="s", ylabel=unit)
        axis.legend(fontsize=7)
    cost = axes.flat[5]
    for name, rows in results["overhead"]["runs"].items():
        cost.plot(range(1, len(rows) + 1), [r["per_s"] for r in rows], "o-", label=name)
    cost.set(title="reserves/s, 16 connections, 100 pools", xlabel="round", ylabel="reserves/s", ylim=(0, None))
    cost.legend(fontsize=7)
    save_figure(fig, path)


def overhead(rounds: int, seconds: float) -> dict[str, Any]:
    """``start`` and ``start --no-metrics``, running at once: first what each uses while idle (Ray's metrics
    agent, its exports), then plain reserves side by side (``_common.side_by_side``)."""
    with contextlib.ExitStack() as running:
        ports = {
            name: running.enter_context(
                started_service(Path(running.enter_context(tempfile.TemporaryDirectory())), *options)
            )
            for name, options in (("metrics_on", ()), ("metrics_off", ("--no-metrics",)))
        }
        for port in ports.values():
            seed_pools(port)
        idle = {name: idle_cpu_share(port) for name, port in ports.items()}
        print("  idle: " + ", ".join(f"{name} {share:.1%} of a core" for name, share in idle.items()), flush=True)
        found = side_by_side(ports, rounds, seconds)
    return {
        **found,
        "idle_cpu_share": idle,
        "target_under": OVERHEAD_TARGET,
        "met": found["throughput_cost"] < OVERHEAD_TARGET,
    }


def main() -> None:
    exit_cleanly_on_sigterm()
    parser = argument_parser(__doc__)
    add_side_by_side_options(parser)
    parser.add_argument("--series-seconds", type=float, default=60.0)
    a = parser.parse_args()
    print(command_line(), flush=True)
    found = overhead(a.rounds, a.seconds)
    scrapes: list[dict[str, Any]] = []  # a round of its own: the scrapes and the holds are extra load
    series_round(a.series_seconds, scrapes)
    results = {
        "overhead": found,
        "series": series_over_time(scrapes),
        "scraped": scrapes,
        "scrapes": len(scrapes),
    }
    mean, idle = found["mean_per_s"], found["idle_cpu_share"]
    print(
        f"  metrics cost {found['throughput_cost']:.1%} of reserves/s ({mean['metrics_on']:.0f} on vs "
        f"{mean['metrics_off']:.0f} off; target < {OVERHEAD_TARGET:.0%}); idle: {idle['metrics_on']:.1%} of a core "
        f"on, {idle['metrics_off']:.1%} off",
        flush=True,
    )
    path = write_results("metrics", results)
    plot(results, path.with_suffix(".png"))
    print(f"  wrote {path} and {path.with_suffix('.png').name}", flush=True)


if __name__ == "__main__":
    main()
