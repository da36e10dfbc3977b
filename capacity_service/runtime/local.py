"""A multi-node Ray cluster on this machine, on 127.0.0.1 only: a head that hosts no pools and N worker
nodes, each its own raylet with its own worker processes, as on separate machines. For demos
(``capacity-service cluster``), the multi-node tests and the failover benchmark.

Why ``ray.cluster_utils.Cluster`` and not ``ray start``: on Ray 2.60 a worker node's ``ray start
--address`` refuses to run with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, and without it every node's GCS,
raylet, worker and agent ports listen on all interfaces even with ``--node-ip-address=127.0.0.1`` (seen
with ``ss -ltnp``). ``Cluster`` starts the same processes as ``ray start`` would, per node, and with that
switch at 0 they all listen on 127.0.0.1. On real machines, ``cluster.yaml`` uses ``ray start``.

Like ``_ray.py`` this module talks to Ray directly: it is the Ray layer's own test and demo harness.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import ray
from ray._private import ray_constants
from ray._private.node import Node
from ray._raylet import Config  # type: ignore[attr-defined]
from ray.cluster_utils import Cluster

from capacity_service.runtime.health import FAST_FAILURE_DETECTION

POOL_RESOURCE = "pool_host"  # offered by worker nodes only
POOL_RESOURCES = {POOL_RESOURCE: 0.001}  # what a pool actor asks for (HostingSettings.actor_resources)


@dataclass
class LocalCluster:
    cluster: Cluster
    workers: list[Node]

    @property
    def head(self) -> Node:
        return cast(Node, self.cluster.head_node)

    @property
    def address(self) -> str:
        return str(self.cluster.address)

    def add_worker(self) -> Node:
        node: Node = self.cluster.add_node(
            # A raylet starts at most num_cpus worker processes at once, and a failover starts one per
            # relocated actor: 2, not Cluster's default 1.
            num_cpus=2,
            resources={POOL_RESOURCE: 1000},
        )
        self.workers.append(node)
        return node

    def remove_worker(self, node: Node) -> None:
        """Kill every process of the node at once (SIGKILL): a machine that lost power."""
        self.workers.remove(node)
        self.cluster.remove_node(node, allow_graceful=False)

    def worker_of(self, node_id: str) -> Node:
        return next(node for node in self.workers if node.node_id == node_id)

    def logs_dir(self) -> Path:
        return Path(self.head.get_logs_dir_path())  # type: ignore[no-untyped-call]


def raylet_pid(node: Node) -> int:
    process = node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process
    return int(process.pid)


@contextmanager
def local_cluster(workers: int = 3) -> Iterator[LocalCluster]:
    """A head (no CPU, no ``pool_host``: no pools) and ``workers`` workers, this process connected to it
    as the driver, failure detection as in ``health.py``. A process is connected to one Ray at a time:
    a connection this process had is closed first and a local Ray started again afterwards.

    Its Ray temp dir is private, so its address file never lands in /tmp/ray, where any ``ray.init()``
    on this machine would find the cluster and join it. Token auth is on, as in ``cluster.yaml``."""
    if ray_constants.ENABLE_RAY_CLUSTER:
        raise RuntimeError(
            "set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before Ray is imported: otherwise every node of the "
            "local cluster listens on all interfaces"
        )
    was_connected = ray.is_initialized()
    if was_connected:
        ray.shutdown()
    saved = {name: os.environ.get(name) for name in ("RAY_TMPDIR", "RAY_AUTH_MODE")}
    temp_dir = tempfile.mkdtemp(prefix="cs-ray-")  # short: Ray's socket paths live under it
    os.environ["RAY_TMPDIR"] = temp_dir
    os.environ["RAY_AUTH_MODE"] = "token"  # every node inherits it: one mode for the whole cluster
    _ensure_auth_token()
    Config.initialize("")  # and this process reads it again (Ray caches it; its own token setup does this)
    cluster: Cluster | None = None
    try:
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 0,
                "include_dashboard": False,
                "_system_config": dict(FAST_FAILURE_DETECTION),
            },
        )
        local = LocalCluster(cluster, [])
        for _ in range(workers):
            local.add_worker()
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        yield local
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()  # type: ignore[no-untyped-call]
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(temp_dir, ignore_errors=True)
        if was_connected:
            start_local_ray()


def start_local_ray(**options: Any) -> None:
    """The single-node local Ray of the test session (and what ``local_cluster`` reconnects to)."""
    # "local": without an address, ray.init joins whatever Ray runs on this machine.
    ray.init(address="local", num_cpus=2, log_to_driver=False, include_dashboard=False, **options)


def _ensure_auth_token() -> None:
    """Token mode needs a token: ~/.ray/auth_token, made once by Ray's own command if missing."""
    if os.environ.get("RAY_AUTH_TOKEN") or (Path.home() / ".ray" / "auth_token").exists():
        return
    ray_cli = Path(sys.executable).parent / "ray"
    subprocess.run([str(ray_cli), "get-auth-token", "--generate"], check=True, capture_output=True)
