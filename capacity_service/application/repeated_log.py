"""Failures that repeat (a journal gone for a minute fails every write of every pool) are logged once per
interval with how often they happened, not once each: thousands of identical lines hide the one that
matters and cost the CPU the service needs to recover."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Seen:
    logged_at: float
    repeats: int = 0


class RepeatedFailureLog:
    """``warning(kind, message)`` logs the first failure of a ``kind`` at once, then at most one line per
    ``interval_s`` for that kind, saying how many were not logged since."""

    def __init__(
        self, logger: logging.Logger, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._clock = clock
        self._seen: dict[str, _Seen] = {}

    def warning(self, kind: str, message: str, *args: object) -> None:
        self._log(logging.WARNING, kind, message, args)

    def error(self, kind: str, message: str, *args: object) -> None:
        self._log(logging.ERROR, kind, message, args)

    def _log(self, level: int, kind: str, message: str, args: tuple[object, ...]) -> None:
        now = self._clock()
        seen = self._seen.get(kind)
        if seen is not None and now - seen.logged_at < self._interval_s:
            seen.repeats += 1
            return
        if seen is not None and seen.repeats:
            message += f" (and {seen.repeats} more like it in the last {now - seen.logged_at:.0f} s)"
        self._seen[kind] = _Seen(now)
        self._logger.log(level, message, *args)
