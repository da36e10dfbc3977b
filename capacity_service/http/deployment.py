"""The Ray Serve deployment of the HTTP API.

    serve run serve_config.yaml                                  # or:
    serve run capacity_service.http.deployment:build_app journal.url=...

The deployment's constructor arguments are the non-secret settings (Serve keeps them in its config);
each replica reads the secrets (API keys, Cassandra password) from its own environment.
"""

from __future__ import annotations

import logging
from typing import Any

from ray import serve
from ray.serve import Application
from starlette.types import ASGIApp

from capacity_service.cluster import _ray
from capacity_service.http.app import create_app
from capacity_service.http.backend import ServiceBackend
from capacity_service.http.ingress import serve_fast_lane
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
        self._settings = service_settings(args)
        self._backend = ServiceBackend(self._settings)

    def __serve_build_asgi_app__(self) -> ASGIApp:
        edge = create_app(self._backend, self._settings.http)
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


def build_app(args: dict[str, Any], replicas: int | None = None) -> Application:
    """The application builder named by serve_config.yaml's ``import_path`` (which sets the replicas)."""
    service_settings(args)  # fail at deploy time, not in every replica, when the args are wrong
    deployment: Any = CapacityApi  # a serve.Deployment at runtime; the decorators hide that from mypy
    if replicas is not None:
        deployment = deployment.options(num_replicas=replicas)
    application: Application = deployment.bind(dict(args))
    return application
