"""The availability stream's feed: changes to the clients of their zones in order, a reconnect continued from
its last event id (or given the whole picture when it cannot be), a slow client dropped without holding
anyone back, a picture given whole however large, and a bound on clients."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from capacity_service.application.availability_feed import AvailabilityChange, AvailabilityFeed, Watcher
from capacity_service.domain import PoolView
from capacity_service.errors import Overloaded


def view(pool_id: str, zone: str = "north", remaining: int = 5, version: int = 1) -> PoolView:
    return PoolView(pool_id, True, zone, None, None, remaining, 0, remaining, version)


# Keyed by the watcher itself, not its id(): an id is reused once a watcher of an earlier test is collected.
_STREAMS: dict[Watcher, AsyncIterator[AvailabilityChange | None]] = {}


async def taken(watcher: Watcher, count: int) -> list[AvailabilityChange]:
    """The watcher's next ``count`` changes, from its one stream (as the HTTP handler reads it)."""
    stream = _STREAMS.setdefault(watcher, watcher.changes(heartbeat_s=1))
    found: list[AvailabilityChange] = []
    while len(found) < count:
        change = await anext(stream)
        assert change is not None, "a heartbeat: no change came"
        found.append(change)
    return found


def test_a_watcher_gets_its_zones_changes_in_order_after_the_whole_picture() -> None:
    async def scenario() -> None:
        feed = AvailabilityFeed(lambda zone: [view("a", zone)] if zone == "north" else [])
        watcher = feed.watch("north")
        feed.publish([view("b", "south"), view("a", remaining=4, version=2), view("c", remaining=1)])
        changes = await taken(watcher, 3)
        assert [(c.view.pool_id, c.view.remaining) for c in changes] == [("a", 5), ("a", 4), ("c", 1)]
        numbers = [int(change.event_id.rpartition(".")[2]) for change in changes[1:]]
        assert numbers == sorted(numbers) and len(set(numbers)) == 2

    asyncio.run(scenario())


def test_a_reconnect_continues_after_its_last_event_or_starts_from_the_picture() -> None:
    async def scenario() -> None:
        feed = AvailabilityFeed(lambda zone: [view("now")], retained=3)
        first = feed.watch("north")
        feed.publish([view("a"), view("b")])
        seen = await taken(first, 3)  # the picture, then a and b
        first.close()
        assert feed.clients == 0
        feed.publish([view("c")])
        again = feed.watch("north", seen[-1].event_id)
        assert [c.view.pool_id for c in await taken(again, 1)] == ["c"]  # nothing missed, nothing repeated
        feed.publish([view(f"x{n}") for n in range(5)])  # more than the feed retains
        behind = feed.watch("north", seen[-1].event_id)
        assert [c.view.pool_id for c in await taken(behind, 1)] == ["now"]  # the whole picture instead
        stranger = feed.watch("north", "another-replica.7")
        assert [c.view.pool_id for c in await taken(stranger, 1)] == ["now"]

    asyncio.run(scenario())


def test_a_slow_client_is_dropped_and_holds_nobody_back() -> None:
    async def scenario() -> None:
        feed = AvailabilityFeed(lambda zone: [], client_queue=3)
        slow, quick = feed.watch("north"), feed.watch("north")
        for n in range(10):
            feed.publish([view(f"p{n}")])
            await taken(quick, 1)
        assert slow.dropped and not quick.dropped
        assert [c async for c in slow.changes(heartbeat_s=1)] == []  # its stream ends at once
        assert feed.clients == 1

    asyncio.run(scenario())


def test_a_picture_larger_than_a_clients_queue_is_given_whole() -> None:
    """The queue bounds the changes a client has not read, not its starting point: a zone of more pools than
    that (the console's grid watches 20 zones at once) is still streamed."""

    async def scenario() -> None:
        pools = {"north": [view(f"n{k}") for k in range(8)], "south": [view(f"s{k}", "south") for k in range(8)]}
        feed = AvailabilityFeed(lambda zone: pools[zone], client_queue=3)
        watcher = feed.watch(["north", "south"])
        feed.publish([view("n0", remaining=1, version=2)])
        changes = await taken(watcher, 17)
        assert not watcher.dropped
        assert sorted(c.view.pool_id for c in changes[:16]) == sorted(
            v.pool_id for v in pools["north"] + pools["south"]
        )
        assert (changes[16].view.pool_id, changes[16].view.remaining) == ("n0", 1)

    asyncio.run(scenario())


def test_clients_beyond_the_bound_are_refused() -> None:
    async def scenario() -> None:
        feed = AvailabilityFeed(lambda zone: [], max_clients=2)
        watchers = [feed.watch("north"), feed.watch("south")]
        with pytest.raises(Overloaded):
            feed.watch("north")
        watchers[0].close()
        feed.watch("north")  # room again

    asyncio.run(scenario())


def test_changes_that_came_meanwhile_are_taken_together_and_an_idle_watch_gets_heartbeats() -> None:
    """A client behind gets what waits for it in one batch (the stream writes it at once), in order."""

    async def scenario() -> None:
        feed = AvailabilityFeed(lambda zone: [])
        watcher = feed.watch("north")
        feed.publish([view("a", remaining=4, version=2), view("b", remaining=3), view("a", remaining=2, version=3)])
        batches = watcher.batches(heartbeat_s=0.05)
        assert [(c.view.pool_id, c.view.remaining) for c in await anext(batches)] == [("a", 4), ("b", 3), ("a", 2)]
        assert await anext(batches) == []  # nothing within the heartbeat
        feed.publish([view("a", remaining=1, version=4)])
        assert [c.view.remaining for c in await anext(batches)] == [1]
        watcher.close()
        assert feed.clients == 0

    asyncio.run(scenario())
