"""The watchdog: every registered pool must have a live, recovered actor.

The original system's hard-won lesson: after restarts and node changes, actors that nobody messages are
never started again, and starting all of them at once overloads recovery. So the watchdog pings every
pool in the journal's registry, at most ``concurrency`` at a time; a ping recovers a pool whose actor is
missing (Ray restarts or the router recreates it). The cold start of a cluster is one sweep.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SweepReport:
    started_at: float
    duration_s: float
    alive: int
    failed: dict[str, str] = field(default_factory=dict)
    journal_error: str | None = None  # the registry could not be read: nothing was checked

    @property
    def healthy(self) -> bool:
        return not self.failed and self.journal_error is None


class Watchdog:
    def __init__(
        self,
        registered_pools: Callable[[], Iterable[str]],
        ping: Callable[[str], Awaitable[object]],
        concurrency: int,
    ) -> None:
        self._registered_pools = registered_pools
        self._ping = ping
        self._concurrency = concurrency
        self.last_report: SweepReport | None = None

    async def sweep(self) -> SweepReport:
        started = time.monotonic()
        try:
            pool_ids = await asyncio.to_thread(lambda: list(self._registered_pools()))
        except Exception as exc:
            report = SweepReport(time.time(), time.monotonic() - started, 0, {}, f"{type(exc).__name__}: {exc}")
            log.warning("watchdog: cannot read the pool registry: %s", report.journal_error)
            self.last_report = report
            return report
        gate = asyncio.Semaphore(self._concurrency)
        failed: dict[str, str] = {}

        async def check(pool_id: str) -> None:
            async with gate:
                try:
                    await self._ping(pool_id)
                except Exception as exc:
                    failed[pool_id] = f"{type(exc).__name__}: {exc}"

        await asyncio.gather(*(check(p) for p in pool_ids))
        report = SweepReport(time.time(), time.monotonic() - started, len(pool_ids) - len(failed), failed)
        if failed:
            log.warning("watchdog: %d of %d pools not serving: %s", len(failed), len(pool_ids), failed)
        self.last_report = report
        return report
