"""The webhooks' calls (an admin key when keys are configured): register or change, list, show with its
delivery status, delete. Registrations and deliveries live in the webhooks actor; secrets are never
answered and never logged. Their routes are in ``routes.py``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import Response

from capacity_service.client import AsyncCapacityClient
from capacity_service.entrypoints.http.schemas import WEBHOOK_ID, PutWebhookRequest
from capacity_service.models import Webhook, WebhookList

log = logging.getLogger(__name__)


def webhook_handlers(client: AsyncCapacityClient) -> list[Callable[..., Any]]:
    async def put_webhook(webhook_id: WEBHOOK_ID, body: PutWebhookRequest, response: Response) -> Webhook:
        """Register a webhook (201) or change one (200; its deliveries go on where they were). It is sent
        the events of its types that happen from its registration on, signed with its secret, at least
        once, in order per pool (docs/http-api.md, "Webhooks")."""
        webhook, created = await client.put_webhook(webhook_id, body.url, list(body.events), body.secret)
        response.status_code = 201 if created else 200
        return webhook

    async def list_webhooks() -> WebhookList:
        return WebhookList(webhooks=await client.list_webhooks())

    async def get_webhook(webhook_id: WEBHOOK_ID) -> Webhook:
        """The webhook with its delivery status: how far behind the journal it is, attempts, last error."""
        return await client.get_webhook(webhook_id)

    async def delete_webhook(webhook_id: WEBHOOK_ID) -> Webhook:
        """Stop delivering and forget the webhook (registering its id again starts from then)."""
        return await client.delete_webhook(webhook_id)

    return [put_webhook, list_webhooks, get_webhook, delete_webhook]
