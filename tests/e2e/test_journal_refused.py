"""A journal that cannot work stops the start, in one line saying what to do: `capacity-service start` and
`serve run` exit non-zero before anything serves (instead of listening and answering every request 504).
Each case is set up as a user would meet it: a driver not installed, a server not running, a protocol the
server does not speak, a user who may not create the tables."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from capacity_service.runtime.environment import LOCAL_RAY
from capacity_service.settings import CassandraJournalSettings, SqlJournalSettings
from devenv import LocalPostgres
from devenv._process import free_port
from tests.e2e.test_serve_configs import ENV, _answer_ctrl_c, config_copy, stop_serve_run
from tests.e2e.test_start_command import stop, wait_ready
from tests.support.multinode import wait_until

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def start_with(tmp_path: Path, **environment: str) -> subprocess.CompletedProcess[str]:
    """`capacity-service start` with the journal in the environment, as the docs tell; it must end by itself."""
    return subprocess.run(
        [str(BIN / "capacity-service"), "--data-dir", str(tmp_path), "start", "--port", str(free_port())],
        capture_output=True,
        text=True,
        env={**os.environ, **LOCAL_RAY, **environment},
        cwd=tmp_path,
        timeout=120,
    )


def the_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr[-3000:]
    assert not (Path(result.args[2]) / "capacity.db").exists()
    return lines[0]


def closed_port_url(password: str = "s3cret-pw") -> str:
    return f"postgresql+psycopg://capacity:{password}@127.0.0.1:{free_port()}/capacity"


def test_an_unreachable_postgresql_journal_is_refused_without_its_password(tmp_path: Path) -> None:
    result = start_with(tmp_path, CAPACITY_JOURNAL_URL=closed_port_url())
    assert result.returncode == 1
    line = the_line(result)
    assert line.startswith("cannot start: cannot reach the postgresql journal at postgresql+psycopg://capacity:***@")
    assert "CAPACITY_JOURNAL_URL" in line
    assert "s3cret-pw" not in result.stdout + result.stderr


def test_a_postgresql_journal_without_its_driver_says_what_to_install(tmp_path: Path) -> None:
    """The package installed without its `postgres` extra: psycopg cannot be imported."""
    shadow = tmp_path / "shadow"
    (shadow / "psycopg").mkdir(parents=True)
    (shadow / "psycopg" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'psycopg'\", name='psycopg')\n"
    )
    data = tmp_path / "data"
    data.mkdir()
    result = start_with(data, CAPACITY_JOURNAL_URL=closed_port_url(), PYTHONPATH=str(shadow))
    assert result.returncode == 1
    assert "pip install 'capacity_service[postgres]'" in the_line(result)


@pytest.mark.cassandra
def test_a_cassandra_protocol_the_server_does_not_speak_is_refused(
    tmp_path: Path, cassandra_settings: CassandraJournalSettings
) -> None:
    journal = cassandra_settings.model_copy(update={"protocol_version": 4, "keyspace": "refused"})
    result = start_with(tmp_path, CAPACITY_JOURNAL=journal.model_dump_json())
    assert result.returncode == 1
    line = the_line(result)
    assert "does not speak CQL protocol v4" in line and "protocol_version" in line and "3 for Cassandra 2.1" in line


def test_an_unreachable_cassandra_is_refused(tmp_path: Path) -> None:
    journal = CassandraJournalSettings(contact_points=["127.0.0.1"], port=free_port(), protocol_version=3)
    result = start_with(tmp_path, CAPACITY_JOURNAL=journal.model_dump_json())
    assert result.returncode == 1
    line = the_line(result)
    assert line.startswith(f"cannot start: cannot reach Cassandra at 127.0.0.1:{journal.port}")


@pytest.fixture
def user_without_create(postgres_settings: SqlJournalSettings) -> Iterator[str]:
    """A database whose user may connect but not create tables (PostgreSQL 15's default for the public
    schema): the operator must create the journal's tables, or grant CREATE."""
    admin = postgres_settings.url.replace("postgresql+psycopg://", "postgresql://")
    name = f"refused_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {name} LOGIN")
        conn.execute(f"CREATE DATABASE {name}")
    base = postgres_settings.url.rsplit("/", 1)[0].replace("postgres@", f"{name}@")
    yield f"{base}/{name}"


@pytest.mark.postgres
def test_a_postgresql_user_who_may_not_create_the_tables_is_told_to_grant(
    tmp_path: Path, user_without_create: str
) -> None:
    result = start_with(tmp_path, CAPACITY_JOURNAL_URL=user_without_create)
    assert result.returncode == 1
    line = the_line(result)
    assert "cannot create or read its tables" in line and "grant the user CREATE" in line


def test_serve_run_fails_the_deploy_of_a_journal_that_cannot_work(tmp_path: Path) -> None:
    """`serve run` of a config builds the app on the cluster: the build fails (the app is DEPLOY_FAILED)
    with the line, which `serve run` prints. Serve's own `serve run` then keeps running until Ctrl-C, as
    after any failed deploy of a config."""
    config = config_copy("serve_config.yaml", tmp_path, free_port())
    log = tmp_path / "serve.log"
    process = subprocess.Popen(
        [str(BIN / "serve"), "run", str(config)],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        text=True,
        env={**ENV, "CAPACITY_JOURNAL_URL": closed_port_url()},
        cwd=tmp_path,
        start_new_session=True,
        preexec_fn=_answer_ctrl_c,
    )
    try:
        refused = wait_until(lambda: "JournalUnusable: cannot reach the postgresql journal" in log.read_text(), 150)
    finally:
        stop_serve_run(process, log)
    output = log.read_text()
    assert refused, output[-3000:]
    assert "start it, or fix CAPACITY_JOURNAL_URL" in output
    assert "s3cret-pw" not in output


@pytest.mark.postgres
def test_while_the_journal_is_down_readyz_says_why_and_the_service_heals(tmp_path: Path) -> None:
    """The journal goes away under a running `start`: /readyz answers 503 naming the journal and why, the
    log says it once per interval rather than once per failure, and all is well again once it is back."""
    work = tmp_path / "postgres"
    work.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(work, 0o755)  # PostgreSQL runs as its own user
    postgres = LocalPostgres(work)
    postgres.start()
    data = tmp_path / "data"
    data.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [str(BIN / "capacity-service"), "--data-dir", str(data), "start", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **LOCAL_RAY, "CAPACITY_JOURNAL_URL": postgres.url},
        start_new_session=True,
    )
    try:
        wait_ready(url, process)
        created = httpx.put(f"{url}/v1/pools/north:health", json={"capacity": 5, "zone": "north"}, timeout=30)
        assert created.status_code == 201, created.text
        postgres.stop()

        def says_why() -> bool:
            answer = httpx.get(f"{url}/readyz", timeout=10)
            journal = answer.json().get("checks", {}).get("journal", "")
            return answer.status_code == 503 and "postgresql journal" in journal and "refused" in journal.lower()

        assert wait_until(says_why, 60, 0.5), httpx.get(f"{url}/readyz", timeout=10).text
        for _ in range(30):  # writes fail fast meanwhile, and take nothing
            answer = httpx.post(f"{url}/v1/reservations", json={"pool_id": "north:health", "quantity": 1}, timeout=30)
            assert answer.status_code in (503, 504), answer.text
        postgres.start()
        assert wait_until(lambda: httpx.get(f"{url}/readyz", timeout=10).status_code == 200, 90, 0.5)
        reserved = httpx.post(f"{url}/v1/reservations", json={"pool_id": "north:health", "quantity": 1}, timeout=30)
        assert reserved.status_code == 201, reserved.text
    finally:
        output = stop(process)
        postgres.stop()
    write_failures = [line for line in output.splitlines() if "journal write failed" in line]
    assert len(write_failures) <= 6, write_failures[:10]
