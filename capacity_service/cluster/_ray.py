"""Every Ray API call of capacity_service goes through here, so the rest stays testable without Ray
and Ray's exceptions are translated in one place."""

from __future__ import annotations

import asyncio
import os
from typing import Any, cast

import ray
from ray.actor import ActorHandle
from ray.exceptions import (
    ActorDiedError,
    ActorUnavailableError,
    GetTimeoutError,
    RayActorError,
    RaySystemError,
)

__all__ = ["ActorGone", "Handle", "ask", "ensure_actor", "ensure_initialized", "lookup_actor", "tell"]


Handle = ActorHandle[Any]


class ActorGone(Exception):
    """The actor died, is restarting, or did not answer in time: look it up again and retry."""


_ACTOR_ERRORS = (RayActorError, ActorDiedError, ActorUnavailableError, RaySystemError)
_remote_classes: dict[type, Any] = {}


LOOPBACK = "127.0.0.1"


def ensure_initialized(address: str | None = None, namespace: str | None = None) -> None:
    """Connect this process to Ray (inside Ray workers and Serve replicas it already is). A local Ray
    started here listens on loopback only: Ray binds its servers to the node IP it is given."""
    if not ray.is_initialized():
        ray.init(address=address, namespace=namespace, log_to_driver=False, **local_only_options(address))


def local_only_options(address: str | None) -> dict[str, Any]:
    """``ray.init`` options for a local Ray that listens on loopback only (none when joining a cluster)."""
    if address not in (None, "local"):
        return {}
    return {"_node_ip_address": LOOPBACK, "include_dashboard": False}


def ensure_actor(
    actor_class: type, name: str, namespace: str, args: tuple[Any, ...], resources: dict[str, float]
) -> Handle:
    """The named detached actor, created if it does not exist (restarted by Ray forever)."""
    remote_class = _remote_classes.get(actor_class)
    if remote_class is None:
        remote_class = _remote_classes[actor_class] = ray.remote(actor_class)
    handle = remote_class.options(
        name=name,
        namespace=namespace,
        get_if_exists=True,
        lifetime="detached",
        max_restarts=-1,
        max_task_retries=0,  # retries are ours (idempotent by request id), with fresh handles
        num_cpus=0,  # pool actors wait on the journal; CPU is not what bounds how many fit on a node
        resources=resources or None,
        max_concurrency=10_000,
    ).remote(*args)
    return cast(Handle, handle)


def lookup_actor(name: str, namespace: str) -> Handle | None:
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        return None


async def ask(handle: Handle, method: str, *args: Any, timeout: float) -> Any:
    """Call an actor method and await the answer, translating Ray's failures into ``ActorGone``."""
    ref = getattr(handle, method).remote(*args)
    try:
        return await asyncio.wait_for(asyncio.wrap_future(ref.future()), timeout)
    except TimeoutError as exc:
        raise ActorGone(f"{method} did not answer within {timeout:.1f} s") from exc
    except (*_ACTOR_ERRORS, GetTimeoutError) as exc:
        raise ActorGone(f"{type(exc).__name__}: {exc}") from exc


def tell(handle: Handle, method: str, *args: Any) -> None:
    """Fire-and-forget: send and never wait; a lost message is repaired elsewhere."""
    getattr(handle, method).remote(*args)


def kill_actor(handle: Handle, restart: bool) -> None:
    ray.kill(handle, no_restart=not restart)


def process_id() -> int:
    return os.getpid()
