"""Webhook deliveries under load, on `capacity-service start` as it starts by default (SQLite journal),
with the one option a receiver on this machine needs (`--allow-private-webhook-targets`), everything over
HTTP:

Setup: `scripts/setup dev` once; then

    .venv/bin/python benchmarks/webhooks.py [--rate 1000] [--seconds 60] [--down-seconds 300]
        [--after-seconds 30] [--pools 100] [--down-mode refuse|503] [--parts lag,outage]

The receiver is an asyncio HTTP/1.1 server in a process of its own, on loopback, registered with
`PUT /v1/webhooks/bench` for `pool.sold_out` and `pool.back_on_sale`. It checks every delivery's signature
as docs/http-api.md says (HMAC-SHA256 of the timestamp, a dot and the body, and the timestamp within 5
minutes) and records when it read each one. The events: ``--pools`` pools of capacity 1 (all in one zone),
on which a reserve (the pool sells out) and a release (it is back on sale) take turns, a paced ``--rate``
of them per second in all (an open loop; each pool's next one waits for its last answer), so that every
answered reserve or release is exactly one webhook event, ``<pool>/<seq_nr>/0``. What should arrive is read
back over HTTP at the end: each pool's version (its last seq_nr); every event from seq_nr 2 (the first
after the pool's creation) to it.

1. lag: ``--seconds`` of events with the receiver up. The lag of each event is from its ``occurred_at``
   (when the journal recorded it, in the body) to the moment the receiver read its POST (the 2xx follows at
   once). Target: p99 under 1 s.
2. outage: the receiver goes down (``--down-mode refuse``: its listening socket and connections closed, so
   connections are refused; ``503``: it answers 503) for ``--down-seconds`` (the target's 5 minutes) while
   the events go on at the same rate, comes back, and the events go on for ``--after-seconds`` more; then
   they stop, and the run waits until everything arrived. Target: every event delivered (duplicates are
   allowed and counted: at least once), in order per pool (each pool's events first read in seq_nr order),
   none lost. Reported: how long after coming back the receiver had every event that happened while it was
   down, and every event.

The load, the receiver and the service share this machine's 2 cores. Results: benchmarks/results/webhooks.json
and .png (a trial run of one part writes no results).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import multiprocessing
import re
import socket
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (
    ConnectionPool,
    LeanConnection,
    answers_of,
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

LAG_TARGET_S = 1.0
SECRET = "benchmark-receiver-secret-0123456789"
WEBHOOK_ID = "bench"
EVENTS = ["pool.sold_out", "pool.back_on_sale"]
SIGNATURE_TOLERANCE_S = 300
CONNECTIONS = 32
# How long the run waits, after the events stopped, for the last ones to arrive.
DRAIN_TIMEOUT_S = 1_800.0


def say(line: str) -> None:
    print(line, flush=True)


def pool_id(k: int) -> str:
    return f"wh-{k:04d}"


# --- the receiver, in a process of its own -------------------------------------------------------------------


@dataclass
class Arrival:
    at: float  # time.time() when the POST was read
    event_id: str
    occurred_at: float  # the body's occurred_at, as a Unix time


class Receiver(asyncio.Protocol):
    """One connection of the receiver: HTTP/1.1 requests with a Content-Length body, kept alive; each POST
    is checked and recorded, then answered (200, or 503 while the receiver is told to fail)."""

    def __init__(self, state: ReceiverState) -> None:
        self._state = state
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._state.connections.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._state.connections.discard(self._transport)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            head, found, rest = self._buffer.partition(b"\r\n\r\n")
            if not found:
                return
            headers = {}
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower().decode()] = value.strip().decode()
            length = int(headers.get("content-length", "0"))
            if len(rest) < length:
                return
            body, self._buffer = rest[:length], rest[length:]
            status = self._state.received(headers, body)
            assert self._transport is not None
            reason = b"OK" if status == 200 else b"Service Unavailable"
            self._transport.write(b"HTTP/1.1 %d %s\r\ncontent-length: 0\r\n\r\n" % (status, reason))


_SIGNATURE = re.compile(r"v1=[0-9a-f]{64}")


@dataclass
class ReceiverState:
    secret: bytes
    failing: bool = False
    arrivals: list[Arrival] = field(default_factory=list)
    refused: int = 0  # POSTs answered 503
    bad_signatures: int = 0
    connections: set[asyncio.Transport] = field(default_factory=set)

    def received(self, headers: dict[str, str], body: bytes) -> int:
        now = time.time()
        if self.failing:
            self.refused += 1
            return 503
        timestamp = headers.get("x-capacity-timestamp", "")
        signature = headers.get("x-capacity-signature", "")
        expected = "v1=" + hmac.new(self.secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        fresh = timestamp.isdigit() and abs(now - int(timestamp)) <= SIGNATURE_TOLERANCE_S
        if not (fresh and _SIGNATURE.fullmatch(signature) and hmac.compare_digest(expected, signature)):
            self.bad_signatures += 1
            return 401
        event = json.loads(body)
        occurred = datetime.fromisoformat(event["occurred_at"]).timestamp()
        self.arrivals.append(Arrival(now, event["id"], occurred))
        return 200


async def _receive(port: int, secret: str, parent: Connection) -> None:
    """Answers the parent's commands: "up", "down refuse" (connections refused), "down 503", "take" (the
    arrivals so far, handed over and forgotten here), "exit"."""
    loop = asyncio.get_running_loop()
    state = ReceiverState(secret.encode())

    async def listen() -> asyncio.Server:
        return await loop.create_server(lambda: Receiver(state), "127.0.0.1", port, reuse_address=True, backlog=512)

    server: asyncio.Server | None = await listen()
    parent.send("listening")
    while True:
        command = await loop.run_in_executor(None, parent.recv)
        if command == "exit":
            break
        if command == "take":
            taken, state.arrivals = state.arrivals, []
            parent.send(
                {
                    "arrivals": [(a.at, a.event_id, a.occurred_at) for a in taken],
                    "refused": state.refused,
                    "bad_signatures": state.bad_signatures,
                }
            )
            continue
        if command == "down 503":
            state.failing = True
        elif command == "down refuse" and server is not None:
            server.close()
            for transport in list(state.connections):
                transport.abort()
            await server.wait_closed()
            server = None
        elif command == "up":
            state.failing = False
            if server is None:
                server = await listen()
        parent.send("done")
    if server is not None:
        server.close()


def run_receiver(port: int, secret: str, parent: Connection) -> None:
    asyncio.run(_receive(port, secret, parent))


class ReceiverProcess:
    """The receiver's process, and the commands the benchmark sends it."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        context = multiprocessing.get_context("spawn")
        self._ours, theirs = context.Pipe()
        self._process = context.Process(target=run_receiver, args=(self.port, SECRET, theirs), daemon=True)
        self._process.start()
        assert self._ours.recv() == "listening"
        self.arrivals: list[tuple[float, str, float]] = []
        self.seen: set[str] = set()
        self.refused = self.bad_signatures = 0

    def tell(self, command: str) -> None:
        self._ours.send(command)
        assert self._ours.recv() == "done"

    def take(self) -> None:
        """Fetch what arrived since the last ``take`` into ``arrivals`` and ``seen``."""
        self._ours.send("take")
        found = self._ours.recv()
        self.arrivals += found["arrivals"]
        self.seen.update(event_id for _, event_id, _ in found["arrivals"])
        self.refused, self.bad_signatures = found["refused"], found["bad_signatures"]

    def take_all(self) -> list[tuple[float, str, float]]:
        """Every arrival since the last ``take_all``, forgotten here."""
        self.take()
        taken, self.arrivals, self.seen = self.arrivals, [], set()
        return taken

    def close(self) -> None:
        self._ours.send("exit")
        self._process.join(30)


# --- the events ----------------------------------------------------------------------------------------------


class Turns:
    """Reserve and release taking turns on each pool of capacity 1: every answered one is one webhook event
    (the pool sells out, or is back on sale). A pool's next call waits for its last answer."""

    def __init__(self, port: int, pools: int) -> None:
        self._port = port
        self._pools = pools
        self._held: list[str | None] = [None] * pools

    async def during(self, rate: float, seconds: float) -> dict[str, Any]:
        """Calls at ``rate`` per second for ``seconds`` (``_common.paced``): its summary."""
        locks = [asyncio.Lock() for _ in range(self._pools)]
        connections = ConnectionPool(self._port, CONNECTIONS)

        async def call(i: int) -> str:
            k = i % self._pools
            async with locks[k]:
                held = self._held[k]
                if held is None:
                    body = json.dumps({"pool_id": pool_id(k)}).encode()
                    status, answer = await connections.request("POST", "/v1/reservations", body)
                    if status == 201:
                        self._held[k] = json.loads(answer)["reservation_id"]
                        return "ok"
                else:
                    status, answer = await connections.request("DELETE", f"/v1/reservations/{held}")
                    if status == 200:
                        self._held[k] = None
                        return "ok"
                return str(status)

        try:
            return (await paced(rate, seconds, call)).summary()
        finally:
            connections.close()


def expected_events(port: int, pools: int) -> set[str]:
    """Every webhook event the receiver should get: each pool's events after its creation (seq_nr 1)."""
    answers = answers_of(port, "GET", [(f"/v1/pools/{pool_id(k)}", None) for k in range(pools)])
    return {f"{a['pool_id']}/{seq}/0" for a in answers for seq in range(2, a["version"] + 1)}


def webhook_status(port: int) -> dict[str, Any]:
    [answer] = answers_of(port, "GET", [(f"/v1/webhooks/{WEBHOOK_ID}", None)], connections=1)
    status: dict[str, Any] = answer["status"]
    return status


# --- checking what arrived -----------------------------------------------------------------------------------


def _seq(event_id: str) -> tuple[str, int]:
    stream, seq, _ = event_id.rsplit("/", 2)
    return stream, int(seq)


def check(arrivals: list[tuple[float, str, float]], expected: set[str]) -> dict[str, Any]:
    """Every expected event arrived (at least once), each pool's first arrivals in seq_nr order, nothing
    arrived that was not expected; duplicates counted."""
    seen: set[str] = set()
    duplicates = 0
    last_seq: dict[str, int] = {}
    out_of_order = 0
    for _, event_id, _ in sorted(arrivals):
        if event_id in seen:
            duplicates += 1
            continue
        seen.add(event_id)
        stream, seq = _seq(event_id)
        if seq < last_seq.get(stream, 0):
            out_of_order += 1
        last_seq[stream] = seq
    lost = sorted(expected - seen, key=_seq)
    unexpected = sorted(seen - expected, key=_seq)
    return {
        "expected": len(expected),
        "arrived": len(seen),
        "duplicates": duplicates,
        "lost": len(lost),
        "lost_first": lost[:10],
        "unexpected": len(unexpected),
        "out_of_order": out_of_order,
        "every_event_once_or_more_in_order": not lost and not unexpected and out_of_order == 0,
    }


def first_lags(arrivals: list[tuple[float, str, float]]) -> list[float]:
    """Per event, from its occurred_at to its first arrival."""
    first: dict[str, tuple[float, float]] = {}
    for at, event_id, occurred in arrivals:
        if event_id not in first or at < first[event_id][0]:
            first[event_id] = (at, occurred)
    return [at - occurred for at, occurred in first.values()]


# --- the parts -----------------------------------------------------------------------------------------------


def wait_for_everything(receiver: ReceiverProcess, expected: set[str], timeout_s: float) -> float | None:
    """Seconds until every expected event has arrived (None: not within ``timeout_s``)."""
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        receiver.take()
        if expected <= receiver.seen:
            return time.monotonic() - began
        time.sleep(0.5)
    return None


def lag_part(
    port: int, receiver: ReceiverProcess, turns: Turns, rate: float, seconds: float, pools: int
) -> dict[str, Any]:
    before = expected_events(port, pools)
    receiver.take_all()
    with service_cpu_shares(port) as cpu:
        load = asyncio.run(turns.during(rate, seconds))
    expected = expected_events(port, pools) - before
    drained = wait_for_everything(receiver, expected, 120)
    arrivals = [a for a in receiver.take_all() if a[1] not in before]
    lags = first_lags(arrivals)
    summary = summarize(lags) if lags else {}
    return {
        "events_per_s": load,
        "service_cpu": {name.rsplit("/", 1)[-1]: share for name, share in cpu.items() if share >= 0.01},
        "lag_ms": summary,
        "lags_s": sorted(lags)[:: max(1, len(lags) // 2_000)],
        "drained_after_s": drained,
        "checked": check(arrivals, expected),
        "bad_signatures": receiver.bad_signatures,
        "webhook_status": webhook_status(port),
        "met": bool(lags) and summary["p99_ms"] / 1000 < LAG_TARGET_S,
    }


def outage_part(
    port: int,
    receiver: ReceiverProcess,
    turns: Turns,
    rate: float,
    down_seconds: float,
    after_seconds: float,
    pools: int,
    mode: str,
) -> dict[str, Any]:
    before = expected_events(port, pools)
    receiver.take_all()
    receiver.tell(f"down {mode}")
    say(f"  receiver down ({mode}) for {down_seconds:.0f} s while events go on")
    while_down = asyncio.run(turns.during(rate, down_seconds))
    status_while_down = webhook_status(port)
    happened_while_down = expected_events(port, pools) - before
    receiver.tell("up")
    up_at = time.time()
    say(f"  receiver back; {len(happened_while_down)} events happened while it was down")
    after = asyncio.run(turns.during(rate, after_seconds))
    expected = expected_events(port, pools) - before
    everything = wait_for_everything(receiver, expected, DRAIN_TIMEOUT_S)
    arrivals = [a for a in receiver.take_all() if a[1] not in before]
    first = {event_id: at for at, event_id, _ in sorted(arrivals, reverse=True)}
    return {
        "mode": mode,
        "down_seconds": down_seconds,
        "events_while_down": len(happened_while_down),
        "load_while_down": while_down,
        "load_after": after,
        "status_while_down": status_while_down,
        "refused_posts": receiver.refused,
        "bad_signatures": receiver.bad_signatures,
        # From the receiver's return to the first arrival of the last of the events that happened while it was
        # down, and of every event.
        "caught_up_with_the_outage_s": _last_first_arrival(first, happened_while_down, up_at),
        "everything_arrived_s": _last_first_arrival(first, expected, up_at) if everything is not None else None,
        "checked": check(arrivals, expected),
        "arrivals_per_s_after_up": _per_second(arrivals, up_at),
        "met": everything is not None
        and receiver.bad_signatures == 0
        and check(arrivals, expected)["every_event_once_or_more_in_order"],
    }


def _last_first_arrival(first: dict[str, float], events: set[str], since: float) -> float | None:
    if not events or any(event_id not in first for event_id in events):
        return None
    return max(first[event_id] for event_id in events) - since


def _per_second(arrivals: list[tuple[float, str, float]], since: float) -> list[int]:
    counts = Counter(int(at - since) for at, _, _ in arrivals if at >= since)
    return [counts.get(k, 0) for k in range(max(counts, default=-1) + 1)]


def run(args: Any, parts: list[str]) -> dict[str, Any]:
    results: dict[str, Any] = {"pools": args.pools, "offered_events_per_s": args.rate}
    receiver = ReceiverProcess()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="bench-webhooks-") as tmp,
            started_service(Path(tmp), "--allow-private-webhook-targets") as port,
        ):
            send_all(port, "PUT", [pool_request(pool_id(k), 1, "wh") for k in range(args.pools)], expected=(201,))
            registration = {"url": f"http://127.0.0.1:{receiver.port}/hooks", "events": EVENTS, "secret": SECRET}
            status, answer = asyncio.run(_put(port, f"/v1/webhooks/{WEBHOOK_ID}", registration))
            if status != 201:
                raise RuntimeError(f"registering the webhook: {status} {answer[:300]!r}")
            turns = Turns(port, args.pools)
            asyncio.run(turns.during(args.rate, 3))  # warm-up
            if "lag" in parts:
                say(f"lag: {args.rate:.0f} events/s for {args.seconds:.0f} s, receiver up")
                results["lag"] = lag_part(port, receiver, turns, args.rate, args.seconds, args.pools)
                lag = results["lag"]
                say(
                    f"  lag median {lag['lag_ms'].get('median_ms', float('nan')):.0f} ms, p99 "
                    f"{lag['lag_ms'].get('p99_ms', float('nan')):.0f} ms over {lag['lag_ms'].get('n', 0)} events "
                    f"({lag['events_per_s']['ok_per_s']:.0f} events/s made); {lag['checked']}"
                )
            if "outage" in parts:
                say(f"outage: the receiver down for {args.down_seconds:.0f} s at {args.rate:.0f} events/s")
                results["outage"] = outage_part(
                    port,
                    receiver,
                    turns,
                    args.rate,
                    args.down_seconds,
                    args.after_seconds,
                    args.pools,
                    args.down_mode,
                )
                outage = results["outage"]
                say(
                    f"  {outage['events_while_down']} events while down; caught up with them "
                    f"{outage['caught_up_with_the_outage_s']} s after it came back, everything after "
                    f"{outage['everything_arrived_s']} s; {outage['checked']}"
                )
    finally:
        receiver.close()
    return results


async def _put(port: int, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
    connection = LeanConnection(port)
    try:
        return await connection.request("PUT", path, json.dumps(body).encode())
    finally:
        connection.close()


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    lags = results["lag"]["lags_s"]
    left.plot([100 * i / max(1, len(lags) - 1) for i in range(len(lags))], lags)
    left.axhline(LAG_TARGET_S, color="grey", linestyle="--", label=f"{LAG_TARGET_S:.0f} s")
    left.set(
        title=f"webhook lag, {results['offered_events_per_s']:.0f} events/s, receiver up",
        xlabel="percentile",
        ylabel="s",
    )
    left.legend()
    outage = results["outage"]
    per_s = outage["arrivals_per_s_after_up"]
    right.plot(range(len(per_s)), per_s)
    right.set(
        title=f"deliveries per s after a {outage['down_seconds']:.0f} s outage ({outage['events_while_down']} events)",
        xlabel="s after the receiver came back",
        ylabel="events/s",
    )
    save_figure(fig, path)


def main() -> None:
    exit_cleanly_on_sigterm()
    parser = argument_parser(__doc__)
    parser.add_argument("--rate", type=float, default=1000.0, help="events per second, paced")
    parser.add_argument("--seconds", type=float, default=60.0, help="of the lag part")
    parser.add_argument("--down-seconds", type=float, default=300.0)
    parser.add_argument("--after-seconds", type=float, default=30.0, help="of events after the receiver is back")
    parser.add_argument("--pools", type=int, default=100)
    parser.add_argument("--down-mode", choices=("refuse", "503"), default="refuse")
    parser.add_argument("--parts", default="lag,outage", help="a trial run of one part writes no results")
    args = parser.parse_args()
    parts = args.parts.split(",")
    results = run(args, parts)
    say(f"\n{command_line()}")
    if "lag" in results:
        lag = results["lag"]
        say(
            f"  lag: median {lag['lag_ms']['median_ms']:.0f} ms, p99 {lag['lag_ms']['p99_ms']:.0f} ms at "
            f"{lag['events_per_s']['ok_per_s']:.0f} events/s (target p99 < {LAG_TARGET_S:.0f} s: "
            f"{'met' if lag['met'] else 'NOT met'})"
        )
    if "outage" in results:
        outage = results["outage"]
        say(
            f"  outage of {outage['down_seconds']:.0f} s: {outage['checked']['expected']} events, "
            f"{outage['checked']['lost']} lost, {outage['checked']['out_of_order']} out of order, "
            f"{outage['checked']['duplicates']} duplicates; everything arrived "
            f"{outage['everything_arrived_s']} s after the receiver came back (target: every event, "
            f"in order, none lost: {'met' if outage['met'] else 'NOT met'})"
        )
    if set(results) >= {"lag", "outage"}:
        results["targets"] = {
            "lag_p99_s_under": LAG_TARGET_S,
            "lag_met": results["lag"]["met"],
            "every_signature_checked_out": results["lag"]["bad_signatures"] == results["outage"]["bad_signatures"] == 0,
            "outage_every_event_in_order_met": results["outage"]["met"],
        }
        write_results_and_plot("webhooks", results, lambda png: plot(results, png))


if __name__ == "__main__":
    main()
