"""The single writer of one pool, without Ray: recover, decide, persist, apply, snapshot.

The Ray pool actor is a thin shell around this, so every rule here is testable without a cluster.
``execute`` takes a batch of commands (group commit): each is decided in order against the state left
by the ones before it, all their events go to the journal in ONE append, and only then are outcomes
returned. If the append fails the in-memory state is rebuilt from the journal, so it never holds an
event that was not persisted.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from capacity_service.adapters.codec import Codec
from capacity_service.adapters.journal import (
    Journal,
    JournalError,
    NewEvent,
)
from capacity_service.application.recovery import RecoveredPool, SnapshotPolicy, encode_snapshot, recover_pool
from capacity_service.application.single_writer import BatchResult, PreparedBatch, StreamWriter
from capacity_service.domain import (
    CapacityHeld,
    Confirm,
    ExpireHolds,
    ExtendHold,
    HoldExtended,
    JoinWaitlist,
    LeaveWaitlist,
    PersistedEvent,
    PoolCommand,
    PoolEvent,
    PoolReset,
    PoolState,
    PoolView,
    Rejection,
    Release,
    Reservation,
    ReservationStatus,
    Reserve,
    WaitlistOffered,
    WaitlistPlace,
    apply,
    decide,
    place_of,
    view_of,
)
from capacity_service.domain.values import pickled_by_fields
from capacity_service.settings import SnapshotSettings

log = logging.getLogger(__name__)

# Holds expired in one batch at most: a storm of expiries goes out in several appends, with the
# commands that arrive meanwhile decided between them.
MAX_EXPIRIES_PER_BATCH = 2_000
# The same while entries wait: each unit freed may become an offer, an event of its own to decide, apply,
# encode and append, and the host's other pools wait while one batch is prepared and appended, so batches
# stay small (docs/performance.md, "Waitlists").
MAX_EXPIRIES_PER_BATCH_WITH_WAITLIST = 20


@dataclass(frozen=True, slots=True)
class CapturedSnapshot:
    """A copy of a pool's state at ``seq_nr``, taken for a snapshot, not encoded yet."""

    seq_nr: int
    state: PoolState


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """The answer to one command: a rejection, or the pool view after it (and the reservation it
    created or released). ``events`` is empty for an idempotent repeat. ``place``: the waitlist entry a
    join or a leave named, as it is after it."""

    rejection: Rejection | None
    view: PoolView
    reservation: Reservation | None
    events: tuple[PoolEvent, ...]
    place: WaitlistPlace | None = None


def answer_of_absent_pool(pool_id: str, command: PoolCommand) -> CommandOutcome:
    """How a pool with no events answers a command that does not configure it: decided against the empty
    state (``PoolNotFound``, ``ReservationNotFound``), with nothing started and nothing written."""
    state = PoolState(pool_id)
    decision = decide(state, command)
    if isinstance(decision, list):
        raise ValueError(f"{type(command).__name__} would change pool {pool_id!r}, which has no events")
    return CommandOutcome(decision, view_of(state, 0), None, ())


def view_of_absent_pool(pool_id: str) -> PoolView:
    return view_of(PoolState(pool_id), 0)


class PoolWriter(StreamWriter[PoolState]):
    def __init__(
        self,
        pool_id: str,
        journal: Journal,
        codec: Codec | None = None,
        snapshots: SnapshotSettings | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__(journal, pool_id, PoolState(pool_id), f"pool {pool_id}")
        self.pool_id = pool_id
        self._clock = clock or _utc_now
        # (expiry as a timestamp, reservation_id, expires_at) of the holds, earliest first: floats compare
        # several times faster than datetimes in the heap. An entry whose hold ended since is skipped
        # when it comes up.
        self._expiries: list[tuple[float, str, datetime]] = []
        self._codec = codec or Codec()
        self._snapshot_settings = snapshots or SnapshotSettings()
        self._snapshot_policy = SnapshotPolicy(self._snapshot_settings.every_n_events)
        # seq_nr of the last snapshot attempt: a failed one is retried only N events later, so a
        # struggling store is not hit by a snapshot after every write.
        self._last_snapshot_attempt = 0

    def _new_state(self) -> PoolState:
        return PoolState(self.pool_id)

    @property
    def dormant(self) -> bool:
        """Retired with nothing held or active: the pool will never change by itself again."""
        return self._state.dormant

    def repeats_known_request(self, command: PoolCommand) -> bool:
        """A reserve whose request id the pool knows: answering it decides nothing new."""
        return isinstance(command, Reserve) and self._state.reservation_for_request(command.request_id) is not None

    def timer_command(self) -> PoolCommand:
        """What the pool's timer submits when its earliest hold is due (``prepare`` expires what is due)."""
        return ExpireHolds()

    def view(self) -> PoolView:
        return view_of(self._state, self._seq_nr)

    def start(self, epoch: int | None = None, recovered: RecoveredPool | None = None) -> None:
        """Claim a new writer epoch (fencing every earlier incarnation), then recover. ``epoch``: one
        claimed for this writer already (``Journal.claim_epochs`` claims many pools at once);
        ``recovered``: the state read after that claim (``recover_pools`` recovers many at once)."""
        self._claimed(self._journal.claim_epoch(self.pool_id) if epoch is None else epoch)
        if recovered is None:
            self.reload()
        else:
            self._install(recovered)

    def start_new(self) -> None:
        super().start_new()
        self._install(RecoveredPool(self._state, 0, 0, 0))  # no snapshot attempted, no holds

    def reload(self) -> None:
        self._hold.claim_if_needed()
        self._install(recover_pool(self._journal, self._codec, self.pool_id))

    def _install(self, recovered: RecoveredPool) -> None:
        self._state, self._seq_nr = recovered.state, recovered.seq_nr
        self._last_snapshot_attempt = recovered.snapshot_seq_nr
        self._rebuild_expiries()

    def _rebuild_expiries(self) -> None:
        self._expiries = [
            (r.expires_at.timestamp(), r.reservation_id, r.expires_at)
            for r in self._state.reservations.values()
            if r.status is ReservationStatus.HELD and r.expires_at is not None
        ]
        heapq.heapify(self._expiries)

    def next_expiry(self) -> datetime | None:
        """When the earliest hold expires (the host's timer wakes the pool then); None: no holds."""
        expiries, reservations = self._expiries, self._state.reservations
        while expiries:
            _, reservation_id, expires_at = expiries[0]
            held = reservations.get(reservation_id)
            if held is not None and held.status is ReservationStatus.HELD and held.expires_at == expires_at:
                return expires_at
            heapq.heappop(expiries)
        return None

    def _due_holds(self, now: datetime) -> list[str]:
        most = MAX_EXPIRIES_PER_BATCH_WITH_WAITLIST if self._state.waiting else MAX_EXPIRIES_PER_BATCH
        due: list[str] = []
        while len(due) < most and (earliest := self.next_expiry()) is not None and earliest <= now:
            due.append(heapq.heappop(self._expiries)[1])
        return due

    def execute(self, commands: Sequence[PoolCommand]) -> list[CommandOutcome]:
        return self.execute_batch(commands).outcomes

    def execute_batch(self, commands: Sequence[PoolCommand]) -> BatchResult[CommandOutcome, PersistedEvent]:
        """Decide, persist in one append, apply. Raises a ``JournalError`` (and keeps only durable
        state) when the append fails; ``WriterFenced`` marks this writer as fenced for good."""
        prepared = self.prepare(commands)
        if prepared.append is not None:
            try:
                new_seq_nr = self._journal.append(*prepared.append)
            except JournalError as exc:
                self.append_failed(prepared, exc)
                return prepared.result
            self.append_landed(prepared, new_seq_nr)
        return prepared.result

    def prepare(self, commands: Sequence[PoolCommand]) -> PreparedBatch[CommandOutcome, PersistedEvent]:
        """Decide each command against the state the ones before it left, apply the events to the
        in-memory state (tentatively) and encode them: what ``append`` must write, and the answers to give
        once it is durable. Until ``append_landed`` or ``append_failed`` the state holds events that are
        not durable yet."""
        self._ready_to_decide()
        outcomes: list[CommandOutcome] = []
        pending: list[NewEvent] = []
        persisted: list[PersistedEvent] = []
        now = self._clock()
        state = self._state
        # Holds whose time has come expire before anything else is decided (after a recovery too).
        due = self._due_holds(now)
        expiry = [ExpireHolds(tuple(due))] if due else []
        for command in [*expiry, *commands]:
            decision = decide(state, command, now)
            if not isinstance(decision, list):
                outcomes.append(CommandOutcome(decision, self.view(), None, ()))
                continue
            for event in decision:
                apply(state, event)
                if isinstance(event, CapacityHeld | WaitlistOffered | HoldExtended):
                    entry = (event.expires_at.timestamp(), event.reservation_id, event.expires_at)
                    heapq.heappush(self._expiries, entry)
                elif isinstance(event, PoolReset):  # holds of the state set back to are pending again
                    self._rebuild_expiries()
                encoded = self._codec.encode_event(event)
                pending.append(NewEvent(encoded.event_type, encoded.schema_version, encoded.payload))
                persisted.append(
                    PersistedEvent(
                        self.pool_id,
                        self._seq_nr + len(pending),
                        event,
                        state.capacity,
                        state.reserved,
                        state.zone,
                        state.slot_start,
                        state.slot_end,
                        now,
                    )
                )
            view = view_of(state, self._seq_nr + len(pending))
            place = None
            if isinstance(command, JoinWaitlist | LeaveWaitlist):
                place = place_of(state, _entry_of(state, command))
            outcomes.append(CommandOutcome(None, view, self._reservation_of(command), tuple(decision), place))
        append = self._hold.append_request(self._seq_nr, pending, dormant=self.dormant)
        return PreparedBatch(BatchResult(outcomes[len(expiry) :], persisted), append)

    def _discard_tentative_state(self) -> None:
        super()._discard_tentative_state()
        if self.needs_reload:  # the reload failed: the state is empty until the next write reads the stream
            log.warning(
                "pool %s: journal unreachable while discarding a failed batch; will reload later",
                self.pool_id,
            )

    @property
    def snapshot_due(self) -> bool:
        return not self.needs_reload and self._snapshot_policy.due(
            self._seq_nr, self._last_snapshot_attempt, len(self._state.reservations)
        )

    def snapshot_if_due(self) -> bool:
        """Take a snapshot when the policy says so. Failure is logged, never raised: a missing
        snapshot only makes the next recovery longer."""
        record = self.take_snapshot_if_due()
        return record is not None and self.store_snapshot(record)

    def take_snapshot_if_due(self) -> CapturedSnapshot | None:
        """A copy of the state for a snapshot, when one is due (fast: reservations are immutable, so
        copying is the dicts' own C copy). Encoding and storing it (``store_snapshot``) then overlap the
        pool's writes."""
        if not self.snapshot_due:
            return None
        self._last_snapshot_attempt = self._seq_nr
        return CapturedSnapshot(self._seq_nr, self._state.copy())

    def store_snapshot(self, captured: CapturedSnapshot) -> bool:
        try:
            record = encode_snapshot(self._codec, captured.state, captured.seq_nr)
            self._journal.save_snapshot(record, keep=self._snapshot_settings.keep)
        except Exception as exc:
            log.warning("pool %s: snapshot at seq_nr %d failed: %s", self.pool_id, captured.seq_nr, exc)
            return False
        return True

    def _reservation_of(self, command: PoolCommand) -> Reservation | None:
        found: Reservation | None = None
        if isinstance(command, Reserve):
            found = self._state.reservation_for_request(command.request_id)
        elif isinstance(command, Release | Confirm | ExtendHold):
            found = self._state.reservations.get(command.reservation_id)
        return found  # immutable: a later release replaces it in the state


def _entry_of(state: PoolState, command: JoinWaitlist | LeaveWaitlist) -> str:
    """The entry a join or a leave is about (a repeated join's is the one its request id made first)."""
    if isinstance(command, JoinWaitlist):
        return state.waitlist_by_request.get(command.request_id, command.entry_id)
    return command.entry_id


def _utc_now() -> datetime:
    return datetime.now(UTC)
