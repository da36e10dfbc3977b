"""Warehouse benchmarks: sustained events/s into Parquet and into PostgreSQL, and the lag from a reserve's
reply to its row being queryable in the warehouse.

Setup: `scripts/setup dev` once; then

    .venv/bin/python benchmarks/warehouse.py                       # both parts, both sinks
    .venv/bin/python benchmarks/warehouse.py --parts throughput --events 400000

Throughput: rows of 500 pools, interleaved as a busy cluster produces them (one timestamp per group-commit
batch of 64), written through the sink in batches of the stream's default ``flush_rows``. PostgreSQL is a
local server with fsync on (``durable=True``), as in production.
Lag: a local Ray with pool actors (sharded, SQLite journal), the warehouse stream at its default flush
interval (1 s); the driver reserves at a steady rate and a poller queries the warehouse every 50 ms for the
request ids it has seen (the poll period bounds the resolution).
Results: benchmarks/results/warehouse.json and warehouse.png.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (
    RESULTS,
    argument_parser,
    exit_cleanly_on_sigterm,
    local_postgres,
    summarize,
    write_results,
)
from capacity_service.adapters.warehouse import WarehouseRow, WarehouseSink, open_sink
from capacity_service.adapters.warehouse.rows import Delivery, next_rows
from capacity_service.domain import CapacityReleased, CapacityReserved, PoolConfigured, PoolEvent
from capacity_service.settings import (
    HostingSettings,
    ParquetSinkSettings,
    ServiceSettings,
    SqlJournalSettings,
    SqlSinkSettings,
    WarehouseSettings,
)

POOLS = 500
GROUP_COMMIT = 64


def busy_cluster_rows(n: int) -> list[WarehouseRow]:
    """``n`` rows over ``POOLS`` pools, interleaved, one timestamp per group-commit batch."""
    cursors = {f"bench-{p}": Delivery(f"bench-{p}") for p in range(POOLS)}
    pool_ids = list(cursors)
    start = datetime.now(UTC)
    rows: list[WarehouseRow] = []
    for i in range(n):
        pool_id = pool_ids[i % POOLS]
        before = cursors[pool_id]
        event: PoolEvent
        if before.seq_nr == 0:
            event = PoolConfigured(1_000_000, f"zone-{i % 50}", start, start + timedelta(hours=2))
        elif before.seq_nr % 4 == 0:
            event = CapacityReleased(f"{pool_id}.r{before.seq_nr - 1}", 1)
        else:
            event = CapacityReserved(f"{pool_id}.r{before.seq_nr + 1}", 1, uuid.uuid4().hex)
        occurred_at = start + timedelta(milliseconds=i // GROUP_COMMIT)
        (row,) = next_rows(before, before.seq_nr + 1, event, occurred_at)  # none of these has parts
        rows.append(row)
        cursors[pool_id] = Delivery.after(row)
    return rows


def bench_throughput(name: str, sink: WarehouseSink, rows: list[WarehouseRow], batch: int) -> dict[str, Any]:
    sink.write(rows[:batch])  # schema, connections and caches warm
    latencies: list[float] = []
    began = time.perf_counter()
    for i in range(batch, len(rows), batch):
        t0 = time.perf_counter()
        sink.write(rows[i : i + batch])
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - began
    return {
        "sink": name,
        "batch_rows": batch,
        "events": len(rows) - batch,
        "events_per_s": (len(rows) - batch) / elapsed,
        "batch_latency": summarize(latencies),
    }


def lag(sink: ParquetSinkSettings | SqlSinkSettings, journal_dir: Path, rate: float, seconds: float) -> dict[str, Any]:
    """Reserve at ``rate`` per second for ``seconds``; the time from each reply to its row being seen."""
    from capacity_service.client import AsyncCapacityClient
    from capacity_service.runtime._ray import kill_namespace

    settings = ServiceSettings(
        journal=SqlJournalSettings(url=f"sqlite:///{journal_dir / 'journal.db'}"),
        hosting=HostingSettings(mode="sharded", shards=2, namespace=f"bench-{uuid.uuid4().hex[:8]}"),
        warehouse=WarehouseSettings(sink=sink),  # the default flush interval
    )
    replied: dict[str, float] = {}
    seen: dict[str, float] = {}
    stop = threading.Event()
    poller = threading.Thread(target=poll_warehouse, args=(sink, seen, stop), daemon=True)

    async def drive() -> None:
        client = AsyncCapacityClient(settings)
        pool_ids = [f"lag-{n}-{uuid.uuid4().hex[:6]}" for n in range(50)]
        for pool_id in pool_ids:
            await client.configure_pool(pool_id, capacity=1_000_000, zone="bench")
        poller.start()
        began = time.monotonic()
        tasks: list[asyncio.Task[None]] = []

        async def reserve(n: int) -> None:
            request_id = f"lag-{n}-{uuid.uuid4().hex[:8]}"
            await client.reserve(pool_ids[n % len(pool_ids)], request_id=request_id)
            replied[request_id] = time.monotonic()

        n = 0
        while time.monotonic() - began < seconds:
            tasks.append(asyncio.ensure_future(reserve(n)))
            n += 1
            await asyncio.sleep(max(0.0, began + n / rate - time.monotonic()))
        await asyncio.gather(*tasks)

    try:
        asyncio.run(drive())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not set(replied) <= set(seen):
            time.sleep(0.1)
    finally:
        stop.set()
        kill_namespace(settings.hosting.namespace)
    lags = [max(0.0, seen[r] - t) for r, t in replied.items() if r in seen]
    return {
        "sink": "parquet" if sink.kind == "parquet" else "postgres",
        "reserves": len(replied),
        "rate_per_s": rate,
        "never_seen": len(set(replied) - set(seen)),
        "lag": summarize(lags),
        "lag_percentiles_s": percentiles(lags),
    }


def percentiles(samples: list[float]) -> list[float]:
    """The 0th, 1st, ..., 100th percentile (nearest rank): the CDF, small enough to keep in the results."""
    ordered = sorted(samples)
    return [ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] for q in range(101)]


def poll_warehouse(sink: ParquetSinkSettings | SqlSinkSettings, seen: dict[str, float], stop: threading.Event) -> None:
    read = request_ids_reader(sink)
    while not stop.is_set():
        now = time.monotonic()
        try:
            for request_id in read():
                seen.setdefault(request_id, now)
        except Exception as exc:  # e.g. a Parquet file moved away by compaction mid-read
            print(f"  poll: {exc}", flush=True)
        time.sleep(0.05)


def request_ids_reader(sink: ParquetSinkSettings | SqlSinkSettings) -> Callable[[], list[str]]:
    if isinstance(sink, ParquetSinkSettings):
        from capacity_service.adapters.warehouse.parquet import ParquetSink

        reader = ParquetSink(sink, owner="bench-reader")  # reading never recovers or writes

        def read_parquet() -> list[str]:
            table = reader.read_table(columns=["request_id"])
            return [r for r in table.column("request_id").to_pylist() if r and r.startswith("lag-")]

        return read_parquet
    from sqlalchemy import create_engine, text

    engine = create_engine(sink.url)

    def read_sql() -> list[str]:
        with engine.connect() as conn:
            query = text(f"SELECT request_id FROM {sink.table} WHERE request_id LIKE 'lag-%'")
            return [row[0] for row in conn.execute(query)]

    return read_sql


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    throughput = results.get("throughput", [])
    if throughput:
        names = [r["sink"] for r in throughput]
        left.bar(names, [r["events_per_s"] for r in throughput], color=["#4c72b0", "#dd8452"][: len(names)])
        for i, r in enumerate(throughput):
            left.annotate(f"{r['events_per_s']:,.0f}/s", (i, r["events_per_s"]), ha="center", va="bottom")
        left.set_title(f"sustained events/s into the sink (batches of {throughput[0]['batch_rows']:,})")
        left.set_ylabel("events per second")
    for r in results.get("lag", []):
        right.plot(
            r["lag_percentiles_s"],
            [q / 100 for q in range(101)],
            label=f"{r['sink']} (p99 {r['lag']['p99_ms']:.0f} ms)",
        )
    right.set_title("reserve reply -> row queryable (flush interval 1 s)")
    right.set_xlabel("seconds")
    right.set_ylabel("fraction of reserves")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    exit_cleanly_on_sigterm()
    parser = argument_parser(__doc__)
    parser.add_argument("--parts", default="throughput,lag")
    parser.add_argument("--sinks", default="parquet,postgres")
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--batch", type=int, default=WarehouseSettings().flush_rows)
    parser.add_argument("--repeats", type=int, default=3, help="throughput runs per sink (the median is reported)")
    parser.add_argument("--rate", type=float, default=200.0, help="reserves per second in the lag part")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the lag part")
    args = parser.parse_args()
    parts, sinks = args.parts.split(","), args.sinks.split(",")
    results: dict[str, Any] = {"throughput": [], "lag": []}

    with (
        tempfile.TemporaryDirectory(prefix="bench-warehouse-") as tmp_dir,
        contextmanager_or_none("postgres" in sinks, local_postgres) as postgres,
    ):
        tmp = Path(tmp_dir)
        if "throughput" in parts:
            rows = busy_cluster_rows(args.events)
            for name in sinks:
                runs = []
                for run in range(args.repeats):  # a fresh, empty sink each time
                    settings: ParquetSinkSettings | SqlSinkSettings = (
                        ParquetSinkSettings(path=str(tmp / f"throughput-parquet-{run}"))
                        if name == "parquet"
                        else SqlSinkSettings(
                            url=postgres.url,
                            table=f"throughput_events_{run}",
                            deliveries_table=f"throughput_cursors_{run}",
                        )
                    )
                    with open_sink(settings, owner="bench") as sink:
                        runs.append(bench_throughput(name, sink, rows, args.batch))
                # The run with the median events/s stands for the sink; every run's rate is kept.
                r = sorted(runs, key=lambda run: run["events_per_s"])[len(runs) // 2]
                r["events_per_s_of_runs"] = [round(run["events_per_s"]) for run in runs]
                results["throughput"].append(r)
                print(
                    f"throughput {name}: {r['events_per_s']:,.0f} events/s (median of {r['events_per_s_of_runs']}); "
                    f"batch of {args.batch:,}: "
                    f"median {r['batch_latency']['median_ms']:.1f} ms, p99 {r['batch_latency']['p99_ms']:.1f} ms",
                    flush=True,
                )
        if "lag" in parts:
            import ray

            ray.init(num_cpus=2, log_to_driver=False, include_dashboard=False)
            try:
                for name in sinks:
                    sink_settings: ParquetSinkSettings | SqlSinkSettings = (
                        ParquetSinkSettings(path=str(tmp / "lag-parquet"))
                        if name == "parquet"
                        else SqlSinkSettings(url=postgres.url, table="lag_events", deliveries_table="lag_cursors")
                    )
                    journal_dir = tmp / f"lag-journal-{name}"
                    journal_dir.mkdir()
                    r = lag(sink_settings, journal_dir, args.rate, args.seconds)
                    results["lag"].append(r)
                    print(
                        f"lag {name}: {r['reserves']} reserves at {args.rate:.0f}/s, reply -> row queryable: "
                        f"median {r['lag']['median_ms']:.0f} ms, p99 {r['lag']['p99_ms']:.0f} ms "
                        f"(never seen: {r['never_seen']})",
                        flush=True,
                    )
            finally:
                ray.shutdown()

    path = write_results("warehouse", results)
    plot(results, RESULTS / "warehouse.png")
    print(f"command: .venv/bin/python {' '.join(sys.argv)}\nresults: {path}, {RESULTS / 'warehouse.png'}")


@contextmanager
def contextmanager_or_none(enabled: bool, make: Callable[[], Any]) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    with make() as value:
        yield value


if __name__ == "__main__":
    main()
