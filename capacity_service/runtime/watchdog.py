"""The watchdog: every live pool (registered, not dormant) must have a live, recovered actor.

The original system's hard-won lesson: after restarts and node changes, actors that nobody messages are
never started again, and starting all of them at once overloads recovery. So the watchdog pings every
pool in the journal's registry; a ping recovers a pool whose actor is missing (Ray restarts or the router
recreates it). The cold start of a cluster is one sweep. Pools hosted by one actor are pinged in one call
of up to ``max_group`` pools (10,000 pools on two shards: 20 calls per sweep, not 10,000), at most
``concurrency`` calls at a time; the host bounds its own concurrent recoveries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
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
        ping: Callable[[list[str]], Awaitable[Mapping[str, str]]],
        concurrency: int,
        host_of: Callable[[str], str] = lambda pool_id: pool_id,
        max_group: int = 500,
    ) -> None:
        """``ping(pool_ids)`` starts the pools (all hosted by one actor, per ``host_of``) and returns why
        each failed one is not serving; raising fails them all."""
        self._registered_pools = registered_pools
        self._ping = ping
        self._concurrency = concurrency
        self._host_of = host_of
        self._max_group = max_group
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

        async def check(group: list[str]) -> None:
            async with gate:
                try:
                    failed.update(await self._ping(group))
                except Exception as exc:
                    failed.update(dict.fromkeys(group, f"{type(exc).__name__}: {exc}"))

        await asyncio.gather(*(check(group) for group in self._groups(pool_ids)))
        report = SweepReport(time.time(), time.monotonic() - started, len(pool_ids) - len(failed), failed)
        if failed:
            log.warning("watchdog: %d of %d pools not serving: %s", len(failed), len(pool_ids), failed)
        self.last_report = report
        return report

    def _groups(self, pool_ids: list[str]) -> list[list[str]]:
        by_host: dict[str, list[str]] = {}
        for pool_id in pool_ids:
            by_host.setdefault(self._host_of(pool_id), []).append(pool_id)
        return [
            pools[start : start + self._max_group]
            for pools in by_host.values()
            for start in range(0, len(pools), self._max_group)
        ]
