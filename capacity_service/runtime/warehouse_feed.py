"""``WarehouseFeed``: the ``EventPublisher`` of pool actors. It coalesces durable events for
``push_interval_s`` and hands them to the stream that owns each pool, one message per stream, without
ever making a write wait: handles are looked up off the event loop, and when a stream has too many
messages outstanding (down, restarting, slow) further events are left to its catch-up from the journal."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence

from capacity_service.adapters.warehouse import stream_of
from capacity_service.domain import PersistedEvent
from capacity_service.runtime import _ray
from capacity_service.runtime.actor_api import WarehouseStreamApi, call
from capacity_service.runtime.names import stream_name
from capacity_service.settings import ServiceSettings

log = logging.getLogger(__name__)

# Messages to one stream not yet answered; beyond this the events wait in the journal instead of in
# this process's memory.
_MAX_IN_FLIGHT = 32
_OFFER_TIMEOUT_S = 30.0


class WarehouseFeed:
    def __init__(self, settings: ServiceSettings) -> None:
        self._settings = settings
        self._pending: dict[int, list[PersistedEvent]] = defaultdict(list)
        self._flush_scheduled = False
        self._streams: dict[int, _ray.Handle] = {}
        self._in_flight: dict[int, int] = defaultdict(int)
        self._senders: set[asyncio.Task[None]] = set()
        self.left_to_catch_up = 0  # events not handed over (the stream reads them from the journal)

    def publish_events(self, events: Sequence[PersistedEvent]) -> None:
        streams = self._settings.warehouse.streams
        for event in events:
            self._pending[stream_of(event.pool_id, streams)].append(event)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(self._settings.warehouse.push_interval_s, self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, defaultdict(list)
        for shard, events in pending.items():
            if self._in_flight[shard] >= _MAX_IN_FLIGHT:
                self.left_to_catch_up += len(events)
                continue
            self._in_flight[shard] += 1
            task = asyncio.ensure_future(self._send(shard, events))
            self._senders.add(task)
            task.add_done_callback(self._senders.discard)

    async def _send(self, shard: int, events: list[PersistedEvent]) -> None:
        try:
            handle = self._streams.get(shard)
            if handle is None:
                handle = await asyncio.to_thread(ensure_stream, self._settings, shard)
                self._streams[shard] = handle
            await _ray.ask(handle, call(WarehouseStreamApi.offer, _ray.plain(events)), _OFFER_TIMEOUT_S)
        except Exception as exc:  # the stream catches up from the journal
            self._streams.pop(shard, None)
            self.left_to_catch_up += len(events)
            log.debug("handing events to warehouse stream %d failed: %s", shard, exc)
        finally:
            self._in_flight[shard] -= 1


def ensure_stream(settings: ServiceSettings, shard: int) -> _ray.Handle:
    """The stream actor of ``shard``, created if missing (named, detached, restarted by Ray forever)."""
    from capacity_service.runtime.warehouse_stream_actor import WarehouseStreamActor

    return _ray.ensure_actor(
        WarehouseStreamActor,
        stream_name(shard),
        settings.hosting.namespace,
        (settings, shard),
        dict(settings.hosting.actor_resources),
    )
