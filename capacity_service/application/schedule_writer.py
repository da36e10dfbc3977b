"""The single writer of one schedule's stream: recover, decide, persist, apply. The schedule's counterpart of
``OrderWriter``, run by the same runner (``stream_runner``); a schedule is a few events per apply (one per
batch of its pools), so it is recovered from them alone, with no snapshots."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from capacity_service.adapters.codec import ScheduleCodec
from capacity_service.adapters.journal import Journal, JournalError, NewEvent, WriterFenced
from capacity_service.application.single_writer import BatchResult, PreparedBatch, StreamHold, landed_after_all
from capacity_service.domain.ids import schedule_stream_id
from capacity_service.domain.schedule import (
    ApplySchedule,
    ScheduleCommand,
    ScheduleEvent,
    ScheduleState,
    ScheduleStatus,
    ScheduleView,
    UnknownSchedule,
    apply,
    decide,
    view_of_schedule,
)
from capacity_service.domain.values import pickled_by_fields

log = logging.getLogger(__name__)


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class ScheduleOutcome:
    """The answer to one schedule command: a rejection, or the schedule's view after it (``events``: what
    it wrote; none for a put of the template being applied already)."""

    rejection: UnknownSchedule | None
    view: ScheduleView
    events: tuple[ScheduleEvent, ...] = ()


class ScheduleWriter:
    def __init__(self, schedule_id: str, journal: Journal, codec: ScheduleCodec | None = None) -> None:
        self.schedule_id = schedule_id
        self._stream_id = schedule_stream_id(schedule_id)
        self._journal = journal
        self._codec = codec or ScheduleCodec()
        self._state = ScheduleState(schedule_id)
        self._seq_nr = 0
        self._hold = StreamHold(journal, self._stream_id)
        self.fenced = False

    @property
    def stream_id(self) -> str:
        return self._stream_id

    @property
    def state(self) -> ScheduleState:
        return self._state

    @property
    def seq_nr(self) -> int:
        return self._seq_nr

    @property
    def needs_reload(self) -> bool:
        return self._seq_nr < 0

    @property
    def dormant(self) -> bool:
        """Never: a schedule stays hosted (and the watchdog keeps it so), so that a put that finds it applied
        and starts it again is continued after a crash as its first apply is. Schedules are few."""
        return False

    @property
    def dormancy_recorded(self) -> bool:
        return False

    @property
    def epoch(self) -> int:
        return self._hold.epoch

    @property
    def believed_new(self) -> bool:
        return self._hold.creating

    def view(self) -> ScheduleView:
        return view_of_schedule(self._state, self._seq_nr)

    def start(self, epoch: int, recover: bool = True) -> None:
        """Take over the stream with ``epoch`` (claimed for this writer), then read it (unless it was just
        claimed for the first time, when it has no events)."""
        self._hold.claimed(epoch)
        self.fenced = False
        if recover:
            self.reload()

    def start_new(self) -> None:
        """Start as a schedule that does not exist yet, claiming nothing (``PoolWriter.start_new``)."""
        self._hold.believe_new()
        self.fenced = False
        self._state, self._seq_nr = ScheduleState(self.schedule_id), 0

    def take_over(self) -> None:
        self._hold.take_over()
        self._discard_tentative_state()

    def reload(self) -> None:
        self._hold.claim_if_needed()
        state, seq_nr = ScheduleState(self.schedule_id), 0
        for stored in self._journal.read(self._stream_id):
            apply(state, self._codec.decode_event(stored.event_type, stored.schema_version, stored.payload))
            seq_nr = stored.seq_nr
        self._state, self._seq_nr = state, seq_nr

    def prepare(self, commands: Sequence[ScheduleCommand]) -> PreparedBatch[ScheduleOutcome, ScheduleEvent]:
        if self.fenced:
            raise WriterFenced(self._stream_id, self.epoch, None)
        if self.needs_reload:
            self.reload()
        outcomes: list[ScheduleOutcome] = []
        persisted: list[ScheduleEvent] = []
        pending: list[NewEvent] = []
        for command in commands:
            decision = decide(self._state, command)
            if not isinstance(decision, list):
                outcomes.append(ScheduleOutcome(decision, self.view()))
                continue
            for event in decision:
                apply(self._state, event)
                encoded = self._codec.encode_event(event)
                pending.append(NewEvent(encoded.event_type, encoded.schema_version, encoded.payload))
                persisted.append(event)
            view = view_of_schedule(self._state, self._seq_nr + len(pending))
            outcomes.append(ScheduleOutcome(None, view, tuple(decision)))
        append = self._hold.append_request(self._seq_nr, pending, dormant=False)
        return PreparedBatch(BatchResult(outcomes, persisted), append)

    def append_landed(self, prepared: PreparedBatch[Any, Any], new_seq_nr: int) -> None:
        self._hold.landed(prepared.append)
        self._seq_nr = new_seq_nr

    def append_failed(self, prepared: PreparedBatch[Any, Any], error: JournalError) -> None:
        """As ``OrderWriter.append_failed``: throw the tentative state away; return normally only if the
        stream shows the append landed after all."""
        if isinstance(error, WriterFenced):
            self.fenced = True
        created = self._hold.failed()
        self._discard_tentative_state()
        if not created and landed_after_all(prepared, error, self._seq_nr):
            log.info("schedule %s: append reported a failure but is in the journal", self.schedule_id)
            return
        raise error

    def _discard_tentative_state(self) -> None:
        try:
            self.reload()
        except JournalError:  # read before the next decision
            self._state, self._seq_nr = ScheduleState(self.schedule_id), -1

    def repeats_known_request(self, command: Any) -> bool:
        """A put of the template being applied: answering it decides nothing new."""
        applying = self._state.status is ScheduleStatus.APPLYING
        return isinstance(command, ApplySchedule) and applying and command.template == self._state.template

    def next_expiry(self) -> datetime | None:
        return None

    def timer_command(self) -> None:
        return None

    def take_snapshot_if_due(self) -> None:
        return None

    def store_snapshot(self, captured: Any) -> bool:
        return False
