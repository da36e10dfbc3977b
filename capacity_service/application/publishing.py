"""What a pool hands to the read side, the warehouse and the webhooks after each durable write.

Both are fire-and-forget: a publisher must return at once and never raise into the write path (a
failure is logged by the caller and repaired later from the journal). Receivers live in the read-side
and warehouse packages; ``NullPublisher`` is the default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from capacity_service.domain import PersistedEvent, PoolView


class ViewPublisher(Protocol):
    def publish_view(self, view: PoolView) -> None:
        """The pool's new view; ``view.version`` orders updates (last writer wins by seq_nr)."""


class EventPublisher(Protocol):
    def publish_events(self, events: Sequence[PersistedEvent]) -> None:
        """Events just made durable, in seq_nr order."""


class NullPublisher:
    def publish_view(self, view: PoolView) -> None:
        pass

    def publish_events(self, events: Sequence[PersistedEvent]) -> None:
        pass


class EventPublishers:
    """Several publishers as one: each is handed every batch of events, in the order given."""

    def __init__(self, *publishers: EventPublisher) -> None:
        self._publishers = publishers

    def publish_events(self, events: Sequence[PersistedEvent]) -> None:
        for publisher in self._publishers:
            publisher.publish_events(events)
