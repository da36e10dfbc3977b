"""The single writer of one schedule's stream: recover, decide, persist, apply. The schedule's counterpart of
``OrderWriter``, run by the same runner (``stream_runner``); a schedule is a few events per apply (one per
batch of its pools), so it is recovered from them alone, with no snapshots."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from capacity_service.adapters.codec import ScheduleCodec
from capacity_service.adapters.journal import Journal, NewEvent
from capacity_service.application.single_writer import BatchResult, PreparedBatch, StreamWriter
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


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class ScheduleOutcome:
    """The answer to one schedule command: a rejection, or the schedule's view after it (``events``: what
    it wrote; none for a put of the template being applied already)."""

    rejection: UnknownSchedule | None
    view: ScheduleView
    events: tuple[ScheduleEvent, ...] = ()


class ScheduleWriter(StreamWriter[ScheduleState]):
    def __init__(self, schedule_id: str, journal: Journal, codec: ScheduleCodec | None = None) -> None:
        super().__init__(
            journal, schedule_stream_id(schedule_id), ScheduleState(schedule_id), f"schedule {schedule_id}"
        )
        self.schedule_id = schedule_id
        self._codec = codec or ScheduleCodec()

    def _new_state(self) -> ScheduleState:
        return ScheduleState(self.schedule_id)

    @property
    def dormant(self) -> bool:
        """Never: a schedule stays hosted (and the watchdog keeps it so), so that a put that finds it applied
        and starts it again is continued after a crash as its first apply is. Schedules are few."""
        return False

    def view(self) -> ScheduleView:
        return view_of_schedule(self._state, self._seq_nr)

    def start(self, epoch: int, recover: bool = True) -> None:
        """Take over the stream with ``epoch`` (claimed for this writer), then read it (unless it was just
        claimed for the first time, when it has no events)."""
        self._claimed(epoch)
        if recover:
            self.reload()

    def reload(self) -> None:
        self._hold.claim_if_needed()
        state, seq_nr = ScheduleState(self.schedule_id), 0
        for stored in self._journal.read(self._stream_id):
            apply(state, self._codec.decode_event(stored.event_type, stored.schema_version, stored.payload))
            seq_nr = stored.seq_nr
        self._state, self._seq_nr = state, seq_nr

    def prepare(self, commands: Sequence[ScheduleCommand]) -> PreparedBatch[ScheduleOutcome, ScheduleEvent]:
        self._ready_to_decide()
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
