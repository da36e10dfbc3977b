"""``WebhookHints``: the ``EventPublisher`` of pool actors that tells the webhooks actor which streams moved
(each stream's newest seq_nr), one message every ``_INTERVAL_S`` at most, so that webhooks read those streams
now instead of learning of them from a query of every stream's head. A word never makes a write wait and may
be lost (the webhooks actor down, restarting, slow): its periodic heads query then finds the stream."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from capacity_service.domain import PersistedEvent
from capacity_service.runtime import _ray
from capacity_service.runtime.actor_api import WebhooksApi, call
from capacity_service.runtime.names import WEBHOOKS_NAME
from capacity_service.settings import ServiceSettings

log = logging.getLogger(__name__)

# The moved streams of this long go in one message; webhook lag is counted in hundreds of ms.
_INTERVAL_S = 0.1
_TELL_TIMEOUT_S = 10.0


class WebhookHints:
    def __init__(self, settings: ServiceSettings) -> None:
        self._namespace = settings.hosting.namespace
        self._moved: dict[str, int] = {}
        self._flush_scheduled = False
        self._sending = False  # one message at a time: while it is under way, the moves gather (one per stream)
        self._handle: _ray.Handle | None = None
        self._sender: asyncio.Task[None] | None = None

    def publish_events(self, events: Sequence[PersistedEvent]) -> None:
        moved = self._moved
        for event in events:  # in seq_nr order: the last of a stream is its newest
            moved[event.pool_id] = event.seq_nr
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(_INTERVAL_S, self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._sending:
            self._schedule_flush()
            return
        moved, self._moved = self._moved, {}
        if moved:
            self._sending = True
            self._sender = asyncio.ensure_future(self._send(moved))

    async def _send(self, moved: dict[str, int]) -> None:
        try:
            if self._handle is None:
                self._handle = await asyncio.to_thread(_ray.lookup_actor, WEBHOOKS_NAME, self._namespace)
            if self._handle is not None:  # none: no webhooks actor yet, and so no webhook to tell
                await _ray.ask(self._handle, call(WebhooksApi.streams_moved, moved), _TELL_TIMEOUT_S)
        except Exception as exc:  # the heads query finds these streams
            self._handle = None
            log.debug("telling the webhooks of %d moved streams failed: %s", len(moved), exc)
        finally:
            self._sending = False
