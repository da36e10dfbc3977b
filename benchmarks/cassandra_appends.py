"""How a fenced append can be written to Cassandra, measured side by side in one run on a local Cassandra
2.1 started for it: what each layout option costs per pool append, with 16 appends in flight (the
decision record docs/decisions/0008 chose from these).

Setup: `scripts/setup dev` once; then

    .venv/bin/python benchmarks/cassandra_appends.py [--seconds 6] [--in-flight 16]

Options, each appending one 120-byte event per pool append, distinct pools in flight:
- plain: one unconditional INSERT (no fencing at all: the floor of any write);
- lwt_row: one INSERT ... IF NOT EXISTS (a Paxos round, one row);
- two_rounds: the events IF NOT EXISTS, then the head IF epoch AND seq_nr (the layout before 0008);
- static_head: the events and the head, held in static columns of the same partition, in ONE conditional
  batch (the layout 0008 chose);
- grouped_8: the heads of 8 pools as rows of one partition, advanced by one conditional batch (what
  batching pools into one Paxos round would cost: per pool, an eighth of a round, events not included);
- written_then_checked: the event and a head hint in one plain batch, then a read of the partition's
  epoch (static column): the layout decision 0011 chose, fenced by the read instead of a Paxos round;
- journal: the service's CassandraJournal.append_soon (written_then_checked plus the adapter's own work).
Results: benchmarks/results/cassandra_appends.json and .png.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (
    argument_parser,
    exit_cleanly_on_sigterm,
    local_cassandra,
    summarize,
    timed_calls,
    write_results_and_plot,
)
from capacity_service.adapters.journal import AppendRequest, NewEvent
from capacity_service.adapters.journal.cassandra import CassandraJournal
from capacity_service.settings import CassandraJournalSettings

PAYLOAD = b"x" * 120
GROUP = 8


def timed(append: Callable[[int, int], None], in_flight: int, seconds: float, pools_per_call: int) -> dict[str, Any]:
    latencies, elapsed = timed_calls(append, in_flight, seconds)
    return {
        "calls_per_s": round(len(latencies) / elapsed),
        "pool_appends_per_s": round(len(latencies) * pools_per_call / elapsed),
        **summarize(latencies),
    }


def measure(host: str, port: int, in_flight: int, seconds: float) -> dict[str, dict[str, Any]]:
    from cassandra.cluster import Cluster
    from cassandra.query import BatchStatement, BatchType

    cluster = Cluster([host], port=port, protocol_version=3)
    s = cluster.connect()
    s.execute(
        "CREATE KEYSPACE IF NOT EXISTS layouts WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"
    )
    s.execute("CREATE TABLE IF NOT EXISTS layouts.rows (k text PRIMARY KEY, v blob)")
    s.execute(
        "CREATE TABLE IF NOT EXISTS layouts.events (p text, n bigint, epoch bigint static, head bigint static, "
        "v blob, PRIMARY KEY (p, n))"
    )
    s.execute("CREATE TABLE IF NOT EXISTS layouts.heads (p text PRIMARY KEY, epoch bigint, head bigint)")
    s.execute(
        "CREATE TABLE IF NOT EXISTS layouts.group_heads (g text, p text, epoch bigint, head bigint, PRIMARY KEY (g, p))"
    )
    plain = s.prepare("INSERT INTO layouts.rows (k, v) VALUES (?, ?)")
    lwt_row = s.prepare("INSERT INTO layouts.rows (k, v) VALUES (?, ?) IF NOT EXISTS")
    event_if_absent = s.prepare("INSERT INTO layouts.events (p, n, v) VALUES (?, ?, ?) IF NOT EXISTS")
    event = s.prepare("INSERT INTO layouts.events (p, n, v) VALUES (?, ?, ?)")
    init_static = s.prepare("INSERT INTO layouts.events (p, epoch, head) VALUES (?, 1, 0) IF NOT EXISTS")
    advance_static = s.prepare("UPDATE layouts.events SET head = ? WHERE p = ? IF epoch = 1 AND head = ?")
    init_head = s.prepare("INSERT INTO layouts.heads (p, epoch, head) VALUES (?, 1, 0)")
    advance_head = s.prepare("UPDATE layouts.heads SET head = ? WHERE p = ? IF epoch = 1 AND head = ?")
    init_group = s.prepare("INSERT INTO layouts.group_heads (g, p, epoch, head) VALUES (?, ?, 1, 0)")
    advance_group = s.prepare("UPDATE layouts.group_heads SET head = ? WHERE g = ? AND p = ? IF epoch = 1 AND head = ?")
    run = uuid.uuid4().hex[:8]
    results: dict[str, dict[str, Any]] = {}

    results["plain"] = timed(lambda k, i: s.execute(plain, (f"{run}p{k}-{i}", PAYLOAD)), in_flight, seconds, 1)
    results["lwt_row"] = timed(lambda k, i: s.execute(lwt_row, (f"{run}l{k}-{i}", PAYLOAD)), in_flight, seconds, 1)

    for k in range(in_flight):
        s.execute(init_head, (f"{run}t{k}",))

    def two_rounds(k: int, i: int) -> None:
        pool = f"{run}t{k}"
        assert s.execute(event_if_absent, (pool, i + 1, PAYLOAD)).was_applied
        assert s.execute(advance_head, (i + 1, pool, i)).was_applied

    results["two_rounds"] = timed(two_rounds, in_flight, seconds, 1)

    for k in range(in_flight):
        s.execute(init_static, (f"{run}s{k}",))

    def static_head(k: int, i: int) -> None:
        pool = f"{run}s{k}"
        batch = BatchStatement(batch_type=BatchType.UNLOGGED)
        batch.add(advance_static, (i + 1, pool, i))
        batch.add(event, (pool, i + 1, PAYLOAD))
        assert s.execute(batch).was_applied

    results["static_head"] = timed(static_head, in_flight, seconds, 1)

    for k in range(in_flight):
        for j in range(GROUP):
            s.execute(init_group, (f"{run}g{k}", f"p{j}"))

    def grouped(k: int, i: int) -> None:
        batch = BatchStatement(batch_type=BatchType.UNLOGGED)
        for j in range(GROUP):
            batch.add(advance_group, (i + 1, f"{run}g{k}", f"p{j}", i))
        assert s.execute(batch).was_applied

    results[f"grouped_{GROUP}"] = timed(grouped, in_flight, seconds, GROUP)

    epoch_of = s.prepare("SELECT epoch FROM layouts.events WHERE p = ? LIMIT 1")
    head_hint = s.prepare("UPDATE layouts.events SET head = ? WHERE p = ?")
    for k in range(in_flight):
        s.execute(init_static, (f"{run}w{k}",))

    def written_then_checked(k: int, i: int) -> None:
        pool = f"{run}w{k}"
        batch = BatchStatement(batch_type=BatchType.UNLOGGED)
        batch.add(head_hint, (i + 1, pool))
        batch.add(event, (pool, i + 1, PAYLOAD))
        s.execute(batch)
        assert s.execute(epoch_of, (pool,)).one().epoch == 1

    results["written_then_checked"] = timed(written_then_checked, in_flight, seconds, 1)
    cluster.shutdown()

    journal = CassandraJournal(
        CassandraJournalSettings(contact_points=[host], port=port, protocol_version=3, keyspace="layouts_journal")
    )
    pools = [f"{run}j{k}" for k in range(in_flight)]
    epochs = journal.claim_epochs(pools)
    heads = [
        journal.append(pool, 0, epoch, [NewEvent("E", 1, PAYLOAD)]) for pool, epoch in zip(pools, epochs, strict=True)
    ]

    def through_journal(k: int, i: int) -> None:
        heads[k] = journal.append_soon(
            AppendRequest(pools[k], heads[k], epochs[k], [NewEvent("E", 1, PAYLOAD)])
        ).result()

    results["journal"] = timed(through_journal, in_flight, seconds, 1)
    journal.close()
    return results


def plot(results: dict[str, dict[str, Any]], path: Path, in_flight: int) -> None:
    import matplotlib.pyplot as plt

    names = list(results)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    bars = ax.bar(names, [results[n]["pool_appends_per_s"] for n in names])
    for bar, name in zip(bars, names, strict=True):
        r = results[name]
        ax.annotate(
            f"p50 {r['median_ms']:.0f} ms\np99 {r['p99_ms']:.0f} ms",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            fontsize=7,
        )
    ax.set_ylabel(f"pool appends/s ({in_flight} calls in flight)")
    ax.set_title("Cassandra 2.1 on 2 cores: what one fenced append costs, by layout")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--in-flight", type=int, default=16)
    args = parser.parse_args()
    exit_cleanly_on_sigterm()
    with local_cassandra() as (host, port):
        results = measure(host, port, args.in_flight, args.seconds)
    for name, r in results.items():
        print(
            f"{name:12} {r['pool_appends_per_s']:>7} pool appends/s  ({r['calls_per_s']} calls/s)  "
            f"median {r['median_ms']:.1f} ms  p99 {r['p99_ms']:.1f} ms"
        )
    write_results_and_plot(
        "cassandra_appends",
        {"in_flight": args.in_flight, "group": GROUP, "options": results},
        lambda png: plot(results, png, args.in_flight),
    )


if __name__ == "__main__":
    main()
