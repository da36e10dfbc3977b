"""The in-memory journal with the faults a unit test injects into its appends (and reads), so that no test
restates ``Journal.append`` to break it."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from capacity_service.adapters.journal import AppendRequest, JournalUnavailable, NewEvent, StoredEvent
from capacity_service.adapters.journal.memory import InMemoryJournal


class FaultyJournal(InMemoryJournal):
    """While ``failing``, every append raises ``JournalUnavailable(outage)``, and so does every read unless
    ``reads_fail_too`` is off. ``before_append`` runs as each append begins, before that check (to wait,
    count, or start an outage); ``after_append`` once one landed, with its new seq_nr. The next
    ``lost_replies`` appends land, then raise as a reply lost after the write would."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = False
        self.outage = "injected outage"
        self.reads_fail_too = True
        self.lost_replies = 0
        self.before_append: Callable[[AppendRequest], None] | None = None
        self.after_append: Callable[[AppendRequest, int], None] | None = None

    def append(
        self,
        pool_id: str,
        expected_seq_nr: int,
        epoch: int,
        events: Sequence[NewEvent],
        creates: bool = False,
        dormant: bool = False,
    ) -> int:
        request = AppendRequest(pool_id, expected_seq_nr, epoch, events, creates, dormant)
        before, after = self.before_append, self.after_append  # a hook may unset itself meanwhile
        if before is not None:
            before(request)
        if self.failing:
            raise JournalUnavailable(self.outage)
        seq_nr = super().append(*request)
        if after is not None:
            after(request, seq_nr)
        if self.lost_replies > 0:
            self.lost_replies -= 1
            raise JournalUnavailable("timed out waiting for the reply")
        return seq_nr

    def read(self, pool_id: str, from_seq_nr: int = 1) -> Iterator[StoredEvent]:
        if self.failing and self.reads_fail_too:
            raise JournalUnavailable(self.outage)
        return super().read(pool_id, from_seq_nr)
