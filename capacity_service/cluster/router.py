"""Routes a pool id to the actor hosting it, creating the actor on demand and finding it again after
it died. A release is routed by the pool id inside the reservation id: no roster, no broadcast."""

from __future__ import annotations

import asyncio
import time
import zlib
from typing import Any

from capacity_service.cluster._ray import ActorGone, Handle, ask, ensure_actor
from capacity_service.cluster.pool_actor import PoolActor
from capacity_service.errors import Unavailable
from capacity_service.pool_host import HostFenced
from capacity_service.settings import ServiceSettings


def actor_name(settings: ServiceSettings, pool_id: str) -> str:
    hosting = settings.hosting
    if hosting.mode == "sharded":
        return f"pool-shard:{zlib.crc32(pool_id.encode()) % hosting.shards}"
    return f"pool:{pool_id}"


class PoolRouter:
    def __init__(self, settings: ServiceSettings) -> None:
        self._settings = settings
        self._handles: dict[str, Handle] = {}

    async def call(self, pool_id: str, method: str, *args: Any) -> Any:
        """Call ``method`` on the actor hosting ``pool_id``. While that actor is dead or restarting,
        retry with a fresh handle until ``call_timeout_s``; then ``Unavailable``. Every command carries a
        request id, so a retried command is never applied twice."""
        name = actor_name(self._settings, pool_id)
        deadline = time.monotonic() + self._settings.hosting.call_timeout_s
        pause = 0.05
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Unavailable(f"pool {pool_id!r} did not answer within the call timeout")
            try:
                handle = await self._handle(name)
                result = await ask(handle, method, pool_id, *args, timeout=remaining)
                if not isinstance(result, HostFenced):
                    return result
            except ActorGone:
                pass
            # Dead, restarting, or a fenced old incarnation: look the name up again shortly.
            self._handles.pop(name, None)
            await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, 0.5)

    async def _handle(self, name: str) -> Handle:
        handle = self._handles.get(name)
        if handle is None:
            hosting = self._settings.hosting
            handle = await asyncio.to_thread(
                ensure_actor, PoolActor, name, hosting.namespace, (self._settings,), hosting.actor_resources
            )
            self._handles[name] = handle
        return handle
