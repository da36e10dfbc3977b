"""``WarehouseFeed``: the ``EventPublisher`` of pool actors. It coalesces durable events for
``push_interval_s`` and hands them to the stream that owns each pool, one fire-and-forget message per
stream. A lost message costs nothing but latency: the stream catches up from the journal."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence

from capacity_service.cluster import _ray
from capacity_service.publishing import PersistedEvent
from capacity_service.settings import ServiceSettings
from capacity_service.warehouse import stream_name, stream_of

log = logging.getLogger(__name__)


class WarehouseFeed:
    def __init__(self, settings: ServiceSettings) -> None:
        self._settings = settings
        self._pending: dict[int, list[PersistedEvent]] = defaultdict(list)
        self._flush_scheduled = False
        self._streams: dict[int, _ray.Handle] = {}

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
            try:
                _ray.tell(self._stream(shard), "offer", events)
            except Exception as exc:  # the stream catches up from the journal
                self._streams.pop(shard, None)
                log.debug("handing events to warehouse stream %d failed: %s", shard, exc)

    def _stream(self, shard: int) -> _ray.Handle:
        handle = self._streams.get(shard)
        if handle is None:
            handle = self._streams[shard] = ensure_stream(self._settings, shard)
        return handle


def ensure_stream(settings: ServiceSettings, shard: int) -> _ray.Handle:
    """The stream actor of ``shard``, created if missing (named, detached, restarted by Ray forever)."""
    from capacity_service.warehouse.stream_actor import WarehouseStreamActor

    return _ray.ensure_actor(
        WarehouseStreamActor,
        stream_name(shard),
        settings.hosting.namespace,
        (settings, shard),
        dict(settings.hosting.actor_resources),
    )
