"""The running service's settings, kept by its supervisor (a named detached actor of its namespace).

Every process that routes to pools must route as the service does: same journal, same hosting mode, same
shard count. So the settings are fixed once, when the service is first deployed (the shard count counted
from the cluster then), and everything else takes them from the running service: a deploy with other
settings for the actors is refused rather than half applied, and a client attaches with the service's.
"""

from __future__ import annotations

import math

from capacity_service.errors import SettingsMismatch, Unavailable
from capacity_service.runtime import _ray
from capacity_service.runtime.actor_api import SupervisorApi, call
from capacity_service.runtime.names import DEFAULT_NAMESPACE, SUPERVISOR_NAME
from capacity_service.runtime.supervisor import Supervisor
from capacity_service.settings import ServiceSettings, SqlJournalSettings

_ASK_TIMEOUT_S = 30.0


def with_shards_counted(settings: ServiceSettings) -> ServiceSettings:
    """``settings`` with the shard count fixed: as given, or one shard per CPU of the pool-host nodes (one
    on a SQLite journal)."""
    hosting = settings.hosting
    if hosting.mode != "sharded" or hosting.shards is not None:
        return settings
    if isinstance(settings.journal, SqlJournalSettings) and settings.journal.url.startswith("sqlite"):
        # SQLite takes one writer at a time, across processes too: a second shard process only waits for
        # the file lock.
        return settings.model_copy(update={"hosting": hosting.model_copy(update={"shards": 1})})
    cpus = _ray.pool_host_cpus(hosting.actor_resources)
    if cpus <= 0:
        raise SettingsMismatch(
            f"no alive node of the Ray cluster offers the pool actors' resources {hosting.actor_resources} with "
            "CPUs to count shards by: start the pool-host nodes first, or set hosting.shards"
        )
    shards = max(1, math.floor(cpus))
    return settings.model_copy(update={"hosting": hosting.model_copy(update={"shards": shards})})


def running_settings(namespace: str = DEFAULT_NAMESPACE) -> ServiceSettings | None:
    """The settings of the service running in ``namespace`` (None: none runs there)."""
    supervisor = _ray.lookup_actor(SUPERVISOR_NAME, namespace)
    if supervisor is None:
        return None
    settings: ServiceSettings = _ray.ask_now(supervisor, call(SupervisorApi.settings), _ASK_TIMEOUT_S)
    return settings


def attach(settings: ServiceSettings | None, namespace: str = DEFAULT_NAMESPACE) -> ServiceSettings:
    """The settings a client of the service uses: with none given, the running service's (in
    ``namespace``); else ``establish(settings)``, which refuses settings that disagree with it."""
    if settings is None:
        running = running_settings(namespace)
        if running is None:
            raise Unavailable(
                f"no capacity_service runs in Ray namespace {namespace!r} of this Ray cluster "
                "(start it first: `capacity-service start`, `serve run serve_config.yaml`)"
            )
        return running
    return establish(settings)


def establish(settings: ServiceSettings) -> ServiceSettings:
    """The settings every process of the service uses: the running service's, which must agree with
    ``settings`` in all that its actors were started with; or, when none runs yet, ``settings`` with the
    shard count fixed, registered as the service's."""
    namespace = settings.hosting.namespace
    running = running_settings(namespace)
    if running is None:
        fixed = with_shards_counted(settings)
        supervisor = _ray.ensure_actor(Supervisor, SUPERVISOR_NAME, namespace, (fixed,), {})
        # Two deploys racing: the first supervisor's settings win, and the loser must agree with them.
        running = _ray.ask_now(supervisor, call(SupervisorApi.settings), _ASK_TIMEOUT_S)
        assert running is not None
    differences = actor_setting_differences(running, settings)
    if differences:
        raise SettingsMismatch(
            f"capacity_service already runs in Ray namespace {namespace!r} with other "
            f"{', '.join(differences)} than given here. A client needs no settings: `CapacityClient()` takes the "
            "running service's. A deploy cannot change what the service's pool, cache and warehouse actors were "
            "started with; to apply such a change, stop the service "
            f"(`capacity-service stop --address auto --namespace {namespace}`: the Serve app and every actor of "
            "the namespace; pools recover from the journal), then deploy again. Only `http` settings and the Serve "
            "deployment options change on a running service."
        )
    return running.model_copy(update={"http": settings.http})


def start_watchdog(namespace: str = DEFAULT_NAMESPACE) -> None:
    """Start the supervisor's watchdog (idempotent): it recovers every registered pool. A deploy starts it
    at once, ahead of the HTTP replicas: a cold start of 10,000 pools otherwise began with the first
    requests recovering their pools one by one."""
    supervisor = _ray.lookup_actor(SUPERVISOR_NAME, namespace)
    if supervisor is not None:
        _ray.tell(supervisor, call(SupervisorApi.start))


def actor_setting_differences(running: ServiceSettings, wanted: ServiceSettings) -> list[str]:
    """The settings (dotted names) in which ``wanted`` differs from ``running``, ``http`` aside (only the
    Serve replicas read it). A shard count left unset in ``wanted`` agrees with any."""
    if wanted.hosting.shards is None and wanted.hosting.mode == running.hosting.mode:
        wanted = wanted.model_copy(
            update={"hosting": wanted.hosting.model_copy(update={"shards": running.hosting.shards})}
        )
    names: list[str] = []
    for section in ServiceSettings.model_fields:
        if section == "http":
            continue
        mine, theirs = getattr(running, section), getattr(wanted, section)
        if mine == theirs:
            continue
        fields = [f for f in type(mine).model_fields if getattr(mine, f) != getattr(theirs, f)]
        names.extend(f"{section}.{f}".rstrip(".") for f in fields or [""])
    return names


def stop(namespace: str = DEFAULT_NAMESPACE) -> list[str]:
    """Kill every named actor of the service's namespace for good; returns their names. The journal stays:
    pools recover from it when the service is deployed again."""
    names = _ray.named_actors(namespace, "")
    _ray.kill_namespace(namespace)
    return names


__all__ = [
    "DEFAULT_NAMESPACE",
    "SettingsMismatch",
    "actor_setting_differences",
    "attach",
    "establish",
    "running_settings",
    "start_watchdog",
    "stop",
    "with_shards_counted",
]
