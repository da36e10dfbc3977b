"""The availability stream under load, on `capacity-service start` as it starts by default (SQLite journal,
one HTTP replica answering HTTP itself, so every stream client is on that one replica), everything created
over HTTP:

Setup: `scripts/setup dev` once; then

    .venv/bin/python benchmarks/availability_stream.py [--clients 1000] [--zones 50] [--pools-per-zone 10]
        [--rate 1000] [--seconds 20] [--rounds 3]

``--zones`` zones of ``--pools-per-zone`` pools each (1,000,000,000 units: a pool's remaining only goes
down, so each reserve's answer names the one change that shows it). Reserves of one unit on a random pool
come at a paced ``--rate`` per second (an open loop: each is sent when it is due, answered or not; 32
connections), for ``--seconds``, in two phases per round: with ``--clients`` clients of
`GET /v1/availability/stream?zone=` connected (spread evenly over the zones), and with none; ``--rounds``
rounds, every other one in reverse order, so that the machine's drift falls on both alike.

Reported:

- change-to-client latency: from a reserve's 201 (when the load generator read it) to the moment each
  client of that pool's zone read an event of that pool whose remaining is at or below the one the 201
  answered (an event may carry several reserves: the views are coalesced on their way). Target: p99 under
  250 ms. An event read before its 201 counts as 0.
- reserves per second answered 201, with and without the clients, and their latency from when each was
  due. Target: with the clients within 10% of without.
- whether the load generator kept up: the clients run in a process of their own (asyncio protocols, one
  regex per read), the reserves in this one; each one's CPU share, how late the reserves started (p99 over
  50 ms: the generator set the pace) and the clients' event-loop delay (p99 over 20 ms: they read late).
  The clients, the reserves and the service share this machine's 2 cores; the service's CPU per process
  is recorded for each phase.

Results: benchmarks/results/availability_stream.json and .png.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import random
import re
import statistics
import sys
import tempfile
import time
from array import array
from bisect import bisect_left
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (
    ConnectionPool,
    argument_parser,
    command_line,
    exit_cleanly_on_sigterm,
    paced,
    pool_request,
    save_figure,
    send_all,
    service_cpu_shares,
    started_service,
    summarize,
    write_results_and_plot,
)

LATENCY_TARGET_MS = 250.0
RATE_TARGET = 0.10  # the reserve rate with clients within this share of the rate without
CAPACITY = 1_000_000_000
RESERVE_CONNECTIONS = 32
SETTLE_S = 1.0  # after the clients connect, and after the last reserve before they go
LOOP_TICK_S = 0.01  # the clients' event-loop delay is sampled this often
# The load generator set the pace itself, rather than the service, when its reserves started this late (p99:
# a few reserves' worth at 1,000/s, while the service's answers take tens of ms), or its clients read their
# sockets this late (their event loop busy: the latency they measure would be theirs).
RESERVES_LATE_MS = 50.0
CLIENTS_LATE_MS = 20.0


def say(line: str) -> None:
    print(line, flush=True)


def pool_id(zone: int, pool: int) -> str:
    return f"live-{zone:03d}-{pool:03d}"


def zone_name(zone: int) -> str:
    return f"live-{zone:03d}"


# --- the clients, in a process of their own ------------------------------------------------------------------

# An event's pool and remaining, from the compact JSON of its data line (pool_id comes first, remaining later).
_EVENT = re.compile(rb'data: \{"pool_id":"live-(\d+)-(\d+)".*?"remaining":(\d+)')


class StreamClient(asyncio.Protocol):
    """One client of the stream: the time each event was read, with its pool (index in the zone) and
    remaining. The least work per read: the times are taken at the read, the events are parsed by one regex."""

    def __init__(self, port: int, zone: int) -> None:
        self.zone = zone
        self.request = (
            f"GET /v1/availability/stream?zone={zone_name(zone)} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Accept: text/event-stream\r\n\r\n"
        ).encode()
        self.status = 0
        self.answered: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.ended = False
        self.times = array("d")
        self.pools = array("i")
        self.remaining = array("q")
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        buffer = self._buffer + data
        if not self.status:
            head, found, rest = buffer.partition(b"\r\n\r\n")
            if not found:
                self._buffer = buffer
                return
            self.status = int(head.split(b" ", 2)[1])
            if not self.answered.done():
                self.answered.set_result(self.status)
            buffer = rest
        complete, _, self._buffer = buffer.rpartition(b"\n\n")
        for match in _EVENT.finditer(complete):
            self.times.append(now)
            self.pools.append(int(match.group(2)))
            self.remaining.append(int(match.group(3)))

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        if not self.answered.done():
            self.answered.set_result(0)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def _connect(port: int, zones: list[int]) -> list[StreamClient]:
    loop = asyncio.get_running_loop()
    clients: list[StreamClient] = []
    gate = asyncio.Semaphore(64)

    async def one(zone: int) -> None:
        async with gate:
            client = StreamClient(port, zone)
            clients.append(client)
            try:
                await loop.create_connection(lambda: client, "127.0.0.1", port)
                await asyncio.wait_for(client.answered, 30)
            except (OSError, TimeoutError):
                client.ended = True

    await asyncio.gather(*(one(zone) for zone in zones))
    return clients


async def _loop_delays(delays: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        due = time.monotonic() + LOOP_TICK_S
        await asyncio.sleep(LOOP_TICK_S)
        delays.append(time.monotonic() - due)


async def _serve_parent(port: int, zones: list[int], parent: Connection) -> None:
    """Each "connect" opens every client and answers how they were answered; each "close" closes them and
    sends back what they read, with this process's CPU share and event-loop delays meanwhile."""
    loop = asyncio.get_running_loop()
    while True:
        command = await loop.run_in_executor(None, parent.recv)
        if command == "exit":
            return
        began, began_cpu = time.monotonic(), time.process_time()
        clients = await _connect(port, zones)
        statuses: dict[str, int] = {}
        for client in clients:
            statuses[str(client.status)] = statuses.get(str(client.status), 0) + 1
        parent.send({"statuses": statuses})
        delays: list[float] = []
        stop = asyncio.Event()
        ticker = asyncio.create_task(_loop_delays(delays, stop))
        assert await loop.run_in_executor(None, parent.recv) == "close"
        stop.set()
        await ticker
        dropped = sum(client.ended for client in clients if client.status == 200)
        for client in clients:
            client.close()
        elapsed = time.monotonic() - began
        parent.send(
            {
                "clients": [
                    (c.zone, c.times.tobytes(), c.pools.tobytes(), c.remaining.tobytes())
                    for c in clients
                    if c.status == 200
                ],
                "dropped": dropped,
                "cpu_share": (time.process_time() - began_cpu) / elapsed,
                "loop_delay_ms": summarize(delays) if delays else {},
            }
        )


def run_clients(port: int, zones: list[int], parent: Connection) -> None:
    """The clients' process (the parent's commands over ``parent``)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, len(zones) + 256)), hard))
    asyncio.run(_serve_parent(port, zones, parent))


@dataclass
class ClientsRead:
    """What the clients of one phase read: per client its zone and its events (time, pool, remaining)."""

    statuses: dict[str, int]
    clients: list[tuple[int, array[float], array[int], array[int]]] = field(default_factory=list)
    dropped: int = 0
    cpu_share: float = 0.0
    loop_delay_ms: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, statuses: dict[str, int], sent: dict[str, Any]) -> ClientsRead:
        clients = []
        for zone, times, pools, remaining in sent["clients"]:
            t, p, r = array("d"), array("i"), array("q")
            t.frombytes(times)
            p.frombytes(pools)
            r.frombytes(remaining)
            clients.append((zone, t, p, r))
        return cls(statuses, clients, sent["dropped"], sent["cpu_share"], sent["loop_delay_ms"])


# --- the reserves --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answered:
    zone: int
    pool: int
    remaining: int
    at: float  # time.monotonic() when the 201 was read


_REMAINING = re.compile(rb'"remaining":(\d+)')


async def _reserves(
    port: int, zones: int, pools_per_zone: int, rate: float, seconds: float, seed: int
) -> tuple[dict[str, Any], list[Answered]]:
    rng = random.Random(seed)
    targets = [(rng.randrange(zones), rng.randrange(pools_per_zone)) for _ in range(int(rate * seconds))]
    answered: list[Answered] = []
    connections = ConnectionPool(port, RESERVE_CONNECTIONS)

    async def reserve(i: int) -> str:
        zone, pool = targets[i]
        body = json.dumps({"pool_id": pool_id(zone, pool)}).encode()
        status, answer = await connections.request("POST", "/v1/reservations", body)
        if status != 201:
            return str(status)
        found = _REMAINING.search(answer)
        assert found is not None, answer
        answered.append(Answered(zone, pool, int(found.group(1)), time.monotonic()))
        return "ok"

    try:
        run = await paced(rate, seconds, reserve)
    finally:
        connections.close()
    return run.summary(), answered


def reserves(
    port: int, zones: int, pools_per_zone: int, rate: float, seconds: float, seed: int
) -> tuple[dict[str, Any], list[Answered]]:
    return asyncio.run(_reserves(port, zones, pools_per_zone, rate, seconds, seed))


# --- change to client ----------------------------------------------------------------------------------------


def change_to_client(answers: list[Answered], read: ClientsRead) -> tuple[list[float], int, int]:
    """For every 201 and every client of its zone, the seconds from the 201 to the client's first event of
    that pool at or below the remaining it answered; also how many were read before the 201 (counted as 0)
    and how many never came."""
    # Per client and pool: the remaining of each event (never rising) and when it was read.
    by_zone: dict[int, list[dict[int, tuple[list[int], list[float]]]]] = {}
    for zone, times, pools, remaining in read.clients:
        per_pool: dict[int, tuple[list[int], list[float]]] = {}
        for t, p, r in zip(times, pools, remaining, strict=True):
            negated, at = per_pool.setdefault(p, ([], []))
            negated.append(-r)  # ascending, for bisect
            at.append(t)
        by_zone.setdefault(zone, []).append(per_pool)
    latencies: list[float] = []
    early = missing = 0
    for answer in answers:
        for per_pool in by_zone.get(answer.zone, []):
            negated, at = per_pool.get(answer.pool, ([], []))
            k = bisect_left(negated, -answer.remaining)
            if k == len(negated):
                missing += 1
                continue
            latency = at[k] - answer.at
            if latency < 0:
                early += 1
            latencies.append(max(0.0, latency))
    return latencies, early, missing


# --- the run -------------------------------------------------------------------------------------------------


def run(args: Any) -> dict[str, Any]:
    zones = [k % args.zones for k in range(args.clients)]
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp, started_service(Path(tmp)) as port:
        requests = [
            pool_request(pool_id(z, p), CAPACITY, zone_name(z))
            for z in range(args.zones)
            for p in range(args.pools_per_zone)
        ]
        send_all(port, "PUT", requests, expected=(201,))
        say(f"  {len(requests)} pools in {args.zones} zones created over HTTP")
        ours, theirs = context.Pipe()
        process = context.Process(target=run_clients, args=(port, zones, theirs), daemon=True)
        process.start()
        try:
            reserves(port, args.zones, args.pools_per_zone, args.rate, 3, seed=0)  # warm-up
            rounds = []
            for number in range(args.rounds):
                phases = ["without", "with"] if number % 2 == 0 else ["with", "without"]
                found: dict[str, Any] = {}
                for phase in phases:
                    seed = 1 + 2 * number + (phase == "with")
                    if phase == "without":
                        with service_cpu_shares(port) as cpu:
                            found["without"], _ = reserves(
                                port, args.zones, args.pools_per_zone, args.rate, args.seconds, seed
                            )
                        found["without"]["service_cpu"] = _named(cpu)
                        continue
                    ours.send("connect")
                    statuses = ours.recv()["statuses"]
                    time.sleep(SETTLE_S)
                    with service_cpu_shares(port) as cpu:
                        summary, answers = reserves(
                            port, args.zones, args.pools_per_zone, args.rate, args.seconds, seed
                        )
                    summary["service_cpu"] = _named(cpu)
                    time.sleep(SETTLE_S)
                    ours.send("close")
                    read = ClientsRead.of(statuses, ours.recv())
                    latencies, early, missing = change_to_client(answers, read)
                    found["with"] = summary
                    found["clients"] = {
                        "statuses": read.statuses,
                        "dropped": read.dropped,
                        "events_read": sum(len(times) for _, times, _, _ in read.clients),
                        "events_read_per_s": sum(len(times) for _, times, _, _ in read.clients) / summary["took_s"],
                        "cpu_share": read.cpu_share,
                        "loop_delay_ms": read.loop_delay_ms,
                    }
                    found["change_to_client"] = {
                        **(summarize(latencies) if latencies else {}),
                        "read_before_the_201": early,
                        "never_read": missing,
                        "sample_s": sorted(latencies)[:: max(1, len(latencies) // 1_000)],
                    }
                rounds.append(found)
                latency = found["change_to_client"]
                say(
                    f"  round {number + 1}: reserves {found['without']['ok_per_s']:.0f}/s without clients "
                    f"(p99 {found['without']['p99_ms']:.1f} ms), {found['with']['ok_per_s']:.0f}/s with "
                    f"{found['clients']['statuses']} (p99 {found['with']['p99_ms']:.1f} ms); change to client "
                    f"median {latency.get('median_ms', float('nan')):.0f} ms, "
                    f"p99 {latency.get('p99_ms', float('nan')):.0f} ms over {latency.get('n', 0)} (client, reserve) "
                    f"pairs; clients' CPU {found['clients']['cpu_share']:.0%}, loop delay p99 "
                    f"{found['clients']['loop_delay_ms'].get('p99_ms', float('nan')):.0f} ms"
                )
        finally:
            ours.send("exit")
            process.join(30)
    return verdict(args, rounds)


def _named(cpu: dict[str, float]) -> dict[str, float]:
    """The service's CPU in cores by process, the noticeable ones, named shortly (``ray::PoolActor``)."""
    return {name.rsplit("/", 1)[-1]: round(share, 3) for name, share in cpu.items() if share >= 0.01}


def verdict(args: Any, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    every_latency = [s for r in rounds for s in r["change_to_client"]["sample_s"]]
    p99s = [r["change_to_client"].get("p99_ms", float("inf")) for r in rounds]
    with_rate = statistics.mean(r["with"]["ok_per_s"] for r in rounds)
    without_rate = statistics.mean(r["without"]["ok_per_s"] for r in rounds)
    connected = [r["clients"]["statuses"].get("200", 0) for r in rounds]
    generator_late = any(
        (r[phase]["start_delay_p99_ms"] or 0) > RESERVES_LATE_MS for r in rounds for phase in ("with", "without")
    ) or any(r["clients"]["loop_delay_ms"].get("p99_ms", 0) > CLIENTS_LATE_MS for r in rounds)
    return {
        "clients": args.clients,
        "zones": args.zones,
        "pools_per_zone": args.pools_per_zone,
        "offered_reserves_per_s": args.rate,
        "seconds_per_phase": args.seconds,
        "rounds": rounds,
        "change_to_client_p99_ms_per_round": p99s,
        "change_to_client_p99_ms_worst_round": max(p99s),
        "change_to_client_median_ms": statistics.median(every_latency) * 1000 if every_latency else None,
        "reserves_per_s": {"with_clients": with_rate, "without_clients": without_rate},
        "rate_with_over_without": with_rate / without_rate if without_rate else None,
        "clients_connected_per_round": connected,
        "load_generator": {
            "reserves_cpu_share": [r[p]["load_generator_cpu_share"] for r in rounds for p in ("without", "with")],
            "clients_cpu_share": [r["clients"]["cpu_share"] for r in rounds],
            "clients_loop_delay_p99_ms": [r["clients"]["loop_delay_ms"].get("p99_ms") for r in rounds],
            "reserves_start_delay_p99_ms": [r[p]["start_delay_p99_ms"] for r in rounds for p in ("without", "with")],
            "was_the_bottleneck": generator_late,
        },
        "targets": {
            "change_to_client_p99_ms_under": LATENCY_TARGET_MS,
            "change_to_client_met": max(p99s) < LATENCY_TARGET_MS,
            "rate_within": RATE_TARGET,
            "rate_met": without_rate > 0 and with_rate >= (1 - RATE_TARGET) * without_rate,
            "every_client_connected": all(n == args.clients for n in connected),
            "none_dropped": all(r["clients"]["dropped"] == 0 for r in rounds),
        },
    }


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for number, found in enumerate(results["rounds"], 1):
        sample = found["change_to_client"]["sample_s"]
        left.plot(
            [100 * i / max(1, len(sample) - 1) for i in range(len(sample))],
            [s * 1000 for s in sample],
            label=f"round {number}",
        )
    left.axhline(LATENCY_TARGET_MS, color="grey", linestyle="--", label=f"{LATENCY_TARGET_MS:.0f} ms")
    left.set(
        title=f"change to client, {results['clients']} clients on one replica",
        xlabel="percentile",
        ylabel="ms",
    )
    left.legend()
    rounds = range(1, len(results["rounds"]) + 1)
    for phase, label in (("without", "no clients"), ("with", f"{results['clients']} clients")):
        right.plot(rounds, [r[phase]["ok_per_s"] for r in results["rounds"]], "o-", label=f"{label}: reserves/s")
    right.axhline(results["offered_reserves_per_s"], color="grey", linestyle="--", label="offered")
    right.set(
        title="reserves answered 201 per second (paced, open loop)", xlabel="round", ylabel="per s", ylim=(0, None)
    )
    right.legend()
    save_figure(fig, path)


def main() -> None:
    exit_cleanly_on_sigterm()
    parser = argument_parser(__doc__)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--zones", type=int, default=50)
    parser.add_argument("--pools-per-zone", type=int, default=10)
    parser.add_argument("--rate", type=float, default=1000.0, help="reserves per second, paced")
    parser.add_argument("--seconds", type=float, default=20.0, help="of each phase")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    say("availability stream:")
    results = run(args)
    targets = results["targets"]
    say(f"\n{command_line()}")
    say(
        f"  change to client: median {results['change_to_client_median_ms']:.0f} ms, p99 per round "
        f"{[round(p) for p in results['change_to_client_p99_ms_per_round']]} ms (target < {LATENCY_TARGET_MS:.0f}: "
        f"{'met' if targets['change_to_client_met'] else 'NOT met'})"
    )
    rates = results["reserves_per_s"]
    say(
        f"  reserves: {rates['with_clients']:.0f}/s with {results['clients']} clients, "
        f"{rates['without_clients']:.0f}/s without (offered {results['offered_reserves_per_s']:.0f}/s): "
        f"{results['rate_with_over_without']:.3f} "
        f"(target >= {1 - RATE_TARGET:.2f}: {'met' if targets['rate_met'] else 'NOT met'}); every client connected: "
        f"{targets['every_client_connected']}, none dropped: {targets['none_dropped']}; load generator the "
        f"bottleneck: {results['load_generator']['was_the_bottleneck']}"
    )
    write_results_and_plot("availability_stream", results, lambda png: plot(results, png))


if __name__ == "__main__":
    main()
