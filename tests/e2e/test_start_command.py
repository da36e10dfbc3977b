"""README command (a)'s service: `capacity-service start` as a user runs it, what it listens on, stopped
with Ctrl-C and started again on the same data."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from capacity_service.runtime.environment import LOCAL_RAY
from devenv._process import free_port
from tests.support.openapi import check_case
from tests.support.processes import descendants, is_loopback, listeners


def start(data_dir: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, **LOCAL_RAY}
    return subprocess.Popen(
        [sys.executable, "-m", "capacity_service", "--data-dir", str(data_dir), "start", "--port", str(port), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )


CLIENT_EXAMPLE = """
import asyncio, sys
import ray
from capacity_service import AsyncCapacityClient, CapacityClient

ray.init(address=sys.argv[1])
with CapacityClient() as client:  # the running service's settings, taken from it
    receipt = client.get_reservation(sys.argv[2])
    print("sync", receipt.pool_id, receipt.quantity)


async def main() -> None:
    client = AsyncCapacityClient()
    try:
        await client.reserve("north:0800", 1, request_id="python-example")
        print("async", "north:0800", (await client.get_pool("north:0800")).reserved)
    finally:
        await client.aclose()


asyncio.run(main())
"""


def run_client_example(address: str, auth_mode: str, reservation_id: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CLIENT_EXAMPLE, address, reservation_id],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **LOCAL_RAY, "RAY_AUTH_MODE": auth_mode},
    )


def first_output_so_far(process: subprocess.Popen[str]) -> str:
    """What the command printed until it said it listens (its stdout is a pipe read line by line)."""
    assert process.stdout is not None
    lines: list[str] = []
    while not any("ray.init(address=" in line for line in lines):
        line = process.stdout.readline()
        assert line, "".join(lines)
        lines.append(line)
    return "".join(lines)


def actor_processes(pid: int) -> list[str]:
    """The names of the actor processes the command started (Ray's idle pre-started workers aside)."""
    names = []
    for child in descendants(pid):
        with contextlib.suppress(OSError):
            name = Path(f"/proc/{child}/comm").read_text().strip()
            if name.startswith("ray::") and name != "ray::IDLE":
                names.append(name)
    return sorted(names)


def journal_rows(db: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}


async def create_and_reserve(url: str, pool_ids: list[str]) -> None:
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:
        gate = asyncio.Semaphore(16)

        async def one(pool_id: str) -> None:
            async with gate:
                created = await http.put(f"/v1/pools/{pool_id}", json={"capacity": 2, "zone": "seed"})
                assert created.status_code == 201, created.text
                reserved = await http.post("/v1/reservations", json={"pool_id": pool_id})
                assert reserved.status_code == 201, reserved.text

        await asyncio.gather(*(one(p) for p in pool_ids))
        for pool_id in pool_ids[::50]:
            assert (await http.get(f"/v1/pools/{pool_id}")).json()["reserved"] == 1


def wait_ready(url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError("the service did not become ready")


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGINT)  # Ctrl-C
    out, _ = process.communicate(timeout=60)
    return out


def test_start_serve_stop_and_start_again_with_the_data(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    first = start(tmp_path, port)
    early = ""
    try:
        wait_ready(url, first)
        created = httpx.put(f"{url}/v1/pools/north:0800", json={"capacity": 5, "zone": "north"}, timeout=30)
        assert created.status_code == 201
        rid = httpx.post(f"{url}/v1/reservations", json={"pool_id": "north:0800", "quantity": 2}, timeout=30)
        assert rid.status_code == 201
        # Every request is answered ahead of Serve's per-request wrapper (http/ingress.py): the answer's
        # x-request-id is the Edge's (the client's when it sends one); bad input there is still a 422.
        assert len(rid.headers["x-request-id"]) == 32 and rid.headers["x-request-id"] != created.headers["x-request-id"]
        traced = httpx.get(f"{url}/v1/pools/north:0800", headers={"x-request-id": "trace-42"}, timeout=30)
        assert traced.headers["x-request-id"] == "trace-42"
        bad = httpx.post(f"{url}/v1/reservations", json={"pool_id": "north:0800", "quantity": 0}, timeout=30)
        assert (bad.status_code, set(bad.json())) == (422, {"error"})
        # The Serve replica answers HTTP itself (no proxy hop), on loopback; nothing else is exposed.
        listening = listeners(descendants(first.pid) | {first.pid})
        assert (f"127.0.0.1:{port}", "ray::ServeRepli") in listening, listening
        exposed = [(a, n) for a, n in listening if not is_loopback(a)]
        assert exposed == [], f"listening beyond loopback: {exposed}"

        # Unknown pool ids and forged reservation ids: 404s that start no process and write no row.
        before = actor_processes(first.pid), journal_rows(tmp_path / "capacity.db")
        for i in range(100):
            assert httpx.get(f"{url}/v1/pools/ghost-{i}", timeout=30).status_code == 404
            forged = f"Z2hvc3Qt{i:02d}.AAAAAAAAAAAAAAAAAAAAAA"
            assert httpx.delete(f"{url}/v1/reservations/{forged}", timeout=30).status_code == 404
        assert (actor_processes(first.pid), journal_rows(tmp_path / "capacity.db")) == before

        # The README's Python example, run beside the service (sync and async), attaches to it.
        early = first_output_so_far(first)
        hint = re.search(r"RAY_AUTH_MODE=(\w+) in its environment: ray\.init\(address='([^']+)'\)", early)
        assert hint, "start did not say how to reach its Ray"
        attached = run_client_example(hint.group(2), hint.group(1), rid.json()["reservation_id"])
        assert attached.returncode == 0, attached.stderr[-3000:]
        assert "Task was destroyed" not in attached.stderr
        assert attached.stdout.split() == ["sync", "north:0800", "2", "async", "north:0800", "3"]

        # The original system's scale on the default settings: 500 pools created and reserved over HTTP.
        asyncio.run(create_and_reserve(url, [f"seed:{i}" for i in range(500)]))

        # Clients that close their connections leave the server's side in TIME-WAIT: the restart below
        # must not wait for the kernel.
        for _ in range(5):
            assert httpx.get(f"{url}/healthz", headers={"connection": "close"}, timeout=30).status_code == 200
    finally:
        output = early + stop(first)
    assert first.returncode == 0, output
    assert f"listening on {url}" in output
    assert re.search(r"metrics .*: http://127\.0\.0\.1:\d+/metrics", output), output  # on by default
    assert (tmp_path / "capacity.db").exists()

    second = start(tmp_path, port, "--no-metrics")
    try:
        wait_ready(url, second)
        assert "/metrics" not in first_output_so_far(second)
        pool = httpx.get(f"{url}/v1/pools/north:0800", timeout=30).json()
        assert (pool["capacity"], pool["reserved"]) == (5, 3)  # the client's reserve included
        reservation = httpx.get(f"{url}/v1/reservations/{rid.json()['reservation_id']}", timeout=30).json()
        assert reservation["status"] == "active"
    finally:
        stop(second)


def test_a_port_in_use_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = start(tmp_path, port)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in output
    assert not (tmp_path / "capacity.db").exists()  # nothing was started


def test_a_public_address_without_api_keys_is_refused_before_anything_starts(tmp_path: Path) -> None:
    process = start(tmp_path, free_port(), "--host", "0.0.0.0")
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "refusing to listen on 0.0.0.0" in output and "CAPACITY_API_KEYS" in output
    assert not (tmp_path / "capacity.db").exists()  # nothing was started


def readme_quickstart() -> str:
    """The README's quickstart commands, as written (the first bash block after "## Quickstart")."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("## Quickstart", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    assert "capacity-service" in block and "curl" in block
    return block


def test_the_readme_quickstart_runs_against_start_as_written(tmp_path: Path) -> None:
    """Every command of the quickstart, run by bash as a user pastes it, against `start` with its data in
    ./data (as `scripts/run` has it): each answers without an error."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    service = start(tmp_path / "data", port)
    try:
        wait_ready(url, service)
        script = "set -euo pipefail\n" + readme_quickstart().replace("http://127.0.0.1:8000", url)
        done = subprocess.run(
            ["bash", "-c", script],
            cwd=tmp_path,
            env={**os.environ, "CAPACITY_URL": url},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        stop(service)
    assert done.returncode == 0, done.stdout + done.stderr
    assert '"error"' not in done.stdout, done.stdout
    assert '"status": "held"' in done.stdout.replace('":"', '": "'), done.stdout  # curl's and the CLI's holds
    assert "PoolConfigured" in done.stdout and "CapacityHeld" in done.stdout  # the events dump
    assert '"order_id":"cart-7"' in done.stdout.replace(" ", "") and '"status":"confirmed"' in done.stdout.replace(
        " ", ""
    )  # the order held by curl, then confirmed; and the CLI's
    retired = [line for line in done.stdout.splitlines() if '"state": "retired"' in line.replace('":"', '": "')]
    assert len(retired) == 2, done.stdout  # the retired pool: in the answer to retire, then alone in the list


# --- schemathesis against the live service, once (the in-process run, tests/unit/test_openapi_schemathesis.py,
# goes deeper): `start` as a user runs it, its own /openapi.json loaded over HTTP, every operation driven with
# generated valid and invalid requests and every check schemathesis has. schemathesis's pytest fixture loader
# fails on this pytest, so the operations are driven directly.


def test_the_live_service_keeps_its_openapi_contract(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    service = start(tmp_path, port)
    try:
        wait_ready(url, service)
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
        assert len(operations) >= 8  # every route of the contract, probes included
        for operation in operations:
            for mode in schemathesis.GenerationMode:

                @given(case=operation.as_strategy(generation_mode=mode))
                # Few examples per operation: tests/unit/test_openapi_schemathesis.py runs many on the app itself.
                @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), database=None)
                def drive(case: Any) -> None:
                    check_case(case)

                try:
                    drive()
                except Unsatisfiable:
                    # Nothing to get wrong (the probes take no input): no invalid request exists.
                    assert mode is schemathesis.GenerationMode.NEGATIVE, operation.label
    finally:
        stop(service)


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """A Prometheus scrape, as (metric name, its labels) -> value (the service's own metrics only)."""
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in httpx.get(url, timeout=10).text.splitlines():
        found = re.match(r"^(ray_capacity_\w+)(?:\{(.*)\})? (\S+)$", line)
        if found:
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', found.group(2) or ""))
            samples[(found.group(1), labels)] = float(found.group(3))
    return samples


def total(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(value for (metric, have), value in samples.items() if metric == name and wanted <= have)


def test_start_prints_the_metrics_url_and_they_move_with_traffic(tmp_path: Path) -> None:
    """`start` (metrics are on by default): the URL it prints serves Prometheus text, on loopback, and the
    service's series move as requests, writes and hold expiries happen."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    service = start(tmp_path, port)
    try:
        printed = first_output_so_far(service)
        metrics_url = re.search(r"(http://127\.0\.0\.1:\d+/metrics)", printed)
        assert metrics_url, printed
        wait_ready(url, service)
        with httpx.Client(base_url=url, timeout=30) as http:
            http.put("/v1/pools/m1", json={"capacity": 100, "zone": "north"})
            for k in range(7):
                assert http.post("/v1/reservations", json={"pool_id": "m1", "request_id": f"m-{k}"}).status_code == 201
            assert http.get("/v1/pools/ghost").status_code == 404
            held = http.post("/v1/reservations", json={"pool_id": "m1", "hold_seconds": 1})
            assert held.status_code == 201
            # An operator's pause, traced: its id is in the HTTP replica's log line and in the pool's.
            trace = f"trace-{uuid.uuid4().hex}"
            paused = http.post("/v1/admin/pools/m1/pause", json={"reason": "e2e"}, headers={"x-request-id": trace})
            assert paused.status_code == 200 and paused.headers["x-request-id"] == trace
            assert http.post("/v1/admin/pools/m1/resume").status_code == 200

        def moved() -> bool:
            samples = scrape(metrics_url.group(1))
            return (
                total(samples, "ray_capacity_http_requests_total", route="/v1/reservations", status="201") >= 8
                and total(samples, "ray_capacity_http_requests_total", route="/v1/pools/{pool_id}", status="404") >= 1
                and total(samples, "ray_capacity_http_request_seconds_count_total", route="/v1/reservations") >= 8
                and total(
                    samples, "ray_capacity_http_request_seconds_bucket_total", route="/v1/reservations", le="+Inf"
                )
                >= 8
                and total(samples, "ray_capacity_journal_appends_total", store="sqlite", outcome="ok") >= 9
                and total(samples, "ray_capacity_holds_expired_total") >= 1
                and total(samples, "ray_capacity_pools_hosted") >= 1
            )

        deadline = time.monotonic() + 60  # Ray's agent exports what the processes report every few seconds
        while not moved():
            assert time.monotonic() < deadline, sorted(scrape(metrics_url.group(1)).items())[:40]
            time.sleep(2)
        listening = listeners(descendants(service.pid) | {service.pid})
        exposed = [(a, n) for a, n in listening if not is_loopback(a)]
        assert exposed == [], f"listening beyond loopback: {exposed}"

        def traced_lines() -> list[str]:
            lines = []
            for log in Path("/tmp/ray").glob("session_*/logs/worker-*"):
                with contextlib.suppress(OSError):
                    lines += [line for line in log.read_text(errors="replace").splitlines() if trace in line]
            return lines

        deadline = time.monotonic() + 30
        while not (
            any("operator: pause pool m1" in line for line in traced_lines())
            and any("PoolPaused(reason='e2e')" in line for line in traced_lines())
        ):
            assert time.monotonic() < deadline, traced_lines()
            time.sleep(1)
    finally:
        stop(service)
