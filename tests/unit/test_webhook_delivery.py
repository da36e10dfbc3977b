"""Webhook delivery without a network: in order per stream however many streams go at once, retried with
backoff until acknowledged, resumed from the saved cursors after a restart, bounded in memory, and only
what happened after the registration."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from capacity_service.adapters.journal.memory import InMemoryJournal
from capacity_service.adapters.webhooks.memory import InMemoryWebhookStore
from capacity_service.application.webhook_delivery import JOURNAL_PAGE_EVENTS, WebhookDeliveries, backoff_s
from capacity_service.domain import CapacityHeld, HoldsExpired, PoolConfigured
from capacity_service.errors import InvalidRequest, TooManyWebhooks, WebhookNotFound
from capacity_service.settings import WebhookSettings
from tests.support.webhooks import Appender, first_deliveries, in_order_per_stream

SECRET = "0123456789abcdef"
FAST = WebhookSettings(
    allow_private_targets=True,
    poll_interval_s=0.01,
    initial_backoff_s=0.01,
    max_backoff_s=0.05,
    cursor_save_interval_s=0.01,
)


class FakeTransport:
    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.answer: Callable[[dict[str, Any]], Awaitable[int]] | None = None
        self.in_flight = 0
        self.most_in_flight_per_stream: dict[str, int] = {}
        self.most_streams_in_flight = 0
        self._streams_in_flight: dict[str, int] = {}

    async def resolve(self, host: str, port: int) -> list[str]:
        return ["93.184.216.34"]

    async def aclose(self) -> None:
        pass

    async def post(self, url: str, headers: dict[str, str], body: bytes, timeout_s: float, allow_private: bool) -> int:
        event = json.loads(body)
        stream = event["id"].rsplit("/", 2)[0]
        self._streams_in_flight[stream] = self._streams_in_flight.get(stream, 0) + 1
        self.most_in_flight_per_stream[stream] = max(
            self.most_in_flight_per_stream.get(stream, 0), self._streams_in_flight[stream]
        )
        busy = sum(1 for in_flight in self._streams_in_flight.values() if in_flight)
        self.most_streams_in_flight = max(self.most_streams_in_flight, busy)
        try:
            status = 200 if self.answer is None else await self.answer(event)
        finally:
            self._streams_in_flight[stream] -= 1
        if 200 <= status < 300:
            self.posts.append(event)
        return status


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


def service(
    journal: InMemoryJournal, store: InMemoryWebhookStore, transport: FakeTransport, settings: WebhookSettings = FAST
) -> WebhookDeliveries:
    deliveries = WebhookDeliveries(settings, lambda: store, lambda: journal, transport, rng=random.Random(7).random)
    deliveries.start()
    return deliveries


def expire_holds(append: Appender, pool_id: str, holds: int) -> None:
    """``holds`` holds on the pool, each then expired on its own: one ``hold.expired`` each, in order."""
    later = datetime.now(UTC) + timedelta(minutes=5)
    append.pool(pool_id, PoolConfigured(10_000, "z", None, None))
    for n in range(holds):
        append.pool(
            pool_id, CapacityHeld(f"{pool_id}-r{n}", 1, f"q{n}", later), HoldsExpired((f"{pool_id}-r{n}",), (1,))
        )


def test_backoff_grows_exponentially_to_its_cap_with_half_of_each_wait_random() -> None:
    low = [backoff_s(n, 0.5, 60.0, lambda: 0.0) for n in range(1, 10)]
    high = [backoff_s(n, 0.5, 60.0, lambda: 1.0) for n in range(1, 10)]
    assert high == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert low == [h / 2 for h in high]
    waits = {backoff_s(3, 0.5, 60.0, random.Random(n).random) for n in range(50)}
    assert len(waits) > 40 and all(1.0 <= w <= 2.0 for w in waits)  # jitter: spread, within its bounds
    assert backoff_s(10_000, 0.5, 60.0, lambda: 1.0) == 60.0  # no overflow after a long outage


def test_every_stream_is_delivered_in_order_while_many_streams_go_at_once() -> None:
    async def run() -> None:
        journal, store, transport = InMemoryJournal(), InMemoryWebhookStore(), FakeTransport()
        rng = random.Random(1)

        async def slow(event: dict[str, Any]) -> int:
            await asyncio.sleep(rng.random() * 0.003)  # answers overtake each other across streams
            return 200

        transport.answer = slow
        deliveries = service(journal, store, transport)
        await deliveries.put_webhook("h", "http://127.0.0.1:9/hook", ["hold.expired"], SECRET)
        append = Appender(journal)
        for pool in range(12):
            expire_holds(append, f"pool-{pool}", 15)
        await until(lambda: len(transport.posts) == 12 * 15)
        assert in_order_per_stream(transport.posts)
        assert max(transport.most_in_flight_per_stream.values()) == 1  # one event of a stream at a time
        status = (await deliveries.get_webhook("h")).status
        assert status is not None and status.delivered == 180 and status.pending == 0
        await deliveries.close()

    asyncio.run(run())


def test_a_failing_receiver_is_retried_with_backoff_until_it_acknowledges_and_nothing_is_lost() -> None:
    async def run() -> None:
        journal, store, transport = InMemoryJournal(), InMemoryWebhookStore(), FakeTransport()
        down = True

        async def receiver(event: dict[str, Any]) -> int:
            return 503 if down else 204

        transport.answer = receiver
        deliveries = service(journal, store, transport)
        await deliveries.put_webhook("h", "http://127.0.0.1:9/hook", ["hold.expired"], SECRET)
        append = Appender(journal)
        expire_holds(append, "a", 5)
        expire_holds(append, "b", 5)
        await until(lambda: (s := deliveries_status(deliveries)) is not None and s.failures_in_a_row >= 3)
        status = deliveries_status(deliveries)
        assert status is not None and status.last_error == "the receiver answered HTTP 503" and status.delivered == 0
        down = False
        await until(lambda: len(transport.posts) == 10)
        assert in_order_per_stream(transport.posts)
        status = (await deliveries.get_webhook("h")).status
        assert status is not None
        assert status.retries >= 2 and status.failures_in_a_row == 0 and status.last_error is None
        await deliveries.close()

    asyncio.run(run())


def deliveries_status(deliveries: WebhookDeliveries) -> Any:
    delivery = (deliveries._deliveries or {}).get("h")  # white box: the status without awaiting
    return None if delivery is None else delivery.status()


def test_a_backlog_is_delivered_from_many_streams_at_once_when_the_receiver_comes_back() -> None:
    """Each stream behind gets a share of the queue: a stream with more behind than the queue holds does not
    take all of it (its events would go one POST at a time while the other streams wait)."""

    async def run() -> None:
        journal, store, transport = InMemoryJournal(), InMemoryWebhookStore(), FakeTransport()
        down = True

        async def receiver(event: dict[str, Any]) -> int:
            await asyncio.sleep(0.002)
            return 503 if down else 200

        transport.answer = receiver
        settings = FAST.model_copy(update={"max_pending_events": 40, "max_concurrent_streams": 4})
        deliveries = service(journal, store, transport, settings)
        await deliveries.put_webhook("h", "http://127.0.0.1:9/hook", ["hold.expired"], SECRET)
        append = Appender(journal)
        for pool in range(8):
            expire_holds(append, f"p{pool}", 50)  # more behind in each stream than the whole queue holds
        await until(lambda: (s := deliveries_status(deliveries)) is not None and s.failures_in_a_row >= 2)
        down = False
        await until(lambda: len(transport.posts) == 8 * 50, timeout=30)
        assert in_order_per_stream(transport.posts)
        assert transport.most_streams_in_flight == 4
        await deliveries.close()

    asyncio.run(run())


def test_a_slow_stream_does_not_hold_back_the_others() -> None:
    async def run() -> None:
        journal, store, transport = InMemoryJournal(), InMemoryWebhookStore(), FakeTransport()

        async def receiver(event: dict[str, Any]) -> int:
            await asyncio.sleep(0.2 if event["data"]["pool_id"] == "slow" else 0.001)
            return 200

        transport.answer = receiver
        deliveries = service(journal, store, transport, FAST.model_copy(update={"max_concurrent_streams": 2}))
        await deliveries.put_webhook("h", "http://127.0.0.1:9/hook", ["hold.expired"], SECRET)
        append = Appender(journal)
        for pool in ("slow", "fast-1", "fast-2", "fast-3"):  # the slow one's events are the oldest
            expire_holds(append, pool, 3)
        await until(lambda: len(transport.posts) == 12)
        pools = [event["data"]["pool_id"] for event in transport.posts]
        assert pools[-3:] == ["slow"] * 3  # every fast event went while the slow stream's took their time
        await deliveries.close()

    asyncio.run(run())


def test_a_restart_goes_on_from_the_saved_cursors_and_sends_again_at_most_what_was_not_saved() -> None:
    async def run() -> None:
        journal, store, transport = InMemoryJournal(), InMemoryWebhookStore(), FakeTransport()
        deliveries = service(journal, store, transport)
        await deliveries.put_webhook("h", "http://127.0.0.1:9/hook", ["hold.expired"], SECRET)
        append = Appender(journal)
        expire_holds(append, "a", 10)
        await until(lambda: len(transport.posts) == 10)
        await deliveries.close()  # a stop: the cursors are saved
        expire_holds_more(append, "a", 10, 5)
        restarted = service(journal, store, transport)
        await until(lambda: len(transport.posts) >= 15)
        await asyncio.sleep(0.05)  # nothing more comes
        assert len(transport.posts) == 15 and in_order_per_stream(transport.posts)
        await restarted.close()

    asyncio.run(run())


def expire_holds_more(append: Appender, pool_id: str, start: int, holds: int) -> None:
    later = datetime.now(UTC) + timedelta(minutes=5)
    for n in range(start, start + holds):
        append.pool(
            pool_id, CapacityHeld(f"{pool_id}-r{n}", 1, f"q{n}", later), HoldsExpired((f"{pool_id}-r{n}",), (1,))
        )


def test_a_crash_before_the_cursors_were_saved_sends_those_events_again_never_loses_them() -> None:
    async def run() -> None:
        journal, store, transport = InMemoryJournal(), InMemoryWebhookStore(), FakeTransport()
        slow_saves = FAST.model_copy(update={"cursor_save_interval_s": 3600.0})
        deliveries = service(journal, store, transport, slow_saves)
        await deliveries.put_webhook("h", "http://127.0.0.1:9/hook", ["hold.expired"], SECRET)
        append = Appender(journal)
        expire_holds(append, "a", 6)
        await until(lambda: len(transport.posts) == 6)
        store.available = False  # the crash: nothing more reaches the store
        await deliveries.close()
        store.available = True
        restarted = service(journal, store, transport, slow_saves)
        await until(lambda: len(transport.posts) == 12)
        assert len(first_deliveries(transport.posts)) == 6 and in_order_per_stream(transport.posts)
        await restarted.close()

    asyncio.run(run())


def test_only_what_happened_after_the_registration_is_sent() -> None:
    async def run() -> None:
        journal, store, transport = InMemoryJournal(), InMemoryWebhookStore(), FakeTransport()
        append = Appender(journal)
        expire_holds(append, "old", 3)
        deliveries = service(journal, store, transport)
        await deliveries.put_webhook("h", "http://127.0.0.1:9/hook", ["hold.expired"], SECRET)
        expire_holds_more(append, "old", 3, 2)
        await until(lambda: len(transport.posts) == 2)
        await asyncio.sleep(0.05)
        assert [p["data"]["reservation_id"] for p in transport.posts] == ["old-r3", "old-r4"]
        await deliveries.close()

    asyncio.run(run())


def test_a_stalled_receiver_holds_at_most_max_pending_events_in_memory() -> None:
    async def run() -> None:
        journal, store, transport = InMemoryJournal(), InMemoryWebhookStore(), FakeTransport()
        gate = asyncio.Event()

        async def stalled(event: dict[str, Any]) -> int:
            await gate.wait()
            return 200

        transport.answer = stalled
        deliveries = service(journal, store, transport, FAST.model_copy(update={"max_pending_events": 7}))
        await deliveries.put_webhook("h", "http://127.0.0.1:9/hook", ["hold.expired"], SECRET)
        append = Appender(journal)
        for pool in range(5):
            expire_holds(append, f"p{pool}", 10)
        await until(lambda: (s := deliveries_status(deliveries)) is not None and s.pending > 0)
        await asyncio.sleep(0.1)
        status = deliveries_status(deliveries)
        assert 0 < status.pending <= 7 and status.events_behind > 7
        gate.set()
        await until(lambda: len(transport.posts) == 50)
        assert in_order_per_stream(transport.posts)
        await deliveries.close()

    asyncio.run(run())


def test_the_operators_calls_check_what_they_are_given_and_never_show_the_secret() -> None:
    async def run() -> None:
        journal, store, transport = InMemoryJournal(), InMemoryWebhookStore(), FakeTransport()
        deliveries = service(journal, store, transport, FAST.model_copy(update={"max_webhooks": 2}))
        _, created = await deliveries.put_webhook("a", "http://127.0.0.1:9/a", ["hold.expired"], SECRET)
        assert created
        webhook, created = await deliveries.put_webhook("a", "http://127.0.0.1:9/b", ["order.confirmed"], SECRET)
        assert not created and webhook.url.endswith("/b") and webhook.events == ["order.confirmed"]
        await deliveries.put_webhook("b", "http://127.0.0.1:9/b", ["hold.expired"], SECRET)
        with pytest.raises(TooManyWebhooks):
            await deliveries.put_webhook("c", "http://127.0.0.1:9/c", ["hold.expired"], SECRET)
        for bad in (
            ("d", "http://127.0.0.1:9/", ["pool.exploded"], SECRET),
            ("d", "http://127.0.0.1:9/", [], SECRET),
            ("d", "http://127.0.0.1:9/", ["hold.expired"], "short"),
            ("d/e", "http://127.0.0.1:9/", ["hold.expired"], SECRET),
        ):
            with pytest.raises(InvalidRequest):
                await deliveries.put_webhook(*bad)
        listed = await deliveries.list_webhooks()
        assert [w.webhook_id for w in listed] == ["a", "b"]
        assert SECRET not in repr(listed) and SECRET not in repr(store.get("a"))
        await deliveries.delete_webhook("b")
        with pytest.raises(WebhookNotFound):
            await deliveries.get_webhook("b")
        with pytest.raises(WebhookNotFound):
            await deliveries.delete_webhook("b")
        await deliveries.close()
        reopened = service(journal, store, transport)
        assert [w.webhook_id for w in await reopened.list_webhooks()] == ["a"]  # durable in the store
        await reopened.close()

    asyncio.run(run())


def test_a_webhook_waiting_to_retry_tries_again_at_once_when_the_operator_fixes_its_url() -> None:
    async def run() -> None:
        journal, store, transport = InMemoryJournal(), InMemoryWebhookStore(), FakeTransport()
        urls: list[str] = []
        original_post = transport.post

        async def post(url: str, headers: dict[str, str], body: bytes, timeout_s: float, allow_private: bool) -> int:
            urls.append(url)
            if url.endswith("/broken"):
                return 404
            return await original_post(url, headers, body, timeout_s, allow_private)

        transport.post = post  # type: ignore[method-assign]
        slow_retries = FAST.model_copy(update={"initial_backoff_s": 30.0, "max_backoff_s": 60.0})
        deliveries = service(journal, store, transport, slow_retries)
        await deliveries.put_webhook("h", "http://127.0.0.1:9/broken", ["hold.expired"], SECRET)
        expire_holds(Appender(journal), "a", 2)
        await until(lambda: (s := deliveries_status(deliveries)) is not None and s.next_attempt_in_s > 10)
        await deliveries.put_webhook("h", "http://127.0.0.1:9/fixed", ["hold.expired"], SECRET)
        await until(lambda: len(transport.posts) == 2, timeout=5.0)
        assert urls[0].endswith("/broken") and urls[-1].endswith("/fixed")
        await deliveries.close()

    asyncio.run(run())


def test_with_no_webhook_the_journal_is_not_polled() -> None:
    async def run() -> None:
        reads = 0

        class CountingJournal(InMemoryJournal):
            def heads(self) -> dict[str, int]:
                nonlocal reads
                reads += 1
                return super().heads()

        journal, store = CountingJournal(), InMemoryWebhookStore()
        deliveries = service(journal, store, FakeTransport())
        await asyncio.sleep(FAST.poll_interval_s * 10)
        assert reads == 0
        await deliveries.put_webhook("h", "http://127.0.0.1:9/h", ["hold.expired"], SECRET)
        await until(lambda: reads > 0)
        await deliveries.close()

    asyncio.run(run())


def test_the_webhooks_read_the_journal_in_small_pages_whatever_page_the_pools_read_in() -> None:
    """A scan takes a few events from each stream behind; a page of the pools' 2,000 per read made a receiver
    back after an outage wait on the reads."""
    from capacity_service.runtime.bootstrap import webhook_journal_settings
    from capacity_service.settings import CassandraJournalSettings, SqlJournalSettings

    for journal in (SqlJournalSettings(url="sqlite:///j.db"), CassandraJournalSettings(keyspace="k")):
        paged = webhook_journal_settings(journal)
        assert paged.fetch_size == JOURNAL_PAGE_EVENTS < journal.fetch_size
        assert paged.model_copy(update={"fetch_size": journal.fetch_size}) == journal  # the same journal


def test_streams_told_as_moved_are_delivered_at_once_and_only_they_are_read() -> None:
    """Every order is a stream: a heads query of every stream ever written, four times a second, grew with
    every order placed. The hosts say which streams moved; the query is the rare repair of a lost word."""

    async def run() -> None:
        reads: list[str] = []

        class CountingJournal(InMemoryJournal):
            def read(self, pool_id: str, from_seq_nr: int = 1) -> Any:
                reads.append(pool_id)
                return super().read(pool_id, from_seq_nr)

        journal, store, transport = CountingJournal(), InMemoryWebhookStore(), FakeTransport()
        deliveries = service(journal, store, transport, FAST.model_copy(update={"poll_interval_s": 3600.0}))
        await deliveries.put_webhook("h", "http://127.0.0.1:9/hook", ["hold.expired"], SECRET)
        append = Appender(journal)
        for pool in range(50):
            expire_holds(append, f"pool-{pool}", 1)  # written before any word of them: left to the query
        await asyncio.sleep(0.2)
        assert transport.posts == []  # the query runs once an hour here: nothing told, nothing read
        reads.clear()
        deliveries.streams_moved({"pool-7": journal.highest_seq_nr("pool-7")})
        await until(lambda: len(transport.posts) == 1)
        assert transport.posts[0]["id"].startswith("pool-7/") and set(reads) == {"pool-7"}
        deliveries.streams_moved({"pool-7": 1})  # an older word than what was read: nothing again
        await asyncio.sleep(0.1)
        assert len(transport.posts) == 1 and set(reads) == {"pool-7"}
        await deliveries.close()

    asyncio.run(run())
