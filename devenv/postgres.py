"""A throwaway PostgreSQL server on loopback, for tests and benchmarks.

Uses the Debian ``postgresql`` binaries (``/usr/lib/postgresql/15/bin``). PostgreSQL refuses
to run as root, so when we are root the cluster is created and run as the ``postgres``
OS user. The server runs in the foreground (``postgres -D``, not ``pg_ctl start``) so that
it is our child and can be stopped, killed and paused like Cassandra.
"""

import contextlib
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

from devenv._process import (
    LOOPBACK,
    ServerError,
    ServerProcess,
    free_port,
    kill_tree,
    listens_on,
    run_logged,
    spawn,
    terminate_tree,
    wait_until,
)

DEFAULT_BIN_DIR = Path("/usr/lib/postgresql/15/bin")

# Passed with -c on every start (not written to postgresql.conf) so that they also apply
# to clusters created by an older version of this module.
# No fsync: it dominates test time and only protects against an OS crash. Commits still
# write() their WAL before returning, so everything committed survives kill().
# synchronous_commit must stay on: with it off, the last commits sit in WAL buffers in
# shared memory for up to ~0.6 s and are lost when the server is killed.
_SETTINGS = {
    "listen_addresses": LOOPBACK,
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "on",
}

_UNIX_SOCKET_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux


def find_bin_dir() -> Path:
    """Directory holding initdb/postgres: the Debian PostgreSQL 15 one, else from PATH."""
    if (DEFAULT_BIN_DIR / "postgres").exists():
        return DEFAULT_BIN_DIR
    found = shutil.which("initdb")
    if found is None:
        raise ServerError(f"PostgreSQL binaries not found in {DEFAULT_BIN_DIR} nor on PATH")
    return Path(found).resolve().parent


class LocalPostgres(ServerProcess):
    """One PostgreSQL cluster listening on 127.0.0.1 only, everything under ``work_dir``.

    ``start()`` after ``stop()`` or ``kill()`` reuses the same cluster, so data survives.
    """

    def __init__(
        self,
        work_dir: Path,
        port: int | None = None,
        *,
        database: str = "capacity",
        bin_dir: Path | None = None,
        durable: bool = False,
    ) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", database):
            raise ValueError(f"database name must be a plain lower-case identifier: {database!r}")
        self.work_dir = Path(work_dir).resolve()
        self._port = port if port is not None else free_port()
        # durable=True: fsync every commit, as a production server does (benchmarks compare like with like).
        self._settings = {**_SETTINGS, "fsync": "on", "full_page_writes": "on"} if durable else dict(_SETTINGS)
        self.database = database
        self.bin_dir = bin_dir if bin_dir is not None else find_bin_dir()
        self.data_dir = self.work_dir / "data"
        self.log_path = self.work_dir / "logs" / "postgres.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._uid: int | None = None  # set when we are root: run as the postgres user
        self._gid: int | None = None
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise ServerError("running as root but there is no 'postgres' OS user") from None
            self._uid, self._gid = pw.pw_uid, pw.pw_gid
        self.startup_seconds: float | None = None  # duration of the last successful start()

    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """SQLAlchemy URL using the psycopg 3 driver."""
        return f"postgresql+psycopg://postgres@{LOOPBACK}:{self._port}/{self.database}"

    @property
    def conninfo(self) -> str:
        """libpq URI, for psycopg.connect() or psql."""
        return f"postgresql://postgres@{LOOPBACK}:{self._port}/{self.database}"

    def start(self, timeout: float = 60) -> None:
        """Create the cluster if needed, start it, wait until ready, create the database."""
        if self.is_running:
            return
        began = time.monotonic()
        self._init_cluster()
        socket_dir = self.work_dir / "run"
        if len(str(socket_dir / f".s.PGSQL.{self._port}")) > _UNIX_SOCKET_PATH_MAX:
            socket_dir_arg = ""  # path too long for a Unix socket: TCP only
        else:
            socket_dir_arg = str(socket_dir)
        argv: list[str | Path] = [
            self.bin_dir / "postgres",
            "-D", self.data_dir,
            "-p", str(self._port),
            "-c", f"unix_socket_directories={socket_dir_arg}",
        ]  # fmt: skip
        for name, value in self._settings.items():
            argv += ["-c", f"{name}={value}"]
        self._proc = proc = spawn(
            argv, self.log_path, cwd=self.work_dir, env=self._env(), user=self._uid, group=self._gid
        )
        wait_until(
            lambda: listens_on(proc.pid, self._port) and self._accepting_connections(),
            proc,
            what=f"PostgreSQL (pid {proc.pid}, port {self._port})",
            timeout=timeout,
            log_path=self.log_path,
        )
        self._create_database()
        self.startup_seconds = time.monotonic() - began

    def stop(self, timeout: float = 30) -> None:
        """Fast shutdown (SIGINT to the postmaster, what ``pg_ctl stop -m fast`` sends); SIGKILL
        the process group if it has not finished within ``timeout``."""
        if self._proc is not None:
            terminate_tree(self._proc, signal.SIGINT, timeout)
            self._proc = None

    def kill(self) -> None:
        """SIGKILL the postmaster and all backends at once, like a crash; the next start()
        runs crash recovery."""
        if self._proc is not None:
            kill_tree(self._proc)
            self._proc = None
            # Every process of the group is dead, so the lock file is stale; removing it
            # avoids a refusal to start should its pid have been reused meanwhile.
            with contextlib.suppress(FileNotFoundError):
                (self.data_dir / "postmaster.pid").unlink()

    def _env(self) -> dict[str, str]:
        # PG* variables (PGDATA, PGPORT, ...) from the caller's shell must not redirect us.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        return env

    def _init_cluster(self) -> None:
        """initdb once; an existing cluster (PG_VERSION present) is reused as is."""
        if (self.data_dir / "PG_VERSION").exists():
            return
        for sub in ("", "run", "logs"):
            (self.work_dir / sub).mkdir(parents=True, exist_ok=True)
        if self.data_dir.exists():  # left over from an interrupted initdb
            shutil.rmtree(self.data_dir)
        if self._uid is not None and self._gid is not None:
            _grant_traverse(self.work_dir.parent, self._uid, self._gid)
            for sub in ("", "run"):
                os.chown(self.work_dir / sub, self._uid, self._gid)
        run_logged(
            [
                self.bin_dir / "initdb",
                "-D", self.data_dir,
                "-U", "postgres",
                "-A", "trust",
                "-E", "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
            self.log_path,
            cwd=self.work_dir,
            env=self._env(),
            user=self._uid,
            group=self._gid,
        )  # fmt: skip

    def _client_args(self, dbname: str) -> list[str]:
        return ["-h", LOOPBACK, "-p", str(self._port), "-U", "postgres", "-d", dbname]

    def _accepting_connections(self) -> bool:
        # pg_isready is 0 only once startup/crash recovery is over, unlike the bare TCP port.
        result = subprocess.run(
            [self.bin_dir / "pg_isready", "-q", "-t", "2", *self._client_args("postgres")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=self._env(),
            check=False,
        )
        return result.returncode == 0

    def _create_database(self) -> None:
        # CREATE DATABASE cannot run inside a DO block, hence psql's \gexec.
        sql = (
            f"SELECT 'CREATE DATABASE {self.database}' "
            f"WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{self.database}')\\gexec\n"
        )
        run_logged(
            [self.bin_dir / "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", *self._client_args("postgres")],
            self.log_path,
            cwd=self.work_dir,
            env=self._env(),
            input_text=sql,
            timeout=60,
        )


def _grant_traverse(directory: Path, uid: int, gid: int) -> None:
    """Let ``uid`` reach ``directory``: add the search (x) bit where an ancestor lacks it.

    Needed when root runs the server as ``postgres`` under a private directory, e.g.
    pytest's /tmp/pytest-of-root (mode 0700). Only search is granted, never listing.
    """
    for path in (directory, *directory.parents):
        st = path.stat()
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid == gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            os.chmod(path, stat.S_IMODE(st.st_mode) | bit)
