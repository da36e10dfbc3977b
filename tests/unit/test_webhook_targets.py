"""Where a webhook may point: http(s) URLs of public addresses only (unless the setting allows private ones)."""

from __future__ import annotations

import asyncio

import pytest

from capacity_service.adapters.journal.memory import InMemoryJournal
from capacity_service.adapters.webhooks.memory import InMemoryWebhookStore
from capacity_service.adapters.webhooks.targets import TargetRefused, check_addresses, checked_url, refusal
from capacity_service.application.webhook_delivery import WebhookDeliveries
from capacity_service.errors import InvalidRequest
from capacity_service.settings import WebhookSettings


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "::1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # the cloud metadata service
        "fe80::1",
        "fc00::1",
        "100.64.0.1",  # shared address space (carrier NAT)
        "0.0.0.0",
        "224.0.0.1",
        "::ffff:127.0.0.1",  # loopback, mapped into IPv6
        "240.0.0.1",
    ],
)
def test_private_loopback_link_local_and_reserved_addresses_are_refused(address: str) -> None:
    assert refusal(address) is not None
    with pytest.raises(TargetRefused):
        check_addresses("example.test", ["93.184.216.34", address])  # one bad address is enough


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "8.8.8.8"])
def test_public_addresses_may_be_reached(address: str) -> None:
    assert refusal(address) is None
    check_addresses("example.test", [address])


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "gopher://example.com",
        "http://",
        "https://user:pw@example.com/hook",
        "example.com/hook",
        "http://example.com:99999/",
        "https://" + "a" * 2050 + ".com/",
    ],
)
def test_only_http_and_https_urls_with_a_host_and_no_credentials(url: str) -> None:
    with pytest.raises(InvalidRequest):
        checked_url(url)


class FakeResolver:
    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers

    async def resolve(self, host: str, port: int) -> list[str]:
        if host not in self.answers:
            raise OSError("no such host")
        return self.answers[host]

    async def aclose(self) -> None:
        pass

    async def post(self, url: str, headers: dict[str, str], body: bytes, timeout_s: float, allow_private: bool) -> int:
        return 200


def deliveries(allow_private: bool) -> WebhookDeliveries:
    resolver = FakeResolver({"hooks.example.com": ["93.184.216.34"], "rebound.example.com": ["10.0.0.5"]})
    return WebhookDeliveries(
        WebhookSettings(allow_private_targets=allow_private),
        open_store=InMemoryWebhookStore,
        open_journal=InMemoryJournal,
        transport=resolver,
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://api.localhost/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data",
        "https://rebound.example.com/hook",  # a name that resolves to a private address
        "https://nowhere.example.com/hook",  # a name that does not resolve
    ],
)
def test_registration_refuses_private_targets_with_422_unless_allowed(url: str) -> None:
    async def run() -> None:
        refusing = deliveries(allow_private=False)
        with pytest.raises(InvalidRequest):
            await refusing.put_webhook("h", url, ["hold.expired"], "s" * 16)
        await refusing.close()
        if "nowhere" in url:
            return
        allowing = deliveries(allow_private=True)
        webhook, created = await allowing.put_webhook("h", url, ["hold.expired"], "s" * 16)
        assert created and webhook.url == url
        await allowing.close()

    asyncio.run(run())


def test_registration_accepts_a_public_target() -> None:
    async def run() -> None:
        service = deliveries(allow_private=False)
        webhook, created = await service.put_webhook("h", "https://hooks.example.com/x", ["order.confirmed"], "s" * 16)
        assert created and webhook.events == ["order.confirmed"]
        await service.close()

    asyncio.run(run())
