"""The Ray Serve deployment of the HTTP API.

    serve run serve_config.yaml                                  # or:
    serve run capacity_service.http.deployment:build_app journal.url=...

The deployment's constructor arguments are the non-secret settings (Serve keeps them in its config);
each replica reads the secrets (API keys, Cassandra password) from its own environment.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application
from starlette.types import ASGIApp

from capacity_service.http.app import create_app
from capacity_service.http.backend import ServiceBackend
from capacity_service.http.ingress import serve_fast_lane
from capacity_service.settings import service_settings


@serve.deployment(
    name="CapacityApi",
    max_ongoing_requests=512,
    ray_actor_options={"num_cpus": 0},
)
@serve.ingress()
class CapacityApi:
    def __init__(self, args: dict[str, Any]) -> None:
        self._settings = service_settings(args)
        self._backend = ServiceBackend(self._settings)

    def __serve_build_asgi_app__(self) -> ASGIApp:
        edge = create_app(self._backend, self._settings.http)
        serve_fast_lane(edge)
        return edge


def build_app(args: dict[str, Any], replicas: int | None = None) -> Application:
    """The application builder named by serve_config.yaml's ``import_path`` (which sets the replicas)."""
    service_settings(args)  # fail at deploy time, not in every replica, when the args are wrong
    deployment: Any = CapacityApi  # a serve.Deployment at runtime; the decorators hide that from mypy
    if replicas is not None:
        deployment = deployment.options(num_replicas=replicas)
    application: Application = deployment.bind(dict(args))
    return application
