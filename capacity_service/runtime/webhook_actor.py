"""The webhooks actor (``webhooks``, one per service, named, detached, restarted by Ray; the supervisor
keeps it running): the webhooks' registrations and their delivery from the journal, in its own process,
so that a slow or dead receiver costs the pools nothing. ``RayWebhookAdmin``: the operator's calls, made
on it from the HTTP replicas and Python clients."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import TypeVar

from capacity_service.errors import CapacityError, Unavailable
from capacity_service.models import Webhook
from capacity_service.runtime import _ray, bootstrap
from capacity_service.runtime.actor_api import Call, WebhooksApi, call
from capacity_service.runtime.environment import metrics_collected
from capacity_service.runtime.metrics import GAUGE_INTERVAL_S, RayWebhookMetrics
from capacity_service.runtime.names import WEBHOOKS_NAME
from capacity_service.settings import ServiceSettings

T = TypeVar("T")


class WebhookActor(WebhooksApi):
    # Async: Ray runs an async constructor on the actor's event loop, where delivery can be started.
    async def __init__(self, settings: ServiceSettings) -> None:  # type: ignore[misc]
        metrics = RayWebhookMetrics() if metrics_collected() else None
        self._deliveries = bootstrap.webhook_deliveries(settings, metrics)
        self._metrics_task: asyncio.Task[None] | None = None
        self._metrics_on = metrics is not None
        if _ray.actor_was_restarted():
            await self.start()  # Ray restarted it (a crash, its node lost): deliveries go on at once

    async def start(self) -> None:
        self._deliveries.start()
        if self._metrics_task is None and self._metrics_on:
            self._metrics_task = asyncio.ensure_future(self._show_metrics())

    async def _show_metrics(self) -> None:
        while True:
            self._deliveries.show_metrics()
            await asyncio.sleep(GAUGE_INTERVAL_S)

    async def put_webhook(
        self, webhook_id: str, url: str, events: list[str], secret: str
    ) -> tuple[Webhook, bool] | CapacityError:
        await self.start()
        return await _as_value(self._deliveries.put_webhook(webhook_id, url, events, secret))

    async def list_webhooks(self) -> list[Webhook] | CapacityError:
        await self.start()
        return await _as_value(self._deliveries.list_webhooks())

    async def get_webhook(self, webhook_id: str) -> Webhook | CapacityError:
        await self.start()
        return await _as_value(self._deliveries.get_webhook(webhook_id))

    async def delete_webhook(self, webhook_id: str) -> Webhook | CapacityError:
        await self.start()
        return await _as_value(self._deliveries.delete_webhook(webhook_id))

    async def status(self) -> dict[str, object]:
        await self.start()
        return {**self._deliveries.status(), "pid": _ray.process_id()}

    async def streams_moved(self, heads: dict[str, int]) -> None:
        self._deliveries.streams_moved(heads)


async def _as_value(answer: Awaitable[T]) -> T | CapacityError:
    """The answer, or its error as a value (Ray would wrap a raised one); a store that does not answer is
    ``Unavailable``."""
    try:
        return await answer
    except CapacityError as exc:
        return exc
    except Exception as exc:
        return Unavailable(f"webhooks: {type(exc).__name__}: {exc}")


def ensure_webhooks(settings: ServiceSettings) -> _ray.Handle:
    """The webhooks actor, created if missing (named, detached, restarted by Ray forever)."""
    return _ray.ensure_actor(
        WebhookActor, WEBHOOKS_NAME, settings.hosting.namespace, (settings,), dict(settings.hosting.actor_resources)
    )


class RayWebhookAdmin:
    """The operator's calls on webhooks (``WebhookAdmin``), made on the webhooks actor."""

    def __init__(self, settings: ServiceSettings) -> None:
        self._settings = settings
        self._handle: _ray.Handle | None = None

    async def put_webhook(self, webhook_id: str, url: str, events: Sequence[str], secret: str) -> tuple[Webhook, bool]:
        return await self._ask(call(WebhooksApi.put_webhook, webhook_id, url, list(events), secret))

    async def list_webhooks(self) -> list[Webhook]:
        return await self._ask(call(WebhooksApi.list_webhooks))

    async def get_webhook(self, webhook_id: str) -> Webhook:
        return await self._ask(call(WebhooksApi.get_webhook, webhook_id))

    async def delete_webhook(self, webhook_id: str) -> Webhook:
        return await self._ask(call(WebhooksApi.delete_webhook, webhook_id))

    async def _ask(self, request: Call[T | CapacityError]) -> T:
        if not self._settings.webhooks.enabled:
            raise Unavailable("webhooks are turned off (webhooks.enabled)")
        try:
            if self._handle is None:
                self._handle = await asyncio.to_thread(ensure_webhooks, self._settings)
            answer = await _ray.ask(self._handle, request, self._settings.hosting.call_timeout_s)
        except _ray.ActorGone as exc:
            self._handle = None
            raise Unavailable(f"the webhooks actor did not answer: {exc}") from exc
        if isinstance(answer, CapacityError):
            raise answer
        return answer
