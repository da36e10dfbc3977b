"""Every environment setting the service gives Ray and Serve, each with why, in one place. Ray and Serve
read them when they are imported (in this process and in every Ray process started from it), so the
entry points apply them before importing Ray (``apply``)."""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

# Whether Ray collects metrics (its own and ray.util.metrics): on unless "0".
METRICS_COLLECTION = "RAY_enable_metrics_collection"

# A single-node Ray listens on 127.0.0.1 only (see runtime/_ray.py); set for every local run.
LOCAL_RAY: dict[str, str] = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def start_environment(port: int, fast_ingress: bool, metrics: bool = False) -> tuple[dict[str, str], dict[str, str]]:
    """What ``capacity-service start`` sets: (always, unless already set)."""
    always = {
        # Serve lets the replica answer HTTP itself ("direct ingress"): Serve's Python proxy costs more CPU
        # per request than the app's own work.
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    }
    defaults = {
        **LOCAL_RAY,
        # A directly reachable replica keeps serving for 30 s when stopped, for outside load balancers to
        # notice; here there is none (or only our own HAProxy, told at once), and Ctrl-C would wait for it.
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
        # Metrics (Ray's and the service's) are exported by Ray's metrics agent; `start --no-metrics` turns
        # them off.
        METRICS_COLLECTION: "1" if metrics else "0",
        # Serve's controller reconciles every 0.1 s by default, a steady cost on an idle service; a fixed
        # set of replicas needs no such haste (their health checks run every 10 s anyway).
        "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5",
        # Requests answered ahead of Serve's per-request wrapper in the replica (http/ingress.py).
        "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "capacity_service.entrypoints.http.ingress:middlewares",
    }
    if fast_ingress:
        always["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
    else:
        # The one replica listens on the port itself, and a replica restarted by Serve takes it back at
        # once. Serve's Python proxy cannot be turned off without turning direct ingress off too: it listens
        # on a port the kernel picks at its bind (port 0), and nobody is told about it. (A port picked here
        # and bound later can be taken in between by Ray's own processes.)
        always["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"] = str(port)
        always["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"] = str(port + 1)
        always["RAY_SERVE_PORT_QUARANTINE_S"] = "0"
    return always, defaults


def apply(
    always: dict[str, str], defaults: dict[str, str] | None = None, environ: MutableMapping[str, str] | None = None
) -> None:
    """Set ``always`` and, where not set already, ``defaults`` (the caller's own choice wins)."""
    env = os.environ if environ is None else environ
    env.update(always)
    for name, value in (defaults or {}).items():
        env.setdefault(name, value)


def metrics_collected(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process's Ray collects metrics (``start`` sets it: on unless ``--no-metrics``). When it does
    not, the service records and refreshes nothing: the hot paths skip the calls, the gauge loops do not run."""
    return (os.environ if environ is None else environ).get(METRICS_COLLECTION, "1") != "0"
