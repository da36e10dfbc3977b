"""Availability as a stream: each pool's view as it changes, to the clients watching its zone (the HTTP API's
Server-Sent Events). Fed by an HTTP replica's mirror of its node's cache replica; no Ray here.

Every change gets an id, ``<feed incarnation>.<n>``. The feed keeps the last ``retained`` changes: a client
that reconnects with the id of the last change it saw gets the changes of its zones after it, in order; a
client whose id the feed cannot continue from (another replica's, one from before a restart, one too old)
gets its zones' whole picture first. Each client has a bounded queue: one that falls behind is dropped (its
stream ends; it reconnects with its last id), never holding the feed back. At most ``max_clients`` watch at
once: beyond, ``Overloaded``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Iterable
from dataclasses import dataclass

from capacity_service.domain import PoolView
from capacity_service.errors import Overloaded


@dataclass(frozen=True, slots=True)
class AvailabilityChange:
    event_id: str
    view: PoolView


class Watcher:
    """One client's watch of one zone or several: its starting point (``starting``: the picture, or what it
    missed), then their changes, in order, as they come; the iteration ends when the client is dropped for
    falling behind, or ``close`` is called. The bound on what waits is for the changes: a starting point is
    given whole, however many pools the zones have."""

    def __init__(
        self, feed: AvailabilityFeed, zones: frozenset[str], queue_size: int, starting: list[AvailabilityChange]
    ) -> None:
        self.zones = zones
        self.dropped = False
        self._feed = feed
        self._starting = deque(starting)
        self._queue: asyncio.Queue[AvailabilityChange | None] = asyncio.Queue(queue_size)

    def offer(self, change: AvailabilityChange) -> None:
        if self.dropped:
            return
        try:
            self._queue.put_nowait(change)
        except asyncio.QueueFull:
            self.dropped = True
            while not self._queue.empty():  # its backlog goes at once: the end is all it gets now
                self._queue.get_nowait()
            self._queue.put_nowait(None)

    async def changes(self, heartbeat_s: float | None = None) -> AsyncIterator[AvailabilityChange | None]:
        """The changes; None every ``heartbeat_s`` without one (a keep-alive for the connection)."""
        try:
            async for batch in self.batches(heartbeat_s):
                if not batch:
                    yield None
                for change in batch:
                    yield change
        finally:
            self.close()

    async def batches(self, heartbeat_s: float | None = None) -> AsyncIterator[list[AvailabilityChange]]:
        """The starting point, then the changes, each time all of those that came meanwhile (a client far
        behind is sent them in one write, not one each); an empty list every ``heartbeat_s`` without one.
        The wait is a timer, not a task per change (``asyncio.wait_for`` made one: a large part of a
        replica's CPU with 1,000 clients)."""
        queue = self._queue
        try:
            if self._starting:
                starting, self._starting = list(self._starting), deque()
                yield starting
            while True:
                if queue.empty():
                    try:
                        async with asyncio.timeout(heartbeat_s):
                            change = await queue.get()
                    except TimeoutError:
                        yield []
                        continue
                else:
                    change = queue.get_nowait()
                batch: list[AvailabilityChange] = []
                while change is not None:
                    batch.append(change)
                    if queue.empty():
                        break
                    change = queue.get_nowait()
                if batch:
                    yield batch
                if change is None:  # dropped: the end is all it gets now
                    return
        finally:
            self.close()

    def close(self) -> None:
        self._feed.forget(self)


class AvailabilityFeed:
    """``publish`` the views the mirror took as newer; ``watch`` a zone from an optional last event id.
    ``picture(zone)``: the zone's pools as the mirror has them now (a client's starting point)."""

    def __init__(
        self,
        picture: Callable[[str], list[PoolView]],
        retained: int = 10_000,
        max_clients: int = 1024,
        client_queue: int = 1_000,
    ) -> None:
        self._picture = picture
        self._incarnation = uuid.uuid4().hex[:8]
        self._next = 1
        self._retained: deque[AvailabilityChange] = deque(maxlen=retained)
        self._max_clients = max_clients
        self._client_queue = client_queue
        self._watchers: dict[str, set[Watcher]] = {}
        self._count = 0

    @property
    def clients(self) -> int:
        return self._count

    @property
    def last_event_id(self) -> str:
        return f"{self._incarnation}.{self._next - 1}"

    def publish(self, views: Iterable[PoolView]) -> None:
        for view in views:
            change = AvailabilityChange(f"{self._incarnation}.{self._next}", view)
            self._next += 1
            self._retained.append(change)
            for watcher in list(self._watchers.get(view.zone, ())):
                watcher.offer(change)

    def watch(self, zones: str | Collection[str], last_event_id: str | None = None) -> Watcher:
        """A watch of one zone, or of several at once (a client in a browser has few connections to spare)."""
        if self._count >= self._max_clients:
            raise Overloaded(f"{self._count} clients are watching availability here; try again", retry_after_s=5)
        watched = frozenset((zones,) if isinstance(zones, str) else zones)
        watcher = Watcher(self, watched, self._client_queue, self._starting_point(watched, last_event_id))
        for zone in watched:
            self._watchers.setdefault(zone, set()).add(watcher)
        self._count += 1
        return watcher

    def forget(self, watcher: Watcher) -> None:
        watched = [zone for zone in watcher.zones if watcher in self._watchers.get(zone, ())]
        for zone in watched:
            self._watchers[zone].discard(watcher)
            if not self._watchers[zone]:
                del self._watchers[zone]
        if watched:  # forgotten once, however often it is closed
            self._count -= 1

    def _starting_point(self, zones: frozenset[str], last_event_id: str | None) -> list[AvailabilityChange]:
        """The zones' retained changes after ``last_event_id`` when the feed can continue from it; else the
        zones' whole picture, every view under the latest id (a client that reconnects with it continues)."""
        incarnation, _, number = (last_event_id or "").partition(".")
        if incarnation == self._incarnation and number.isdigit():
            after = int(number)
            oldest = self._retained[0] if self._retained else None
            if oldest is None or int(oldest.event_id.partition(".")[2]) <= after + 1:
                return [c for c in self._retained if c.view.zone in zones and int(c.event_id.partition(".")[2]) > after]
        latest = self.last_event_id
        return [AvailabilityChange(latest, view) for zone in sorted(zones) for view in self._picture(zone)]
