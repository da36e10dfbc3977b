"""``GET /v1/availability/stream``: a zone's pools as they change, as Server-Sent Events, from this replica's
mirror of the cache (``application/availability_feed.py``). Its route is in ``routes.py``."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Protocol

from fastapi import Header, Query
from fastapi.responses import StreamingResponse
from pydantic import StringConstraints

from capacity_service.application.availability_feed import AvailabilityChange, Watcher
from capacity_service.entrypoints.http.schemas import PRINTABLE, AvailabilityEvent

# Zones one stream may watch: a page of the console's grid, on one of the few connections a browser opens.
MAX_STREAM_ZONES = 50
Zone = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=PRINTABLE)]


class Watched(Protocol):
    def watch_availability(self, zones: list[str], last_event_id: str | None) -> Watcher: ...


def stream_handlers(backend: Watched, heartbeat_s: float) -> list[Callable[..., Any]]:
    async def availability_stream(
        zone: Annotated[list[Zone], Query(min_length=1, max_length=MAX_STREAM_ZONES)],
        last_event_id: Annotated[str | None, Header(max_length=64)] = None,
    ) -> StreamingResponse:
        """The zone's pools as they change (remaining, state), from the replicated cache: first the zone's
        whole picture, then each change. Several zones in one stream: repeat `zone` (up to 50). Reconnect
        with `Last-Event-ID` to continue after the last event seen (or get the whole picture again when this
        replica cannot continue from it). A client that falls behind is disconnected; 429 beyond
        `http.max_stream_clients` clients on this replica."""
        watcher = backend.watch_availability(zone, last_event_id)
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(_events(watcher, heartbeat_s), media_type="text/event-stream", headers=headers)

    return [availability_stream]


async def _events(watcher: Watcher, heartbeat_s: float) -> AsyncIterator[bytes]:
    yield b"retry: 1000\n\n"
    async for batch in watcher.batches(heartbeat_s):
        yield b"".join(map(_event, batch)) if batch else b": keep-alive\n\n"


# A change goes to every client of its zone: it is encoded once for all of them (they are sent it moments apart).
@functools.lru_cache(maxsize=4096)
def _event(change: AvailabilityChange) -> bytes:
    view = change.view
    data = AvailabilityEvent(
        pool_id=view.pool_id,
        zone=view.zone,
        slot_start=view.slot_start,
        slot_end=view.slot_end,
        capacity=view.capacity,
        remaining=view.remaining,
        state="retired" if view.retired else "active",
        paused=view.paused,
        version=view.version,
    )
    return b"id: %s\nevent: pool\ndata: %s\n\n" % (change.event_id.encode(), data.model_dump_json().encode())
