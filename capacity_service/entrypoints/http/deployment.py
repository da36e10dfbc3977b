"""The Ray Serve deployment of the HTTP API.

    serve run serve_config.yaml             # the foreground, on a local Ray
    serve deploy serve_config.yaml          # onto a running Ray cluster

The deployment's constructor arguments are the non-secret settings (Serve keeps them in its config);
each replica reads the secrets (API keys, Cassandra password) from its own environment.
"""

from __future__ import annotations

import logging
from typing import Any

from ray import serve
from ray.serve import Application
from starlette.types import ASGIApp

from capacity_service.adapters.journal.preflight import check_journal
from capacity_service.application import tracing
from capacity_service.entrypoints.http.app import create_app
from capacity_service.entrypoints.http.backend import ServiceBackend
from capacity_service.entrypoints.http.ingress import serve_fast_lane
from capacity_service.runtime import _ray, service
from capacity_service.runtime.environment import metrics_collected
from capacity_service.runtime.metrics import RayRequestMetrics
from capacity_service.settings import service_settings

log = logging.getLogger(__name__)


@serve.deployment(
    name="CapacityApi",
    max_ongoing_requests=512,
    ray_actor_options={"num_cpus": 0},
)
@serve.ingress()
class CapacityApi:
    def __init__(self, args: dict[str, Any]) -> None:
        _bind_replica_grpc_to_node_ip()
        _let_replica_http_reuse_its_port()
        self._settings = service_settings(args)
        tracing.log_to_stderr(json_lines=self._settings.log_format == "json")
        self._backend = ServiceBackend(self._settings)

    def __serve_build_asgi_app__(self) -> ASGIApp:
        edge = create_app(self._backend, self._settings.http, RayRequestMetrics() if metrics_collected() else None)
        serve_fast_lane(edge)
        return edge


def _bind_replica_grpc_to_node_ip() -> None:
    """Serve 2.60 opens each replica's inter-deployment gRPC server on every interface (``[::]:0``,
    hard-coded), though the callers it serves connect to the node's IP and port. Bind the node's IP
    alone, so that a loopback-only Ray (node IP 127.0.0.1) listens on loopback only. Serve starts that
    server after this deployment's constructor, in the same process: the patch is in time. A Serve
    without the hook keeps its own behaviour."""
    from ray.serve._private import replica  # private: checked, and skipped when it changes

    bind = getattr(replica, "add_port_to_grpc_server", None)
    if bind is None:
        log.warning("Serve changed: its replica gRPC server keeps its own bind address")
        return
    if getattr(bind, "binds_node_ip", False):
        return  # patched already (another replica in this process)
    node_ip = _ray.node_ip_address()
    if ":" in node_ip:
        node_ip = f"[{node_ip}]"

    def bind_node_ip(server: Any, address: str) -> int:
        if address.startswith("[::]:"):
            address = f"{node_ip}:{address.removeprefix('[::]:')}"
        port: int = bind(server, address)
        return port

    bind_node_ip.binds_node_ip = True  # type: ignore[attr-defined]
    replica.add_port_to_grpc_server = bind_node_ip  # type: ignore[attr-defined]


def _let_replica_http_reuse_its_port() -> None:
    """A replica answering HTTP itself (``capacity-service start``) binds its port without SO_REUSEADDR, so
    the connections it closed first (``Connection: close`` clients) sit in TIME-WAIT for a minute and block
    any new listener on that port: a restart right after a stop failed. Serve's own proxies set it (with
    SO_REUSEPORT, which Serve's port allocation for replicas expects too); the replica is told to do the
    same. A Serve without the hook keeps its own behaviour."""
    from ray.serve._private import replica  # private: checked, and skipped when it changes

    start = getattr(replica, "start_asgi_http_server", None)
    if start is None:
        log.warning("Serve changed: its replica HTTP server binds without address reuse")
        return
    if getattr(start, "reuses_port", False):
        return

    async def start_reusing_port(*args: Any, **kwargs: Any) -> Any:
        kwargs["enable_so_reuseport"] = True
        return await start(*args, **kwargs)

    start_reusing_port.reuses_port = True  # type: ignore[attr-defined]
    replica.start_asgi_http_server = start_reusing_port  # type: ignore[attr-defined]


def build_app(args: dict[str, Any]) -> Application:
    """The application builder named by the Serve configs' ``import_path``: Serve passes the ``args`` alone
    (the replicas and other deployment options come from the config's ``deployments`` section). A journal
    that cannot work fails the deploy here, with what to do (`start` checks it before it starts Ray)."""
    check_journal(service_settings(args).journal)
    return application(args)


def application(args: dict[str, Any], replicas: int | None = None) -> Application:
    """The app on the running Ray cluster. Fixes the service's settings first (the shard count counted
    from the cluster; ``service.establish`` refuses a redeploy that would change what the pool, cache and
    warehouse actors were started with), so wrong args fail at deploy time, not in every replica. The
    replicas are given the args (secrets stay in each node's environment, out of Serve's config) with the
    shard count fixed."""
    _ray.ensure_initialized()
    running = service.establish(service_settings(args))
    service.start_watchdog(running.hosting.namespace)
    bound = dict(args)
    bound["hosting"] = {
        **dict(args.get("hosting") or {}),
        "mode": running.hosting.mode,
        "shards": running.hosting.shards,
    }
    deployment: Any = CapacityApi  # a serve.Deployment at runtime; the decorators hide that from mypy
    if replicas is not None:
        deployment = deployment.options(num_replicas=replicas)
    built: Application = deployment.bind(bound)
    return built
