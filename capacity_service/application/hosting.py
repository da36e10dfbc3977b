"""What the runners of one process share (``stream_runner``): the journal and its shared calls, the breaker,
the write side's settings, and the fence, which one write that learns of a newer incarnation closes for the
whole host."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from capacity_service.adapters.journal import Journal
from capacity_service.application.circuit_breaker import CircuitBreaker
from capacity_service.application.group_commit import DormantMarks, GroupCommit
from capacity_service.application.repeated_log import RepeatedFailureLog
from capacity_service.application.single_writer import BatchResult
from capacity_service.errors import Unavailable
from capacity_service.settings import WriteSideSettings

log = logging.getLogger(__name__)


class HostFenced(Unavailable):
    """This host was fenced by a newer incarnation and serves nothing any more."""


class HostFencedAfterWriting(HostFenced):
    """Fenced by the very append of these commands, which may have been written all the same (on Cassandra
    an append is written, then its epoch checked): whether they were decided is for the newer
    incarnation to say, and a caller that cannot ask it does not know."""


class Fence:
    """Whether the host is fenced: one write that learns it stops every stream of the host."""

    def __init__(self, on_fenced: Callable[[], None] | None = None) -> None:
        self.fenced = False
        self._on_fenced = on_fenced

    def close(self) -> None:
        if not self.fenced:
            self.fenced = True
            log.error("fenced: a newer incarnation of a stream hosted here exists; this host stops serving")
            if self._on_fenced is not None:
                self._on_fenced()

    def error(self, after_writing: bool = False) -> HostFenced:
        if after_writing:
            return HostFencedAfterWriting("this pool moved to a newer incarnation while writing; retry")
        return HostFenced("this pool moved to a newer incarnation; retry")


@dataclass(frozen=True)
class SharedByRunners:
    """What the runners of one host share: the journal and its calls, the breaker, the settings, the fence,
    and the host's reactions to a runner's durable writes and hand-back."""

    journal: Journal
    group_commit: GroupCommit
    dormancy: DormantMarks
    breaker: CircuitBreaker
    settings: WriteSideSettings
    fence: Fence
    failures: RepeatedFailureLog
    spawn: Callable[[Coroutine[Any, Any, None]], None]
    after_durable: Callable[[Any, BatchResult[Any, Any]], None]
    handed_back: Callable[[Any], None]  # the runner handed back
