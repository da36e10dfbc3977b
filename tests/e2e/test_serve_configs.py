"""The Serve configs as a Ray user runs them: `serve run serve_config.yaml` (and the Cassandra one, pointed at
the test Cassandra), and `serve deploy` onto a running Ray, then deployed again with changed settings. Each
in a subprocess, with an HTTP round trip and a clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml  # type: ignore[import-untyped]  # no types-PyYAML in the venv

from capacity_service.runtime.environment import LOCAL_RAY
from capacity_service.settings import CassandraJournalSettings
from devenv._process import free_ports
from tests.e2e.test_start_command import wait_ready

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# One auth mode for every process of a cluster: Ray turns token auth on where ~/.ray/auth_token exists.
AUTH_MODE = "token" if (Path.home() / ".ray" / "auth_token").exists() else "disabled"
# A Ray of the command's own even when the test session runs one ("local"), on loopback only.
ENV = {**os.environ, **LOCAL_RAY, "RAY_ADDRESS": "local", "RAY_AUTH_MODE": AUTH_MODE}


def config_copy(name: str, work_dir: Path, port: int, **app_args: Any) -> Path:
    """The repository's config with the test's port (and ``app_args`` replacing sections of the args)."""
    config = yaml.safe_load((REPO / name).read_text())
    config["http_options"]["port"] = port
    config["applications"][0]["args"].update(app_args)
    path = work_dir / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def round_trip(url: str, pool_id: str) -> None:
    created = httpx.put(f"{url}/v1/pools/{pool_id}", json={"capacity": 3, "zone": "north"}, timeout=60)
    assert created.status_code == 201, created.text
    reserved = httpx.post(f"{url}/v1/reservations", json={"pool_id": pool_id, "quantity": 2}, timeout=60)
    assert reserved.status_code == 201, reserved.text
    assert httpx.get(f"{url}/v1/pools/{pool_id}", timeout=60).json()["remaining"] == 1


def serve_run(config: Path, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / "serve"), "run", str(config)],
        cwd=cwd,
        env=ENV,
        stdout=(cwd / "serve.log").open("w"),
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=_answer_ctrl_c,
    )


def _answer_ctrl_c() -> None:
    """Ctrl-C stops `serve run` as at a terminal, however the tests were started: a shell that runs a job
    in the background (`... &` without job control) starts it with SIGINT ignored, every child inherits
    that, and Python then never raises KeyboardInterrupt (`serve run` has no handler of its own)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stop_serve_run(process: subprocess.Popen[str], log: Path | None = None) -> None:
    process.send_signal(signal.SIGINT)  # Ctrl-C
    try:
        process.wait(timeout=90)
    except subprocess.TimeoutExpired as exc:
        tail = log.read_text()[-4000:] if log is not None and log.exists() else ""
        raise AssertionError(f"serve run did not stop within 90 s of Ctrl-C; its log ends:\n{tail}") from exc
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def test_serve_run_serve_config_yaml(tmp_path: Path) -> None:
    [port] = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    process = serve_run(config_copy("serve_config.yaml", tmp_path, port), tmp_path)
    try:
        wait_ready(url, process)
        round_trip(url, "north:serve-run")
    finally:
        stop_serve_run(process, tmp_path / "serve.log")
    assert process.returncode == 0, (tmp_path / "serve.log").read_text()[-3000:]
    assert (tmp_path / "data" / "capacity.db").exists()  # the config's journal, relative to where Ray runs


@pytest.mark.cassandra
def test_serve_run_serve_config_cassandra_yaml(tmp_path: Path, cassandra_settings: CassandraJournalSettings) -> None:
    """What a user edits in it for a one-node Cassandra 2.1 on this machine: contact point, port, protocol,
    replication; pools on any node (a local Ray offers no `pool_host`); the warehouse in a local folder (no
    Redshift here)."""
    [port] = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    journal = {
        "kind": "cassandra",
        "contact_points": cassandra_settings.contact_points,
        "port": cassandra_settings.port,
        "protocol_version": 3,
        "keyspace": "serve_config_test",
        "replication": {"class": "SimpleStrategy", "replication_factor": 1},
        "consistency": "QUORUM",
        "serial_consistency": "SERIAL",
        "request_timeout_s": 10.0,
    }
    config = config_copy(
        "serve_config.cassandra.yaml",
        tmp_path,
        port,
        journal=journal,
        hosting={"mode": "sharded"},
        warehouse={"sink": {"kind": "parquet", "path": str(tmp_path / "warehouse")}},
    )
    process = serve_run(config, tmp_path)
    try:
        wait_ready(url, process)
        round_trip(url, "north:cassandra")
    finally:
        stop_serve_run(process, tmp_path / "serve.log")
    assert process.returncode == 0, (tmp_path / "serve.log").read_text()[-3000:]


@pytest.fixture
def running_ray(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """`ray start --head` as an operator runs it, on loopback: (GCS address, dashboard URL for `serve deploy`)."""
    gcs_port, dashboard_port = free_ports(2)
    head = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            f"--port={gcs_port}",
            "--node-ip-address=127.0.0.1",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard_port}",
            "--num-cpus=2",
        ],
        cwd=tmp_path,
        env={**ENV, "RAY_ADDRESS": ""},
        stdout=(tmp_path / "ray.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    dashboard = f"http://127.0.0.1:{dashboard_port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert head.poll() is None, (tmp_path / "ray.log").read_text()[-3000:]
            try:
                httpx.get(f"{dashboard}/api/version", timeout=2)  # any answer (401 with token auth): it is up
                break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "ray start did not come up"
            time.sleep(1)
        yield f"127.0.0.1:{gcs_port}", dashboard
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        finally:
            os.killpg(head.pid, signal.SIGKILL)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        cwd=cwd,
        env={**ENV, "RAY_ADDRESS": ""},
        capture_output=True,
        text=True,
        timeout=180,
    )


def app_status(dashboard: str, cwd: Path) -> tuple[str, str]:
    status = yaml.safe_load(cli("serve", "status", "-a", dashboard, cwd=cwd).stdout) or {}
    app = (status.get("applications") or {}).get("capacity") or {}
    return str(app.get("status")), str(app.get("message"))


def wait_for_status(dashboard: str, cwd: Path, wanted: str) -> str:
    deadline = time.monotonic() + 180
    while (status := app_status(dashboard, cwd))[0] != wanted:
        assert time.monotonic() < deadline, status
        time.sleep(1)
    return status[1]


def test_serve_deploy_then_deploy_again_with_changed_settings(tmp_path: Path, running_ray: tuple[str, str]) -> None:
    gcs, dashboard = running_ray
    [port] = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    deployed = cli(
        "serve", "deploy", str(config_copy("serve_config.yaml", tmp_path, port)), "-a", dashboard, cwd=tmp_path
    )
    assert deployed.returncode == 0, deployed.stderr
    wait_for_status(dashboard, tmp_path, "RUNNING")
    round_trip(url, "north:deployed")
    big_body = {"capacity": 3, "zone": "n" * 100, "slot_start": None, "slot_end": None, "padding": "x" * 600}
    assert httpx.put(f"{url}/v1/pools/north:big", json=big_body, timeout=60).status_code != 413

    # A change only the Serve replicas read (the body limit) is applied by the new replicas.
    smaller = config_copy("serve_config.yaml", tmp_path, port, http={"max_body_bytes": 512})
    assert cli("serve", "deploy", str(smaller), "-a", dashboard, cwd=tmp_path).returncode == 0
    deadline = time.monotonic() + 180
    while httpx.put(f"{url}/v1/pools/north:big", json=big_body, timeout=60).status_code != 413:
        assert time.monotonic() < deadline, "the new body limit never reached the replicas"
        time.sleep(1)
    wait_for_status(dashboard, tmp_path, "RUNNING")

    # A change the pool actors were started with is refused, saying what to do; the service keeps serving.
    other = config_copy("serve_config.yaml", tmp_path, port, snapshots={"every_n_events": 10, "keep": 2})
    assert cli("serve", "deploy", str(other), "-a", dashboard, cwd=tmp_path).returncode == 0
    message = wait_for_status(dashboard, tmp_path, "DEPLOY_FAILED")
    assert "snapshots.every_n_events" in message and "capacity-service stop" in message, message
    assert httpx.get(f"{url}/v1/pools/north:deployed", timeout=60).json()["reserved"] == 2

    # Stopped as the message says, then deployed with the change: the pools recover from the journal.
    stopped = cli("capacity-service", "stop", "--address", gcs, cwd=tmp_path)
    assert stopped.returncode == 0, stopped.stderr
    assert cli("serve", "deploy", str(other), "-a", dashboard, cwd=tmp_path).returncode == 0
    wait_for_status(dashboard, tmp_path, "RUNNING")
    assert httpx.get(f"{url}/v1/pools/north:deployed", timeout=60).json()["reserved"] == 2
