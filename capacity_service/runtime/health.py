"""How fast Ray notices a dead node, in one place: the local multi-node cluster, the tests, the benchmark
and ``cluster.yaml`` use these numbers (a unit test checks that ``cluster.yaml`` says the same).

Ray's GCS health-checks every raylet: a node is declared dead after ``health_check_failure_threshold``
consecutive failed checks, ``health_check_period_ms`` apart, each failing after at most
``health_check_timeout_ms``. Ray 2.60's defaults (3,000 ms, 10,000 ms, 5 failures) take 15-60 s; these
take ~3 s for a crashed node (its port refuses at once) and <= ~6 s for a frozen one (every check times
out). The price is a false "dead" for a node that stalls longer than that (a long GC pause, a saturated
network): its actors are restarted elsewhere and its old incarnations are fenced by the journal, which
is safe, but costs a failover. Only the GCS (head node) reads these; they are given to it as
``RAY_<name>`` environment variables or as ``_system_config``.
"""

from __future__ import annotations

FAST_FAILURE_DETECTION: dict[str, int] = {
    "health_check_initial_delay_ms": 1000,
    "health_check_period_ms": 1000,
    "health_check_timeout_ms": 1000,
    "health_check_failure_threshold": 3,
}


def health_check_env() -> dict[str, str]:
    """The same settings as environment variables, for ``ray start`` on the head node."""
    return {f"RAY_{name}": str(value) for name, value in FAST_FAILURE_DETECTION.items()}
