"""`capacity-service cluster` as a user runs it: the HTTP service on a head and two worker nodes of one
machine; what its processes listen on; a worker's raylet killed with the service still answering; Ctrl-C
stops every process it started."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from devenv._process import free_port
from tests.e2e.test_start_command import wait_ready
from tests.support.processes import descendants, is_loopback, listeners


def test_cluster_command_serves_on_loopback_survives_a_worker_and_stops(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "cluster.log"
    command = [sys.executable, "-m", "capacity_service", "--data-dir", str(tmp_path), "cluster", "--workers", "2"]
    with log.open("w") as out:
        process = subprocess.Popen(
            [*command, "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
    tree: set[int] = set()
    try:
        try:
            wait_ready(url, process)
        except AssertionError as exc:  # its output went to the log: show it
            raise AssertionError(f"the cluster did not come up; its output:\n{log.read_text()[-3000:]}") from exc
        assert (
            httpx.put(f"{url}/v1/pools/north:1", json={"capacity": 10, "zone": "north"}, timeout=60).status_code == 201
        )
        assert httpx.post(f"{url}/v1/reservations", json={"pool_id": "north:1"}, timeout=60).status_code == 201

        tree = descendants(process.pid) | {process.pid}
        listening = listeners(tree)
        assert (f"127.0.0.1:{port}", "ray::ProxyActor") in listening, listening  # it sees the cluster's sockets
        assert {name for _, name in listening} >= {"gcs_server", "raylet"}
        exposed = [(a, n) for a, n in listening if not is_loopback(a)]
        assert exposed == [], f"listening beyond loopback: {exposed}"

        workers = _worker_raylets(log)
        assert len(workers) == 2, log.read_text()[-3000:]
        os.kill(workers[0], signal.SIGKILL)  # a worker node's raylet dies: its pools move to the other one
        deadline = time.monotonic() + 90
        answered = 0
        while time.monotonic() < deadline and answered != 201:
            try:
                answered = httpx.post(f"{url}/v1/reservations", json={"pool_id": "north:1"}, timeout=40).status_code
            except httpx.HTTPError:
                answered = 0
            if answered != 201:
                time.sleep(0.5)
        assert answered == 201, "the pool did not serve again after a worker node died"
        assert httpx.get(f"{url}/v1/pools/north:1", timeout=60).json()["reserved"] == 2
        tree |= descendants(process.pid)
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            process.wait(timeout=90)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, log.read_text()[-3000:]
    time.sleep(2)
    left = sorted(pid for pid in tree if Path(f"/proc/{pid}").exists() and _state(pid) != "Z")
    assert left == [], f"processes left after Ctrl-C: {left}"


def _worker_raylets(log: Path) -> list[int]:
    """The worker raylet pids the command prints once `serve.run` returns, which can be after the proxy
    already answers (the app turns RUNNING a controller loop later)."""
    deadline = time.monotonic() + 60
    while True:
        workers = [int(pid) for pid in re.findall(r"worker\s+\S+\s+raylet pid (\d+)", log.read_text())]
        if len(workers) == 2 or time.monotonic() > deadline:
            return workers
        time.sleep(0.2)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"
