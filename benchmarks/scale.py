"""The service at scale, on its default configuration, run the way a user runs it: for each number of pools N,
`capacity-service start` on a fresh data dir, N pools created over HTTP, the whole service's memory, request
latency, and a cold restart.

Setup: `scripts/setup dev` once; then

    .venv/bin/python benchmarks/scale.py                                  # --pools 500 2000 10000
    .venv/bin/python benchmarks/scale.py --pools 20 50 --requests 200     # a smoke test
    .venv/bin/python benchmarks/scale.py --journal cassandra --pools 500 10000

``--journal postgres|cassandra``: the service on that journal, a fresh server for each N started here on
loopback (benchmarks/_journals.py), named to `start` through the environment as an operator would;
results in scale-JOURNAL.json. Default: the embedded SQLite journal.

For each N, on a fresh temporary data dir and a fresh service:

1. start: `.venv/bin/capacity-service start --data-dir DIR --port PORT` as a subprocess (its own session,
   RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, no other option: the default hosting, journal and warehouse), until
   GET /readyz answers 200;
2. create: N pools by `PUT /v1/pools/{id}` ({"capacity": 100, "zone": "z<k % 20>", a two-hour slot}), at most
   ``--create-concurrency`` (32) connections each sending one request at a time; the time from the first
   request to the last answer;
3. memory: the sum of PSS (/proc/PID/smaps_rollup; MB = 2^20 bytes, as in pool_actors.py) of every process
   of the service: the start process and all its descendants (through /proc/PID/task/*/children, or where
   the kernel has no such file, the parent pids in /proc/*/stat), plus any process outside that tree (one
   whose parent died, re-parented) that is still in the start process's session (it starts as the leader of
   a new one) or whose command line names the service's Ray session directory (found in its descendants'
   command lines) or its data dir; the JSON says how many of each kind were counted, and PSS by process
   name. Sampled after the pools are created, after the latency runs and after the restart; the
   largest sample is the figure reported;
4. latency: ``--requests`` (2,000) `POST /v1/availability` for zone z3 and the window of its first 25 slots
   (the same 25 pools at every N; the zone holds N/20), then as many `POST /v1/reservations {"pool_id":
   <random pool>, "quantity": 1}`, ``--in-flight`` (16) at a time, after ``--warmup`` (100) of each that are
   not counted; median and p99 of every answer, in ms;
5. cold restart: SIGINT to the start process, waited for until it exits; then the same command on the same
   data dir (on a newly chosen free port) and the time from that command until every pool answers
   `GET /v1/pools/{id}` with 200 (``--create-concurrency`` polls in flight); the reserved units of all
   pools are then checked against the reserves the service acknowledged;
6. stop: SIGINT, waited for, whether the steps passed or failed; processes of the service still alive 30 s
   after the start process exited are killed and counted in ``leftover_processes``.

Targets, drawn in the plot and checked in the JSON: 500 pools created in < 15 s; < 2 GB (2,048 MB) of PSS at
10,000 pools; a cold restart of 10,000 pools in < 30 s; availability p99 at 10,000 pools within 1.5x of its
p99 at 500. The load generator runs on the same 2 cores as the service, so latencies include its own CPU;
it is a lean HTTP/1.1 client (``benchmarks/_common.py``): httpx cost more CPU per request than the service.
Results: benchmarks/results/scale.json and benchmarks/results/scale.png (one current file each).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (
    LeanConnection,
    argument_parser,
    command_line,
    exit_cleanly_on_sigterm,
    summarize,
    wait_for_http,
    write_results_and_plot,
)
from benchmarks._journals import add_journal_option, journal_server, results_name
from capacity_service.runtime.environment import LOCAL_RAY
from devenv._process import free_ports, log_tail

CAPACITY = 100
ZONES = 20
AVAILABILITY_ZONE = "z3"
SLOT_BASE = datetime(2026, 12, 1, tzinfo=UTC)
CAPACITY_SERVICE = Path(sys.executable).with_name("capacity-service")  # .venv/bin/capacity-service

CREATE_500_S = 15.0
MEMORY_10000_MB = 2048.0
RESTART_10000_S = 30.0
AVAILABILITY_P99_RATIO = 1.5

# A Ray session directory, as it appears in the command lines of Ray's processes (--session-dir=..., ...).
_SESSION_DIR = re.compile(r"/[^\s=,;'\"]*?/session_\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_\d+_\d+")


def say(line: str) -> None:
    print(line, flush=True)


def pool_id(k: int) -> str:
    return f"pool-{k:05d}"


def pool_body(k: int) -> dict[str, Any]:
    start = SLOT_BASE + timedelta(hours=2 * (k // ZONES))
    return {
        "capacity": CAPACITY,
        "zone": f"z{k % ZONES}",
        "slot_start": start.isoformat(),
        "slot_end": (start + timedelta(hours=2)).isoformat(),
    }


# --- the service's processes (/proc) -------------------------------------------------------------------------


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return None


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after "pid (comm)": state, ppid, ... (starttime is index 19)."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    return stat[stat.rindex(")") + 2 :].split()  # comm may contain spaces and ")"


def _start_time(pid: int) -> str | None:
    """The start time of a live process (tells it apart from a later one with its pid); None once gone."""
    fields = _stat_fields(pid)
    return None if fields is None or fields[0] in "ZX" else fields[19]


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _has_children_files() -> bool:
    return any(Path(f"/proc/{os.getpid()}/task").glob("*/children"))


def process_tree(root: int) -> set[int]:
    """``root`` and all its live descendants.

    Through /proc/PID/task/*/children where the kernel has them (CONFIG_PROC_CHILDREN), else through the
    parent pid of every process in /proc/*/stat.
    """
    if _has_children_files():
        found: set[int] = set()
        todo = [root]
        while todo:
            pid = todo.pop()
            if pid in found or _start_time(pid) is None:
                continue
            found.add(pid)
            for children in Path(f"/proc/{pid}/task").glob("*/children"):
                todo.extend(int(c) for c in (_read(str(children)) or "").split())
        return found
    kids: dict[int, list[int]] = {}
    for pid in _all_pids():
        fields = _stat_fields(pid)
        if fields is not None and fields[0] not in "ZX":
            kids.setdefault(int(fields[1]), []).append(pid)
    tree = {root} if _start_time(root) is not None else set()
    todo = [root]
    while todo:
        for kid in kids.get(todo.pop(), []):
            if kid not in tree:
                tree.add(kid)
                todo.append(kid)
    return tree


def _cmdline(pid: int) -> list[str]:
    raw = _read(f"/proc/{pid}/cmdline")
    return [part for part in (raw or "").split("\0") if part]


def _process_name(pid: int) -> str:
    """A short name to group processes by: Ray's process title (ray::ServeReplica:..., ray::IDLE), or the
    program (and the script or module a Python runs)."""
    argv = _cmdline(pid)
    if not argv:
        return (_read(f"/proc/{pid}/comm") or "?").strip()
    if argv[0].startswith("ray::"):  # ray::ServeController.listen_for_change: the actor, not its method
        return argv[0].split()[0].split(".")[0]
    name = os.path.basename(argv[0].split()[0])
    if name.startswith("python"):
        rest = [arg for arg in argv[1:] if not arg.startswith("-") or arg == "-m"]
        if rest:
            return f"{name} {os.path.basename(rest[1] if rest[0] == '-m' and len(rest) > 1 else rest[0])}"
    return name


def _pss_kb(pid: int) -> tuple[int, int] | None:
    """(Pss, SwapPss) in kB, None if the process is gone or unreadable."""
    text = _read(f"/proc/{pid}/smaps_rollup")
    if text is None:
        return None
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("Pss", "SwapPss"):
            values[key] = int(rest.split()[0])
    return (values["Pss"], values.get("SwapPss", 0)) if "Pss" in values else None


@dataclass
class Service:
    """One `capacity-service start` subprocess and the processes it brings up."""

    data_dir: Path
    log_path: Path
    journal: dict[str, str] = field(default_factory=dict)  # the environment naming the journal, if not SQLite
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    session_dirs: set[str] = field(default_factory=set)
    session_id: int | None = None  # of the last start: its pid (the leader of a new session)
    session_started: int = 0  # its start time, in clock ticks since boot

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [str(CAPACITY_SERVICE), "start", "--data-dir", str(self.data_dir), "--port", str(self.port)]

    def start(self) -> None:
        self.port = free_ports(1)[0]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                cwd=self.data_dir.parent,
                env={**os.environ, **LOCAL_RAY, **self.journal},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C at the terminal goes to us only; we stop the service in order
            )
        self.session_id = self.proc.pid
        self.session_started = int(_start_time(self.proc.pid) or 0)

    def wait_ready(self, timeout: float) -> float:
        """Seconds from now until GET /readyz answers 200."""
        if self.proc is None:
            raise RuntimeError("the service was not started")
        return wait_for_http(f"{self.url}/readyz", self.proc, timeout)

    def check_running(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise RuntimeError(f"the service exited with {code}; its log:\n{log_tail(self.log_path)}")

    def members(self) -> dict[int, tuple[str, str]]:
        """Every process of the service: pid -> (how it was found, start time).

        "tree": the start process or one of its descendants. "outside tree": a process Ray re-parented (its
        parent died), found by what it kept: the start process's session id (the service runs as the leader
        of its own session, and Ray's processes do not leave it), or a command line naming the service's Ray
        session directory or data dir.
        """
        found: dict[int, tuple[str, str]] = {}
        leader = self.proc.pid if self.proc is not None and self.proc.poll() is None else None
        if leader is not None:
            for pid in process_tree(leader):
                start = _start_time(pid)
                if start is not None:
                    found[pid] = ("tree", start)
                    for arg in _cmdline(pid):
                        self.session_dirs.update(_SESSION_DIR.findall(arg))
        markers = [*self.session_dirs, str(self.data_dir.resolve())]
        for pid in _all_pids():
            if pid in found or pid == os.getpid():
                continue
            fields = _stat_fields(pid)
            if fields is None or fields[0] in "ZX":
                continue
            same_session = (
                self.session_id is not None
                and fields[3] == str(self.session_id)
                and int(fields[19]) >= self.session_started
            )
            if same_session or any(marker in " ".join(_cmdline(pid)) for marker in markers):
                found[pid] = ("outside tree", fields[19])
        return found

    def memory(self) -> dict[str, Any]:
        """PSS of every process of the service, in MB (2^20 bytes), with a breakdown by process name."""
        pss_kb = swap_kb = 0
        counted: Counter[str] = Counter()
        by_name: dict[str, dict[str, float]] = {}
        for pid, (how, _) in self.members().items():
            sample = _pss_kb(pid)
            if sample is None:
                continue
            pss_kb += sample[0]
            swap_kb += sample[1]
            counted[how] += 1
            entry = by_name.setdefault(_process_name(pid), {"processes": 0, "pss_mb": 0.0})
            entry["processes"] += 1
            entry["pss_mb"] += sample[0] / 1024
        return {
            "pss_mb": pss_kb / 1024,
            "swap_pss_mb": swap_kb / 1024,
            "processes": sum(counted.values()),
            "in_process_tree": counted["tree"],
            "outside_tree": counted["outside tree"],
            "ray_session_dirs": sorted(self.session_dirs),
            "by_name": dict(sorted(by_name.items(), key=lambda item: -item[1]["pss_mb"])),
        }

    def stop(self, timeout: float = 180) -> dict[str, Any]:
        """SIGINT (what Ctrl-C sends), wait for the start process to exit and for every process of the service
        to be gone; kill whatever is left after that and count it."""
        proc = self.proc
        if proc is None:
            return {}
        members = self.members()
        members.pop(proc.pid, None)
        began = time.monotonic()
        timed_out = False
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                proc.kill()
                proc.wait()
        stop_s = time.monotonic() - began
        deadline = time.monotonic() + (0 if timed_out else 30)
        alive = _alive(members)
        while alive and time.monotonic() < deadline:
            time.sleep(0.2)
            alive = _alive(members)
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc = None
        return {
            "exit_code": proc.returncode,
            "stop_s": stop_s,
            "timed_out": timed_out,
            "leftover_processes": len(alive),
            "clean": proc.returncode == 0 and not timed_out and not alive,
        }


def _alive(members: dict[int, tuple[str, str]]) -> list[int]:
    return [pid for pid, (_, start) in members.items() if _start_time(pid) == start]


# --- HTTP ----------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a batch of requests got: each answer's latency, the statuses and the transport errors."""

    latencies_s: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    last_body: Any = None

    def record(self, began: float, status: int | None, body: bytes = b"", error: str | None = None) -> None:
        if status is None:
            self.statuses[error or "error"] += 1
            return
        self.latencies_s.append(time.perf_counter() - began)
        self.statuses[str(status)] += 1
        if status < 300:
            self.last_body = body


async def run_requests(
    port: int, method: str, requests: Sequence[tuple[str, dict[str, Any]]], in_flight: int
) -> Outcome:
    """Send ``requests`` (path, JSON body) over ``in_flight`` connections, one request at a time each. The
    client is lean (``LeanConnection``): with httpx, its own CPU on the 2 shared cores was most of each p99."""
    outcome = Outcome()
    queue: Iterator[tuple[str, dict[str, Any]]] = iter(requests)

    async def worker() -> None:
        connection = LeanConnection(port)
        try:
            for path, body in queue:  # shared iterator: each request is sent once
                began = time.perf_counter()
                try:
                    status, answer = await connection.request(method, path, json.dumps(body).encode())
                except (OSError, asyncio.IncompleteReadError, StopIteration, ValueError) as exc:
                    outcome.record(began, None, error=type(exc).__name__)
                    continue
                outcome.record(began, status, answer)
        finally:
            connection.close()

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    if isinstance(outcome.last_body, bytes):
        outcome.last_body = json.loads(outcome.last_body)
    return outcome


async def create_pools(service: Service, pools: int, concurrency: int) -> dict[str, Any]:
    requests = [(f"/v1/pools/{pool_id(k)}", pool_body(k)) for k in range(pools)]
    began = time.monotonic()
    outcome = await run_requests(service.port, "PUT", requests, concurrency)
    seconds = time.monotonic() - began
    created = outcome.statuses["201"] + outcome.statuses["200"]
    if created != pools:
        raise RuntimeError(f"{pools - created} of {pools} PUTs failed: {dict(outcome.statuses)}")
    return {
        "seconds": seconds,
        "pools_per_s": pools / seconds,
        "concurrency": concurrency,
        "put": summarize(outcome.latencies_s),
        "statuses": dict(outcome.statuses),
    }


async def measure_latency(service: Service, pools: int, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    # A zone and a time window, as a shop asks: the same slots (and so the same answer) at every size, so
    # that what grows is the service's pools, not the answer (a whole zone at 10,000 pools is 500 pools).
    window = {"slot_from": SLOT_BASE.isoformat(), "slot_to": (SLOT_BASE + timedelta(hours=2 * 25)).isoformat()}
    availability = ("/v1/availability", {"zone": AVAILABILITY_ZONE, **window})

    def reserves(count: int) -> list[tuple[str, dict[str, Any]]]:
        return [("/v1/reservations", {"pool_id": pool_id(rng.randrange(pools)), "quantity": 1}) for _ in range(count)]

    port = service.port
    await run_requests(port, "POST", [availability] * args.warmup, args.in_flight)
    warm = await run_requests(port, "POST", reserves(args.warmup), args.in_flight)
    avail = await run_requests(port, "POST", [availability] * args.requests, args.in_flight)
    reserve = await run_requests(port, "POST", reserves(args.requests), args.in_flight)
    shown = len(avail.last_body["pools"]) if isinstance(avail.last_body, dict) else None
    return {
        "availability": {**summarize(avail.latencies_s), "statuses": dict(avail.statuses), "pools_shown": shown},
        "reserve": {**summarize(reserve.latencies_s), "statuses": dict(reserve.statuses)},
        "reserves_acknowledged": warm.statuses["201"] + reserve.statuses["201"],
        "requests": args.requests,
        "warmup": args.warmup,
        "in_flight": args.in_flight,
    }


async def cold_restart(service: Service, pools: int, concurrency: int, timeout: float) -> dict[str, Any]:
    """Start the service again on the same data dir; seconds until every pool answers GET with 200."""
    began = time.monotonic()
    service.start()
    first_answer_s: float | None = None
    reserved = 0
    not_yet: Counter[str] = Counter()  # answers other than 200 while it came up
    todo = iter(range(1, pools))  # pool 0 first, alone

    async def until_served(connection: LeanConnection, k: int) -> None:
        nonlocal first_answer_s, reserved
        while True:
            try:
                status_code, body = await connection.request("GET", f"/v1/pools/{pool_id(k)}")
            except (OSError, asyncio.IncompleteReadError, ValueError, StopIteration) as exc:
                status = type(exc).__name__
            else:
                status = str(status_code)
                if first_answer_s is None:
                    first_answer_s = time.monotonic() - began
                if status_code == 200:
                    reserved += int(json.loads(body)["reserved"])
                    return
            not_yet[status] += 1
            service.check_running()
            if time.monotonic() - began > timeout:
                raise RuntimeError(f"pool {pool_id(k)} not served {timeout:.0f}s after the restart: {status}")
            await asyncio.sleep(0.1)

    # A lean client: a general one's CPU would compete with the service's restart for the same cores.
    connections = [LeanConnection(service.port) for _ in range(concurrency)]
    try:
        await until_served(connections[0], 0)  # one poller until the service answers, not `concurrency`

        async def worker(connection: LeanConnection) -> None:
            for k in todo:
                await until_served(connection, k)

        await asyncio.gather(*(worker(connection) for connection in connections))
    finally:
        for connection in connections:
            connection.close()
    return {
        "seconds": time.monotonic() - began,
        "first_http_answer_s": first_answer_s,
        "answers_before_served": dict(not_yet),
        "reserved_total": reserved,
    }


# --- one size ------------------------------------------------------------------------------------------------


def run_size(pools: int, args: argparse.Namespace) -> dict[str, Any]:
    row: dict[str, Any] = {"pools": pools}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp, journal_server(args.journal) as journal:
        service = Service(data_dir=Path(tmp) / "data", log_path=Path(tmp) / "service.log", journal=journal.environment)
        service.data_dir.mkdir()
        memory: list[dict[str, Any]] = []
        try:
            service.start()
            row["command"] = " ".join(service.command())
            row["start_s"] = service.wait_ready(args.timeout)
            say(f"  {pools} pools: service ready in {row['start_s']:.1f} s (port {service.port})")

            row["create"] = asyncio.run(create_pools(service, pools, args.create_concurrency))
            say(f"  {pools} pools: created in {row['create']['seconds']:.1f} s")
            memory.append({"when": "after create", **service.memory()})
            say(f"  {pools} pools: PSS {memory[-1]['pss_mb']:.0f} MB in {memory[-1]['processes']} processes")

            row["latency"] = asyncio.run(measure_latency(service, pools, args))
            memory.append({"when": "after latency", **service.memory()})
            say(
                f"  {pools} pools: availability p99 {row['latency']['availability']['p99_ms']:.1f} ms, "
                f"reserve p99 {row['latency']['reserve']['p99_ms']:.1f} ms"
            )

            row["first_stop"] = service.stop(args.timeout)
            if not row["first_stop"]["clean"]:
                raise RuntimeError(f"the first stop was not clean: {row['first_stop']}")
            row["restart"] = asyncio.run(cold_restart(service, pools, args.create_concurrency, args.timeout))
            row["restart"]["reserved_matches_acknowledged"] = (
                row["restart"]["reserved_total"] == row["latency"]["reserves_acknowledged"]
            )
            memory.append({"when": "after restart", **service.memory()})
            say(f"  {pools} pools: cold restart, every pool served after {row['restart']['seconds']:.1f} s")
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"
            row["log_tail"] = log_tail(service.log_path)
            say(f"  {pools} pools FAILED: {row['error']}")
        finally:
            row["stop"] = service.stop(args.timeout)
            say(f"  {pools} pools: stopped: {row['stop']}")
        row["memory_samples"] = memory
        if memory:
            row["memory"] = max(memory, key=lambda sample: float(sample["pss_mb"]))
    return row


# --- report --------------------------------------------------------------------------------------------------


def _row(rows: list[dict[str, Any]], pools: int) -> dict[str, Any] | None:
    return next((r for r in rows if r["pools"] == pools and "error" not in r), None)


def evaluate_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target with what was measured; ``met`` is None where its size was not run (or failed)."""
    at_500, at_10000 = _row(rows, 500), _row(rows, 10_000)
    targets: list[dict[str, Any]] = []

    def add(name: str, limit: float | None, measured: float | None) -> None:
        met = None if limit is None or measured is None else measured < limit
        targets.append({"target": name, "limit": limit, "measured": measured, "met": met})

    add("500 pools created in < 15 s", CREATE_500_S, at_500["create"]["seconds"] if at_500 else None)
    add("< 2 GB (2,048 MB) PSS at 10,000 pools", MEMORY_10000_MB, at_10000["memory"]["pss_mb"] if at_10000 else None)
    add(
        "cold restart of 10,000 pools in < 30 s",
        RESTART_10000_S,
        at_10000["restart"]["seconds"] if at_10000 and "restart" in at_10000 else None,
    )
    add(
        "availability p99 at 10,000 pools within 1.5x of p99 at 500",
        AVAILABILITY_P99_RATIO * at_500["latency"]["availability"]["p99_ms"] if at_500 else None,
        at_10000["latency"]["availability"]["p99_ms"] if at_10000 else None,
    )
    return targets


def print_table(rows: list[dict[str, Any]], targets: list[dict[str, Any]]) -> None:
    say("")
    say(f"{command_line()}   (default configuration; median and p99 of every answer, in ms)")
    say(
        f"{'pools':>6} {'create s':>9} {'pools/s':>8} {'PSS MB':>7} {'procs':>5} "
        f"{'avail med':>9} {'avail p99':>9} {'resv med':>8} {'resv p99':>8} {'restart s':>9}  stop"
    )
    for r in rows:
        if "error" in r and "latency" not in r:
            say(f"{r['pools']:>6}  FAILED: {r['error'].splitlines()[0]}")
            continue
        memory, latency = r.get("memory", {}), r["latency"]
        restart = r.get("restart", {}).get("seconds")
        say(
            f"{r['pools']:>6} {r['create']['seconds']:>9.1f} {r['create']['pools_per_s']:>8.0f} "
            f"{memory.get('pss_mb', float('nan')):>7.0f} {memory.get('processes', 0):>5} "
            f"{latency['availability']['median_ms']:>9.1f} {latency['availability']['p99_ms']:>9.1f} "
            f"{latency['reserve']['median_ms']:>8.1f} {latency['reserve']['p99_ms']:>8.1f} "
            f"{restart if restart is not None else float('nan'):>9.1f}  "
            f"{'clean' if r['stop'].get('clean') else r['stop']}"
            + (f"  FAILED: {r['error'].splitlines()[0]}" if "error" in r else "")
        )
    for t in targets:
        verdict = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        measured = "-" if t["measured"] is None else f"{t['measured']:.1f}"
        limit = "-" if t["limit"] is None else f"{t['limit']:.1f}"
        say(f"  target: {t['target']}: {verdict} (measured {measured}, limit {limit})")


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib.pyplot as plt

    ok = [r for r in rows if "latency" in r]
    sizes = [r["pools"] for r in ok]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    (mem_ax, create_ax), (p99_ax, restart_ax) = axes

    def target(ax: Any, y: float | None, label: str) -> None:
        if y is not None:
            ax.axhline(y, color="red", linestyle="--", linewidth=1, label=label)

    mem_ax.plot(sizes, [r.get("memory", {}).get("pss_mb") for r in ok], "o-", label="PSS, all processes")
    target(mem_ax, MEMORY_10000_MB, "target: < 2 GB at 10,000 pools")
    mem_ax.set(title="memory of the whole service", ylabel="MB (PSS, largest sample)")

    create_ax.plot(sizes, [r["create"]["seconds"] for r in ok], "o-", label="create N pools (PUT)")
    target(create_ax, CREATE_500_S, "target: 500 pools < 15 s")
    create_ax.set(title="time to create N pools over HTTP", ylabel="seconds")

    for name, marker, color in (("availability", "o", "tab:blue"), ("reserve", "s", "tab:green")):
        p99_ax.plot(sizes, [r["latency"][name]["p99_ms"] for r in ok], marker + "-", color=color, label=f"{name} p99")
        medians = [r["latency"][name]["median_ms"] for r in ok]
        p99_ax.plot(sizes, medians, marker + ":", color=color, label=f"{name} median")
    at_500 = _row(rows, 500)
    target(
        p99_ax,
        AVAILABILITY_P99_RATIO * at_500["latency"]["availability"]["p99_ms"] if at_500 else None,
        "target: availability p99 <= 1.5x p99 at 500",
    )
    p99_ax.set(title="latency", ylabel="ms")

    restart_ax.plot(sizes, [r.get("restart", {}).get("seconds") for r in ok], "o-", label="until every pool serves")
    first = [r.get("restart", {}).get("first_http_answer_s") for r in ok]
    restart_ax.plot(sizes, first, "o:", color="tab:blue", label="until the first HTTP answer")
    target(restart_ax, RESTART_10000_S, "target: 10,000 pools < 30 s")
    restart_ax.set(title="cold restart", ylabel="seconds")

    for ax in axes.flat:
        ax.set_xscale("log")
        ax.set_xticks(sizes or [1], [str(n) for n in sizes] or [""])
        ax.minorticks_off()
        ax.set_xlabel("pools")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
    fig.suptitle(f"capacity-service start, default configuration, 2 cores ({command_line()})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argument_parser(__doc__)
    parser.add_argument("--pools", type=int, nargs="+", default=[500, 2000, 10_000], help="the sizes N to run")
    parser.add_argument("--requests", type=int, default=2000, help="measured requests of each kind per size")
    parser.add_argument("--warmup", type=int, default=100, help="uncounted requests of each kind first")
    parser.add_argument("--in-flight", type=int, default=16, help="requests in flight while measuring latency")
    parser.add_argument("--create-concurrency", type=int, default=32, help="PUTs (and restart polls) in flight")
    parser.add_argument("--timeout", type=float, default=900, help="seconds any one phase may take")
    parser.add_argument("--seed", type=int, default=1)
    add_journal_option(parser)
    args = parser.parse_args()
    if min(args.pools) < 1 or args.requests < 1 or args.in_flight < 1 or args.create_concurrency < 1:
        parser.error("--pools, --requests, --in-flight and --create-concurrency must be at least 1")
    exit_cleanly_on_sigterm()
    rows: list[dict[str, Any]] = []
    for pools in args.pools:
        say(f"{pools} pools")
        rows.append(run_size(pools, args))
    targets = evaluate_targets(rows)
    print_table(rows, targets)
    results = {
        "journal": args.journal,
        "rows": rows,
        "targets": targets,
        "zones": ZONES,
        "capacity": CAPACITY,
        "availability_zone": AVAILABILITY_ZONE,
        "process_discovery": "task/*/children" if _has_children_files() else "ppid in /proc/*/stat",
    }
    write_results_and_plot(results_name("scale", args.journal), results, lambda png: plot(rows, png))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
