"""Journal benchmarks: append throughput by batch size, and recovery time of one pool with 10k and 100k
events, with and without snapshots, on SQLite and on Cassandra (a local node started for the run).

Setup: `scripts/setup dev` once; then

    .venv/bin/python benchmarks/journal.py                 # both stores
    .venv/bin/python benchmarks/journal.py --stores sqlite --append-seconds 2

Events are real pool events (a configure, then 3 reserves for every release), written through
``PoolWriter`` exactly as the service writes them, in group-commit batches of 64, with the snapshot
policy of the service (every 1,000 events) for the "with snapshots" pool.
Results: benchmarks/results/journal.json and journal.png.
"""

from __future__ import annotations

import random
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import argument_parser, exit_cleanly_on_sigterm, summarize, write_results_and_plot
from benchmarks._journals import journal_settings
from capacity_service.adapters.codec import Codec
from capacity_service.adapters.journal import Journal, NewEvent, open_journal
from capacity_service.application.pool_writer import PoolWriter
from capacity_service.application.recovery import recover_pool
from capacity_service.domain import (
    CapacityReserved,
    ConfigurePool,
    PoolCommand,
    Release,
    Reserve,
    new_reservation_id,
)
from capacity_service.settings import SnapshotSettings

GROUP_COMMIT = 64
SNAPSHOT_EVERY = 1000


def bench_append(journal: Journal, batch_size: int, seconds: float) -> dict[str, Any]:
    codec = Codec()
    pool_id = f"append-{batch_size}-{uuid.uuid4().hex[:8]}"
    sample = codec.encode_event(CapacityReserved(new_reservation_id(pool_id), 1, uuid.uuid4().hex))
    batch = [NewEvent(sample.event_type, sample.schema_version, sample.payload)] * batch_size
    epoch = journal.claim_epoch(pool_id)
    latencies: list[float] = []
    seq_nr = 0
    warm_until = time.perf_counter() + 1.0  # JIT, caches and connections warm, then measure
    while time.perf_counter() < warm_until:
        seq_nr = journal.append(pool_id, seq_nr, epoch, batch)
    first_measured = seq_nr
    began = time.perf_counter()
    while time.perf_counter() - began < seconds:
        t0 = time.perf_counter()
        seq_nr = journal.append(pool_id, seq_nr, epoch, batch)
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - began
    return {
        "batch_size": batch_size,
        "appends": len(latencies),
        "events_per_s": (seq_nr - first_measured) / elapsed,
        "appends_per_s": len(latencies) / elapsed,
        "append_latency": summarize(latencies),
    }


def pool_commands(pool_id: str, n_events: int, rng: random.Random) -> Iterator[PoolCommand]:
    yield ConfigurePool(capacity=10_000_000, zone="bench")
    active: list[str] = []
    for _ in range(n_events - 1):
        if active and rng.random() < 0.25:
            yield Release(active.pop(rng.randrange(len(active))))
        else:
            rid = new_reservation_id(pool_id)
            active.append(rid)
            yield Reserve(rng.randint(1, 3), uuid.uuid4().hex, rid)


def build_pool(journal: Journal, n_events: int, snapshots: bool) -> str:
    pool_id = f"recovery-{n_events}-{'snap' if snapshots else 'nosnap'}-{uuid.uuid4().hex[:8]}"
    writer = PoolWriter(pool_id, journal, snapshots=SnapshotSettings(every_n_events=SNAPSHOT_EVERY, keep=2))
    writer.start()
    batch: list[PoolCommand] = []
    for command in pool_commands(pool_id, n_events, random.Random(n_events)):
        batch.append(command)
        if len(batch) == GROUP_COMMIT:
            writer.execute(batch)
            batch = []
            if snapshots:
                writer.snapshot_if_due()
    writer.execute(batch)
    assert writer.seq_nr == n_events, writer.seq_nr
    return pool_id


def bench_recovery(journal: Journal, n_events: int, snapshots: bool, repeats: int) -> dict[str, Any]:
    pool_id = build_pool(journal, n_events, snapshots)
    codec = Codec()
    times: list[float] = []
    recovered = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        recovered = recover_pool(journal, codec, pool_id)
        times.append(time.perf_counter() - t0)
    assert recovered is not None and recovered.seq_nr == n_events
    result: dict[str, Any] = {
        "events": n_events,
        "snapshots": snapshots,
        "snapshot_seq_nr": recovered.snapshot_seq_nr,
        "events_replayed": recovered.events_replayed,
        "reservations_in_state": len(recovered.state.reservations),
        "recovery": summarize(times),
    }
    if not snapshots:
        result["replay_events_per_s"] = n_events / sorted(times)[len(times) // 2]
    return result


@contextmanager
def open_store(store: str) -> Iterator[Journal]:
    with journal_settings(store) as settings, open_journal(settings) as journal:
        yield journal


def run_store(
    store: str, append_seconds: float, sizes: list[int], repeats: int, say: Callable[[str], None]
) -> dict[str, Any]:
    out: dict[str, Any] = {"append": [], "recovery": []}
    with open_store(store) as journal:
        for batch_size in (1, 10, 100):
            r = bench_append(journal, batch_size, append_seconds)
            out["append"].append(r)
            lat = r["append_latency"]
            say(
                f"{store:9} append batch={batch_size:<3} {r['events_per_s']:>9.0f} events/s "
                f"{r['appends_per_s']:>7.0f} appends/s  latency median {lat['median_ms']:.2f} ms "
                f"p99 {lat['p99_ms']:.2f} ms"
            )
        for n_events in sizes:
            for snapshots in (False, True):
                r = bench_recovery(journal, n_events, snapshots, repeats)
                out["recovery"].append(r)
                rec = r["recovery"]
                extra = (
                    f" replay {r['replay_events_per_s']:.0f} events/s"
                    if not snapshots
                    else (f" (snapshot at {r['snapshot_seq_nr']}, {r['events_replayed']} events after it)")
                )
                kind = "with" if snapshots else "without"
                say(
                    f"{store:9} recover {n_events:>6} events {kind:7} snapshots: "
                    f"median {rec['median_ms']:.0f} ms p99 {rec['p99_ms']:.0f} ms "
                    f"({r['reservations_in_state']} reservations){extra}"
                )
    return out


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    stores = list(results)
    width = 0.8 / max(1, len(stores))
    for i, store in enumerate(stores):
        appends = results[store]["append"]
        xs = [j + i * width for j in range(len(appends))]
        left.bar(xs, [a["events_per_s"] for a in appends], width, label=store)
        left.set_xticks(
            [j + width * (len(stores) - 1) / 2 for j in range(len(appends))],
            [f"batch {a['batch_size']}" for a in appends],
        )
        recs = results[store]["recovery"]
        labels = [f"{r['events'] // 1000}k {'snap' if r['snapshots'] else 'full'}" for r in recs]
        xs = [j + i * width for j in range(len(recs))]
        right.bar(xs, [r["recovery"]["median_ms"] for r in recs], width, label=store)
        right.set_xticks([j + width * (len(stores) - 1) / 2 for j in range(len(recs))], labels)
    left.set_title("append throughput (events/s, higher is better)")
    left.set_yscale("log")
    right.set_title("recovery of one pool (median ms, lower is better)")
    right.axhline(300, color="red", linestyle="--", linewidth=1, label="target 300 ms (with snapshots)")
    right.set_yscale("log")
    left.legend()
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--stores", default="sqlite,cassandra")
    parser.add_argument("--append-seconds", type=float, default=5.0)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    exit_cleanly_on_sigterm()
    results: dict[str, Any] = {}
    for store in args.stores.split(","):
        results[store] = run_store(
            store,
            args.append_seconds,
            [int(s) for s in args.sizes.split(",")],
            args.repeats,
            lambda line: print(line, flush=True),
        )
    write_results_and_plot("journal", results, lambda png: plot(results, png))


if __name__ == "__main__":
    main()
