"""The fast lane, mounted in front of Serve's own per-request work in the replica's HTTP server.

When a Serve replica serves HTTP itself (direct ingress), every request first passes Serve's wrapper:
request ids, route matching, request metadata, a task watching for the client to disconnect, queue
accounting and metrics. For our hot calls that cost more CPU than the call itself (~0.3 ms of the
replica's ~0.8 ms per reserve), and the replica's one event loop is what a request waits for.

Serve's documented hook for ingress middlewares (``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``, read by
Serve at import: ``capacity-service start`` sets it) puts ``FastLaneMiddleware`` outermost. It hands every
HTTP request straight to the ``Edge`` of the deployment in this process: the ``Edge`` answers the hot
calls (availability, reserve) itself and passes the rest to the FastAPI app: Serve's wrapper around the
app halved the rate of the other calls (a pool's GET, health checks). Where no ``Edge`` runs
(Serve's proxy process, a replica still starting, another event loop), it passes every request on.

The middleware sees paths before Serve applies the application's route prefix: it assumes the app at
``/``, as ``start`` deploys it. Leave the hook unset for an app under another prefix.

What the fast lane gives up: Serve's request metrics and its own ``x-request-id`` header (the ``Edge``
gives every answer one, see ``request_ids.py``), and
``max_ongoing_requests`` no longer bounds requests (the router bounds the commands in flight and each
pool's queue, and every command has its deadline).
"""

from __future__ import annotations

import asyncio
import logging

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from capacity_service.entrypoints.http.edge import Edge

__all__ = ["FastLaneMiddleware", "middlewares", "serve_fast_lane"]

log = logging.getLogger(__name__)

# The Edge of the deployment running in this process, and the loop its router and channels live on.
_mounted: tuple[Edge, asyncio.AbstractEventLoop] | None = None


def serve_fast_lane(edge: Edge) -> None:
    """Called by the deployment once its ``Edge`` is built (Serve builds it on the replica's event loop;
    built anywhere else, requests simply keep going through Serve)."""
    global _mounted
    try:
        _mounted = (edge, asyncio.get_running_loop())
    except RuntimeError:
        log.warning("the deployment was built outside an event loop: no fast lane ahead of Serve")


def middlewares() -> list[Middleware]:
    """What Serve calls through ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``."""
    return [Middleware(FastLaneMiddleware)]


class FastLaneMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        mounted = _mounted
        if mounted is not None and scope["type"] == "http" and asyncio.get_running_loop() is mounted[1]:
            await mounted[0](scope, receive, send)
            return
        await self.app(scope, receive, send)
