"""Webhook delivery on a real SQLite journal and store, to a real HTTP receiver on 127.0.0.1 that checks
every signature: a receiver down then back gets everything, in order per pool, none lost; deliveries pending
when the delivering process stops are made by the next one; what the receiver acknowledged is not lost."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from capacity_service.adapters.journal import Journal, open_journal
from capacity_service.adapters.webhooks.http import AiohttpTransport
from capacity_service.adapters.webhooks.sql import SqlWebhookStore
from capacity_service.application.pool_writer import PoolWriter
from capacity_service.application.webhook_delivery import WebhookDeliveries
from capacity_service.domain import ConfigurePool, Release, Reserve, new_reservation_id
from capacity_service.settings import SqlJournalSettings, WebhookSettings
from tests.support.webhooks import Receiver, first_deliveries, in_order_per_stream

SECRET = "receiver-secret-0123456789"
SETTINGS = WebhookSettings(
    allow_private_targets=True,  # the receiver is on loopback
    poll_interval_s=0.05,
    initial_backoff_s=0.05,
    max_backoff_s=0.3,
    request_timeout_s=2.0,
    cursor_save_interval_s=0.1,
)
POOLS, CYCLES = 6, 5


@pytest.fixture
def journal_settings(tmp_path: Path) -> SqlJournalSettings:
    return SqlJournalSettings(url=f"sqlite:///{tmp_path / 'journal.db'}")


@pytest.fixture
def journal(journal_settings: SqlJournalSettings) -> Iterator[Journal]:
    with open_journal(journal_settings) as journal:
        yield journal


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Pools:
    """Pools of capacity 1 on the real journal, through their real writers: each reserve sells one out,
    each release puts it back on sale."""

    def __init__(self, journal: Journal, count: int) -> None:
        self.writers = [PoolWriter(f"wh-{n}-{uuid.uuid4().hex[:6]}", journal) for n in range(count)]
        for writer in self.writers:
            writer.start()
            writer.execute_batch([ConfigurePool(1, "north")])

    def cycle(self, n: int) -> None:
        for writer in self.writers:
            reservation_id = new_reservation_id(writer.pool_id)
            writer.execute_batch([Reserve(1, f"req-{n}", reservation_id)])
            writer.execute_batch([Release(reservation_id)])

    def expected(self, cycles: int) -> dict[str, list[str]]:
        return {w.pool_id: ["pool.sold_out", "pool.back_on_sale"] * cycles for w in self.writers}


def by_pool(events: list[dict[str, Any]]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for event in first_deliveries(events):
        found.setdefault(event["data"]["pool_id"], []).append(event["type"])
    return found


async def until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def deliveries(journal_settings: SqlJournalSettings) -> WebhookDeliveries:
    service = WebhookDeliveries(
        SETTINGS,
        open_store=lambda: SqlWebhookStore(journal_settings),
        open_journal=lambda: open_journal(journal_settings),
        transport=AiohttpTransport(),
    )
    service.start()
    return service


def test_a_receiver_down_then_back_gets_everything_in_order_per_pool_none_lost(
    journal: Journal, journal_settings: SqlJournalSettings
) -> None:
    async def run() -> None:
        receiver = Receiver(SECRET)
        port = receiver.start(free_port())
        service = deliveries(journal_settings)
        url = f"http://127.0.0.1:{port}/hooks"
        await service.put_webhook("shop", url, ["pool.sold_out", "pool.back_on_sale"], SECRET)
        pools = Pools(journal, POOLS)
        await asyncio.to_thread(pools.cycle, 0)
        await until(lambda: len(receiver.events()) == POOLS * 2)
        receiver.stop()  # down: its port refuses connections
        for n in range(1, CYCLES):
            await asyncio.to_thread(pools.cycle, n)
        await until(lambda: (s := status_of(service)) is not None and s.failures_in_a_row >= 3)
        assert status_of(service).events_behind > 0
        receiver.start(port)  # back, on the same port
        await until(lambda: by_pool(receiver.events()) == pools.expected(CYCLES))
        assert in_order_per_stream(receiver.events())
        assert receiver.bad_signatures == 0
        status = (await service.get_webhook("shop")).status
        assert status is not None and status.retries > 0 and status.failures_in_a_row == 0
        await until(lambda: status_of(service).events_behind == 0)
        await service.close()
        receiver.stop()

    asyncio.run(run())


def status_of(service: WebhookDeliveries) -> Any:
    delivery = (service._deliveries or {}).get("shop")  # white box: the status without awaiting
    return None if delivery is None else delivery.status()


def test_deliveries_pending_when_the_delivering_process_stops_are_made_by_the_next_one(
    journal: Journal, journal_settings: SqlJournalSettings
) -> None:
    async def run() -> None:
        receiver = Receiver(SECRET, status=503)  # up, but refusing: every delivery stays pending
        port = receiver.start(free_port())
        first = deliveries(journal_settings)
        await first.put_webhook(
            "shop", f"http://127.0.0.1:{port}/hooks", ["pool.sold_out", "pool.back_on_sale"], SECRET
        )
        pools = Pools(journal, POOLS)
        for n in range(CYCLES):
            await asyncio.to_thread(pools.cycle, n)
        await until(lambda: (s := status_of(first)) is not None and s.pending > 0 and s.failures_in_a_row >= 2)
        await first.close()  # the process stops with every delivery pending
        receiver.status = 200
        second = deliveries(journal_settings)  # a new process: registrations and cursors from the journal's database
        await until(lambda: by_pool(receiver.events()) == pools.expected(CYCLES))
        assert in_order_per_stream(receiver.events()) and receiver.bad_signatures == 0
        # And a third process after that sends nothing again that the second saw acknowledged.
        await until(lambda: status_of(second).events_behind == 0)
        await asyncio.sleep(SETTINGS.cursor_save_interval_s * 3)
        await second.close()
        delivered = len(receiver.events())
        third = deliveries(journal_settings)
        await asyncio.sleep(SETTINGS.poll_interval_s * 6)
        assert len(receiver.events()) == delivered
        assert [w.webhook_id for w in await third.list_webhooks()] == ["shop"]
        await third.close()
        receiver.stop()

    asyncio.run(run())


def test_the_transport_checks_the_address_at_every_post_and_posts_to_the_address_it_checked() -> None:
    """DNS rebinding: a name that resolves to a private address at delivery time is refused (unless
    allowed); when allowed, the POST goes to the resolved address with the URL's host in ``Host``."""
    from capacity_service.adapters.webhooks.targets import TargetRefused

    async def run() -> None:
        receiver = Receiver(SECRET)
        port = receiver.start(free_port())
        transport = AiohttpTransport()

        async def rebound(host: str, port: int) -> list[str]:
            return ["127.0.0.1"]  # what a rebinding name answers at delivery time

        transport.resolve = rebound  # type: ignore[method-assign]
        from capacity_service.application.webhook_signing import signed_headers

        body = b'{"id":"p/1/0"}'
        headers = signed_headers(SECRET, "shop", "p/1/0", "pool.sold_out", body)
        url = f"http://hooks.example.com:{port}/in"
        with pytest.raises(TargetRefused):
            await transport.post(url, headers, body, 2.0, allow_private=False)
        with pytest.raises(TargetRefused):  # a literal private address, whatever the resolver says
            await transport.post(f"http://10.0.0.1:{port}/in", headers, body, 2.0, allow_private=False)
        assert receiver.received == []
        assert await transport.post(url, headers, body, 2.0, allow_private=True) == 200
        [received] = receiver.received
        assert received.headers["host"] == f"hooks.example.com:{port}" and received.body == body
        await transport.aclose()
        receiver.stop()

    asyncio.run(run())
