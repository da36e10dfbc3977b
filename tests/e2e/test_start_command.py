"""README command (a)'s service: `capacity-service start` as a user runs it, what it listens on, stopped
with Ctrl-C and started again on the same data."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from devenv._process import free_port
from tests.support.processes import descendants, is_loopback, listeners


def start(data_dir: Path, port: int) -> subprocess.Popen[str]:
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    return subprocess.Popen(
        [sys.executable, "-m", "capacity_service", "--data-dir", str(data_dir), "start", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )


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
    try:
        wait_ready(url, first)
        created = httpx.put(f"{url}/v1/pools/north:0800", json={"capacity": 5, "zone": "north"}, timeout=30)
        assert created.status_code == 201
        rid = httpx.post(f"{url}/v1/reservations", json={"pool_id": "north:0800", "quantity": 2}, timeout=30)
        assert rid.status_code == 201
        # Reserves are answered ahead of Serve's per-request wrapper (http/ingress.py), which stamps an
        # x-request-id on what it answers; bad input there is still the contract's 422.
        assert "x-request-id" not in rid.headers and "x-request-id" in created.headers
        bad = httpx.post(f"{url}/v1/reservations", json={"pool_id": "north:0800", "quantity": 0}, timeout=30)
        assert (bad.status_code, set(bad.json())) == (422, {"error"})
        # The Serve replica answers HTTP itself (no proxy hop), on loopback; nothing else is exposed.
        listening = listeners(descendants(first.pid) | {first.pid})
        assert (f"127.0.0.1:{port}", "ray::ServeRepli") in listening, listening
        exposed = [(a, n) for a, n in listening if not is_loopback(a)]
        assert exposed == [], f"listening beyond loopback: {exposed}"
    finally:
        output = stop(first)
    assert first.returncode == 0, output
    assert f"listening on {url}" in output
    assert (tmp_path / "capacity.db").exists()

    second = start(tmp_path, port)
    try:
        wait_ready(url, second)
        pool = httpx.get(f"{url}/v1/pools/north:0800", timeout=30).json()
        assert (pool["capacity"], pool["reserved"]) == (5, 2)
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
