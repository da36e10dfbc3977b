"""Every Ray API call of capacity_service goes through here, so the rest stays testable without Ray
and Ray's exceptions are translated in one place."""

from __future__ import annotations

import asyncio
import os
import pickle
from typing import Any, TypeVar, cast

import ray
from ray.actor import ActorHandle
from ray.exceptions import (
    ActorDiedError,
    ActorUnavailableError,
    GetTimeoutError,
    RayActorError,
    RaySystemError,
)
from ray.util import metrics as ray_metrics
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from capacity_service.runtime.actor_api import Call

__all__ = [
    "ActorGone",
    "Handle",
    "alive_node_ids",
    "ask",
    "ask_now",
    "counter",
    "current_node_id",
    "ensure_actor",
    "ensure_initialized",
    "gauge",
    "gcs_address",
    "kill_actor",
    "kill_namespace",
    "lookup_actor",
    "named_actors",
    "node_ip_address",
    "plain",
    "pool_host_cpus",
    "tell",
]


Handle = ActorHandle[Any]
T = TypeVar("T")


class ActorGone(Exception):
    """The actor died, is restarting, or did not answer in time: look it up again and retry."""


_ACTOR_ERRORS = (RayActorError, ActorDiedError, ActorUnavailableError, RaySystemError)
_remote_classes: dict[type, Any] = {}


# Loopback only: Ray takes its node IP from the default route and binds its servers there, even when
# told 127.0.0.1 (it "resolves" loopback to the outward address). With RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
# Ray treats the machine as a single node on 127.0.0.1. Ray reads it at import, so our local entry points
# (scripts/, the CLI's start, tests, benchmarks) set it first; a process joining a real cluster must not.


class _PickledInC:
    """A value pickled once, by the C pickler; unpickling gives the value itself (see ``plain``)."""

    __slots__ = ("_data",)

    def __init__(self, value: object) -> None:
        self._data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        return (pickle.loads, (self._data,))


def plain(value: T) -> T:
    """``value`` as an argument or result that Ray hands over pickled by the C pickler: the receiver
    gets ``value`` itself. Ray pickles with cloudpickle, whose Python hook runs for every object, several
    times slower than ``pickle.dumps`` on a batch of events. Only for plain data (no actor handles or object
    refs: those need Ray's own pickler). Pickled once here, however many actors it is sent to."""
    return cast(T, _PickledInC(value))


def ensure_initialized(address: str | None = None, namespace: str | None = None) -> None:
    """Connect this process to Ray (inside Ray workers and Serve replicas it already is)."""
    if not ray.is_initialized():
        ray.init(address=address, namespace=namespace, log_to_driver=False, include_dashboard=False)


def ensure_actor(
    actor_class: type,
    name: str,
    namespace: str,
    args: tuple[Any, ...],
    resources: dict[str, float],
    node_id: str | None = None,
) -> Handle:
    """The named detached actor, created if it does not exist (restarted by Ray forever). With
    ``node_id`` it is pinned to that node."""
    remote_class = _remote_classes.get(actor_class)
    if remote_class is None:
        remote_class = _remote_classes[actor_class] = ray.remote(actor_class)
    # Unpinned actors are spread over the nodes that can host them: Ray's default packs num_cpus=0
    # actors onto one node, so losing that node would take every pool down at once.
    placement: dict[str, Any] = {"scheduling_strategy": "SPREAD"}
    if node_id is not None:
        placement["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
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
        **placement,
    ).remote(*args)
    return cast(Handle, handle)


def lookup_actor(name: str, namespace: str) -> Handle | None:
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        return None


async def ask(handle: Handle, call: Call[T], timeout: float) -> T:
    """Make ``call`` on the actor and await the answer, translating Ray's failures into ``ActorGone``."""
    ref = getattr(handle, call.method).remote(*call.args)
    try:
        async with asyncio.timeout(timeout):  # not wait_for: that wraps every call in one more task
            return cast(T, await asyncio.wrap_future(ref.future()))
    except TimeoutError as exc:
        raise ActorGone(f"{call.method} did not answer within {timeout:.1f} s") from exc
    except (*_ACTOR_ERRORS, GetTimeoutError) as exc:
        raise ActorGone(f"{type(exc).__name__}: {exc}") from exc


def ask_now(handle: Handle, call: Call[T], timeout: float) -> T:
    """``ask`` for synchronous code (application builders, the CLI): blocks until the answer."""
    ref = getattr(handle, call.method).remote(*call.args)
    try:
        return cast(T, ray.get(ref, timeout=timeout))
    except (*_ACTOR_ERRORS, GetTimeoutError) as exc:
        raise ActorGone(f"{type(exc).__name__}: {exc}") from exc


def tell(handle: Handle, call: Call[Any]) -> None:
    """Fire-and-forget: send and never wait; a lost message is repaired elsewhere."""
    getattr(handle, call.method).remote(*call.args)


def kill_actor(handle: Handle, restart: bool) -> None:
    ray.kill(handle, no_restart=not restart)


def process_id() -> int:
    return os.getpid()


def actor_was_restarted() -> bool:
    """Inside an actor: whether Ray restarted it (after its process or node died)."""
    return bool(ray.get_runtime_context().was_current_actor_reconstructed)


def current_node_id() -> str:
    return str(ray.get_runtime_context().get_node_id())


def node_ip_address() -> str:
    """The address other nodes reach this one at (127.0.0.1 in a loopback-only local Ray)."""
    return str(ray.util.get_node_ip_address())  # type: ignore[no-untyped-call]


def gcs_address() -> str:
    """The address a process on this machine gives ``ray.init`` to join this process's Ray cluster."""
    return str(ray.get_runtime_context().gcs_address)


def alive_node_ids() -> list[str]:
    return [node["NodeID"] for node in ray.nodes() if node.get("Alive")]  # type: ignore[no-untyped-call]


def pool_host_cpus(resources: dict[str, float]) -> float:
    """The CPUs of the alive nodes that offer every one of ``resources`` (all nodes when it is empty)."""
    total = 0.0
    for node in ray.nodes():  # type: ignore[no-untyped-call]
        offered = node.get("Resources", {})
        if node.get("Alive") and all(offered.get(name, 0) >= need for name, need in resources.items()):
            total += float(offered.get("CPU", 0))
    return total


def kill_namespace(namespace: str) -> None:
    """Kill every named actor of ``namespace`` for good (a deployment's pools, caches, supervisor)."""
    for name in named_actors(namespace, ""):
        handle = lookup_actor(name, namespace)
        if handle is not None:
            kill_actor(handle, restart=False)


def named_actors(namespace: str, prefix: str) -> list[str]:
    """Names of the live named actors of ``namespace`` that start with ``prefix``."""
    return sorted(
        actor["name"]
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if actor["namespace"] == namespace and actor["name"].startswith(prefix)
    )


class ActorCalls:
    """The calls a router makes to Ray, as one object it is given: tests hand it a fake instead of patching
    this module's functions."""

    async def ask(self, handle: Handle, call: Call[T], timeout: float) -> T:
        return await ask(handle, call, timeout)

    def lookup_actor(self, name: str, namespace: str) -> Handle | None:
        return lookup_actor(name, namespace)

    def ensure_actor(
        self, actor_class: type, name: str, namespace: str, args: tuple[Any, ...], resources: dict[str, float]
    ) -> Handle:
        return ensure_actor(actor_class, name, namespace, args, resources)

    def current_node_id(self) -> str:
        return current_node_id()


# Metrics, exported by Ray's metrics agent on each node for Prometheus (names get Ray's "ray_" prefix).


def counter(name: str, description: str, tag_keys: tuple[str, ...] = ()) -> ray_metrics.Counter:
    return ray_metrics.Counter(name, description, tag_keys=tag_keys)


def gauge(name: str, description: str, tag_keys: tuple[str, ...] = ()) -> ray_metrics.Gauge:
    return ray_metrics.Gauge(name, description, tag_keys=tag_keys)
