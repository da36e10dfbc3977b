"""What the service layer reports for monitoring, as a port: the runtime gives Ray's metrics
(``runtime/metrics.py``), tests a recorder, and everything else ``NO_METRICS``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class HostMetrics(Protocol):
    def appended(self, seconds: float, appends: int, failures: int) -> None:
        """One ``append_many`` of ``appends`` pools' appends took ``seconds``; ``failures`` of them failed."""

    def holds_expired(self, count: int) -> None: ...

    def waitlist_offered(self, count: int) -> None:
        """Units came free and ``count`` waiting entries were offered a hold."""

    def order_rested(self, status: str) -> None:
        """An order came to rest: held, confirmed, failed or cancelled."""


class _NoMetrics:
    def appended(self, seconds: float, appends: int, failures: int) -> None:
        pass

    def holds_expired(self, count: int) -> None:
        pass

    def waitlist_offered(self, count: int) -> None:
        pass

    def order_rested(self, status: str) -> None:
        pass


NO_METRICS: HostMetrics = _NoMetrics()


@dataclass(frozen=True, slots=True)
class HostStats:
    """A host's state at one moment (gauges)."""

    pools_hosted: int
    pools_recovering: int
    commands_queued: int
    holds_pending: int
    breaker_open: bool


class WebhookMetrics(Protocol):
    """What webhook delivery reports: per webhook (their number is bounded by ``webhooks.max_webhooks``)."""

    def delivered(self, webhook_id: str, lag_s: float) -> None:
        """One event acknowledged by the receiver, ``lag_s`` after the journal recorded it."""

    def failed(self, webhook_id: str) -> None:
        """One POST not acknowledged (an error answer, a timeout, a refused connection or target)."""

    def retried(self, webhook_id: str) -> None:
        """One POST that repeats a failed one."""

    def show(self, webhook_id: str, events_behind: int, pending: int, seconds_behind: float) -> None: ...


class _NoWebhookMetrics:
    def delivered(self, webhook_id: str, lag_s: float) -> None:
        pass

    def failed(self, webhook_id: str) -> None:
        pass

    def retried(self, webhook_id: str) -> None:
        pass

    def show(self, webhook_id: str, events_behind: int, pending: int, seconds_behind: float) -> None:
        pass


NO_WEBHOOK_METRICS: WebhookMetrics = _NoWebhookMetrics()
