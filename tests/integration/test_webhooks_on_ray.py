"""Webhooks on a real local Ray: while the receiver refuses every delivery, reserves and releases go on
unharmed; the webhooks actor is killed (SIGKILL) with deliveries pending, Ray restarts it, and once the
receiver takes them it has every event, in order per pool, signed."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from capacity_service.client import AsyncCapacityClient
from capacity_service.runtime import _ray
from capacity_service.runtime._ray import kill_namespace
from capacity_service.runtime.actor_api import WebhooksApi, call
from capacity_service.runtime.names import WEBHOOKS_NAME
from capacity_service.settings import (
    HostingSettings,
    ServiceSettings,
    SqlJournalSettings,
    WarehouseSettings,
    WebhookSettings,
)
from tests.support.webhooks import Receiver, first_deliveries, in_order_per_stream

pytestmark = pytest.mark.usefixtures("ray_session")

SECRET = "receiver-secret-0123456789"
POOLS, CYCLES = 8, 6


@pytest.fixture
def tmp() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="webhooks-ray-") as directory:
        yield Path(directory)


def make_settings(tmp: Path) -> ServiceSettings:
    return ServiceSettings(
        journal=SqlJournalSettings(url=f"sqlite:///{tmp / 'journal.db'}"),
        hosting=HostingSettings(
            mode="sharded", shards=1, namespace=f"webhooks-{uuid.uuid4().hex[:8]}", call_timeout_s=30
        ),
        warehouse=WarehouseSettings(enabled=False),
        webhooks=WebhookSettings(
            allow_private_targets=True,  # the receiver is on loopback
            poll_interval_s=0.05,
            initial_backoff_s=0.05,
            max_backoff_s=0.5,
            cursor_save_interval_s=0.2,
        ),
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def actor_pid(settings: ServiceSettings) -> int:
    handle = _ray.lookup_actor(WEBHOOKS_NAME, settings.hosting.namespace)
    assert handle is not None
    pid = _ray.ask_now(handle, call(WebhooksApi.status), 30)["pid"]
    assert isinstance(pid, int)
    return pid


def by_pool(events: list[dict[str, Any]]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for event in first_deliveries(events):
        found.setdefault(event["data"]["pool_id"], []).append(event["type"])
    return found


async def until(condition: Callable[[], bool], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


def test_the_webhooks_actor_killed_with_deliveries_pending_delivers_everything_after_its_restart(tmp: Path) -> None:
    settings = make_settings(tmp)
    receiver = Receiver(SECRET, status=503)  # refusing: every delivery stays pending
    port = receiver.start(free_port())

    async def scenario() -> tuple[list[str], int, dict[str, list[str]]]:
        client = AsyncCapacityClient(settings)
        await client.start_watchdog()
        pool_ids = [f"wh-{n}-{uuid.uuid4().hex[:6]}" for n in range(POOLS)]
        for pool_id in pool_ids:
            await client.configure_pool(pool_id, capacity=1, zone="north")
        url = f"http://127.0.0.1:{port}/hooks"
        _, created = await client.put_webhook("shop", url, ["pool.sold_out", "pool.back_on_sale"], SECRET)
        assert created
        errors: list[str] = []
        for n in range(CYCLES):
            for pool_id in pool_ids:
                try:
                    receipt = await client.reserve(pool_id, request_id=f"req-{n}")
                    await client.release(receipt.reservation_id)
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")

        async def pending() -> int:
            status = (await client.get_webhook("shop")).status
            return 0 if status is None else status.pending

        deadline = time.monotonic() + 60
        while await pending() == 0:
            assert time.monotonic() < deadline, "no delivery ever became pending"
            await asyncio.sleep(0.1)
        killed = await asyncio.to_thread(actor_pid, settings)
        os.kill(killed, signal.SIGKILL)
        receiver.status = 200
        expected = {pool_id: ["pool.sold_out", "pool.back_on_sale"] * CYCLES for pool_id in pool_ids}
        await until(lambda: by_pool(receiver.events()) == expected)
        return errors, killed, expected

    try:
        errors, killed, expected = asyncio.run(scenario())
        assert errors == []  # a refusing receiver never failed a reserve or a release
        assert actor_pid(settings) != killed  # Ray restarted it, and it went on from the journal by itself
        assert in_order_per_stream(receiver.events()) and receiver.bad_signatures == 0
        assert by_pool(receiver.events()) == expected
    finally:
        receiver.stop()
        kill_namespace(settings.hosting.namespace)
