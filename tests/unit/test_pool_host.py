"""PoolHost without Ray: group commit, durability before replies, circuit breaker, fencing, publishing,
bounded recoveries. The journal is the in-memory one, slowed down or broken on purpose (and a SQLite file
for the inline appends)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path

import pytest

from capacity_service.adapters.journal import (
    FIRST_EPOCH,
    AppendRequest,
    Journal,
    JournalError,
    SnapshotRecord,
    StoredEvent,
)
from capacity_service.adapters.journal.memory import InMemoryJournal
from capacity_service.adapters.journal.sql import SqlJournal
from capacity_service.application.hosting import HostFenced
from capacity_service.application.pool_host import PoolHost
from capacity_service.application.pool_writer import CommandOutcome
from capacity_service.domain import (
    ConfigurePool,
    NotEnoughCapacity,
    PersistedEvent,
    PoolView,
    Release,
    Reserve,
    new_reservation_id,
)
from capacity_service.domain import UnknownPool as PoolNotFoundRejection
from capacity_service.domain import UnknownReservation as ReservationNotFoundRejection
from capacity_service.errors import OutcomeUnknown, Overloaded, Unavailable
from capacity_service.settings import SnapshotSettings, SqlJournalSettings, WriteSideSettings
from tests.support.faulty_journal import FaultyJournal


class SlowJournal(FaultyJournal):
    """Appends and reads take ``delay`` seconds; records how many appends ran and when each finished."""

    def __init__(self, delay: float = 0.02) -> None:
        super().__init__()
        self.delay = delay
        self.append_attempts = 0
        self.durable_at: dict[int, float] = {}
        self._reads_in_flight = 0
        self.max_parallel_recoveries = 0
        self._count_lock = threading.Lock()
        self.before_append = self._take_time
        self.after_append = self._record_durable

    def _take_time(self, request: AppendRequest) -> None:
        self.append_attempts += 1
        time.sleep(self.delay)

    def _record_durable(self, request: AppendRequest, seq_nr: int) -> None:
        for n in range(request.expected_seq_nr + 1, seq_nr + 1):
            self.durable_at[n] = time.monotonic()

    def read(self, pool_id: str, from_seq_nr: int = 1) -> Iterator[StoredEvent]:
        events = super().read(pool_id, from_seq_nr)  # fails in an outage before it counts as a recovery
        with self._count_lock:
            self._reads_in_flight += 1
            self.max_parallel_recoveries = max(self.max_parallel_recoveries, self._reads_in_flight)
        try:
            time.sleep(self.delay)
            yield from events
        finally:
            with self._count_lock:
                self._reads_in_flight -= 1


def reserve(pool_id: str = "p", quantity: int = 1) -> Reserve:
    rid = new_reservation_id(pool_id)
    return Reserve(quantity, rid, rid)


async def configured_host(journal: Journal, capacity: int = 50, **settings: float) -> PoolHost:
    host = PoolHost(journal, WriteSideSettings(**settings))  # type: ignore[arg-type]
    await host.execute("p", ConfigurePool(capacity, "z"))
    return host


def test_concurrent_reserves_never_oversell_and_are_group_committed() -> None:
    async def scenario() -> None:
        journal = SlowJournal(delay=0.02)
        host = await configured_host(journal, capacity=50)
        appends_before = journal.append_attempts
        outcomes = await asyncio.gather(*(host.execute("p", reserve()) for _ in range(200)))
        accepted = [o for o in outcomes if o.rejection is None]
        assert len(accepted) == 50
        assert all(isinstance(o.rejection, NotEnoughCapacity) for o in outcomes if o.rejection)
        assert journal.highest_seq_nr("p") == 51
        # 200 commands arrived while writes were in flight: far fewer appends than commands.
        assert journal.append_attempts - appends_before <= 5

    asyncio.run(scenario())


class CountedJournal(InMemoryJournal):
    """Records the size of every ``append_many`` call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def append_many(self, appends: Sequence[AppendRequest]) -> list[int | JournalError]:
        self.calls.append(len(appends))
        return super().append_many(appends)


def test_appends_a_few_turns_of_the_event_loop_apart_are_committed_together() -> None:
    """A stream's next append comes a few turns after the answer to its last (an order's reserves after its
    placing): they join the commit under way instead of making one each (an fsync each on SQLite)."""

    async def scenario() -> None:
        journal = CountedJournal()
        host = PoolHost(journal)
        await asyncio.gather(*(host.execute(p, ConfigurePool(5, "z")) for p in ("a", "b", "c")))
        journal.calls.clear()
        first = asyncio.ensure_future(host.execute("a", reserve("a")))
        await asyncio.sleep(0)
        second = asyncio.ensure_future(host.execute("b", reserve("b")))
        await asyncio.sleep(0)
        third = asyncio.ensure_future(host.execute("c", reserve("c")))
        outcomes = await asyncio.gather(first, second, third)
        assert all(o.rejection is None for o in outcomes)
        assert journal.calls == [3]
        assert [journal.highest_seq_nr(p) for p in ("a", "b", "c")] == [2, 2, 2]

    asyncio.run(scenario())


class GatedJournal(FaultyJournal):
    """Appends wait (in the host's worker thread) until ``release`` is set; ``entered`` tells one began."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.before_append = self._wait_for_release

    def _wait_for_release(self, request: AppendRequest) -> None:
        self.entered.set()
        self.release.wait(10)


def test_a_pools_version_for_anti_entropy_is_its_durable_one_and_none_where_it_does_not_run() -> None:
    async def scenario() -> None:
        journal = GatedJournal()
        host = await configured_host(journal)
        assert host.durable_versions(["p", "not-here"]) == [1, None]
        journal.entered.clear()
        journal.release.clear()
        writing = asyncio.ensure_future(host.execute("p", reserve()))
        await asyncio.to_thread(journal.entered.wait, 10)  # decided and applied in memory, append held
        assert host.durable_versions(["p"]) == [1]
        journal.release.set()
        await writing
        assert host.durable_versions(["p"]) == [2]

    asyncio.run(scenario())


def test_a_caller_is_answered_only_after_its_event_is_durable() -> None:
    async def scenario() -> None:
        journal = SlowJournal(delay=0.03)
        host = await configured_host(journal)

        async def timed() -> tuple[int, float]:
            outcome = await host.execute("p", reserve())
            return outcome.view.version, time.monotonic()

        for seq_nr, answered_at in await asyncio.gather(*(timed() for _ in range(20))):
            assert answered_at >= journal.durable_at[seq_nr]

    asyncio.run(scenario())


def test_execute_many_answers_each_command_in_order_and_an_error_is_an_answer() -> None:
    async def scenario() -> None:
        journal = SlowJournal(delay=0.01)
        host = await configured_host(journal, capacity=2)  # pool "p" runs; "q" and "r" start on demand
        answers = await host.execute_many(
            [
                ("p", reserve("p"), None, None),
                ("q", ConfigurePool(2, "z"), None, None),
                ("p", reserve("p", quantity=2), None, None),  # over the capacity left
                ("q", reserve("q"), None, None),
                ("r", reserve("r"), None, None),  # never configured
            ]
        )
        outcomes = [a for a in answers if not isinstance(a, Exception)]
        assert len(outcomes) == 5
        assert [o.rejection is None for o in outcomes] == [True, True, False, True, False]
        assert isinstance(outcomes[2].rejection, NotEnoughCapacity)
        assert (outcomes[0].view.reserved, outcomes[3].view.reserved) == (1, 1)
        journal.failing = True
        failed = await host.execute_many([("p", reserve("p"), None, "trace-p"), ("q", reserve("q"), None, "trace-q")])
        # Answered, not raised; the journal failed the append without saying whether it landed.
        assert all(isinstance(a, OutcomeUnknown) for a in failed), failed
        assert (journal.highest_seq_nr("p"), journal.highest_seq_nr("q")) == (2, 2)

    asyncio.run(scenario())


class ScriptedJournal(FaultyJournal):
    """Reads and appends wait as long as the next entry of ``read_delays`` / ``append_delays`` says (then
    0); appends fail while ``failing``."""

    def __init__(self) -> None:
        super().__init__()
        self.read_delays: list[float] = []
        self.append_delays: list[float] = []
        self.before_append = self._wait_as_scripted

    def read(self, pool_id: str, from_seq_nr: int = 1) -> Iterator[StoredEvent]:
        events = super().read(pool_id, from_seq_nr)
        time.sleep(self.read_delays.pop(0) if self.read_delays else 0)
        yield from events

    def _wait_as_scripted(self, request: AppendRequest) -> None:
        time.sleep(self.append_delays.pop(0) if self.append_delays else 0)


def test_a_read_reloading_the_pool_holds_its_writes_so_they_cannot_oversell() -> None:
    """After an outage the pool must reload. A read's reload that ends while a write is in flight must not
    replace the state under it: the write's reservation would vanish from memory (not from the journal),
    and the next reserve would be decided against too little."""

    async def scenario() -> None:
        journal = ScriptedJournal()
        host = PoolHost(journal)
        await host.execute("p", ConfigurePool(2, "z"))
        assert (await host.execute("p", reserve())).rejection is None
        journal.failing = True  # a write fails, and so does the re-read: the pool must reload later
        with pytest.raises(OutcomeUnknown):
            await host.execute("p", reserve())
        journal.failing = False
        journal.read_delays = [0.6]  # the read's reload is slow ...
        journal.append_delays = [0.9]  # ... and the next append too
        read = asyncio.ensure_future(host.view("p"))
        await asyncio.sleep(0.05)
        second = await host.execute("p", reserve())
        await read
        third = await host.execute("p", reserve())
        assert second.rejection is None and isinstance(third.rejection, NotEnoughCapacity)
        assert (await host.view("p")).reserved == 2
        assert journal.highest_seq_nr("p") == 3

    asyncio.run(scenario())


def test_reads_never_show_an_event_that_is_not_durable_yet() -> None:
    async def scenario() -> None:
        journal = SlowJournal(delay=0.2)
        host = await configured_host(journal)
        write = asyncio.ensure_future(host.execute("p", reserve(quantity=5)))
        await asyncio.sleep(0.05)  # the append is in flight now
        seen: PoolView = await host.view("p")
        assert seen.reserved == 0
        await write
        assert (await host.view("p")).reserved == 5

    asyncio.run(scenario())


def test_journal_outage_fails_fast_through_the_breaker_and_recovers() -> None:
    async def scenario() -> None:
        journal = SlowJournal(delay=0.01)
        host = await configured_host(journal, breaker_failure_threshold=2, breaker_reset_s=0.3)
        journal.failing = True
        with pytest.raises(OutcomeUnknown):  # the append failed: the journal did not say whether it landed
            await host.execute("p", reserve())
        with pytest.raises(Unavailable):  # the state could not be re-read: nothing was decided
            await host.execute("p", reserve())
        attempts = journal.append_attempts
        started = time.monotonic()
        for _ in range(20):
            with pytest.raises(Unavailable):
                await host.execute("p", reserve())
        assert journal.append_attempts == attempts  # the breaker answered without touching the journal
        assert time.monotonic() - started < 0.2
        journal.failing = False
        await asyncio.sleep(0.35)
        outcome = await host.execute("p", reserve())
        assert outcome.rejection is None
        assert outcome.view.reserved == 1  # nothing from the outage was taken

    asyncio.run(scenario())


def test_a_fenced_host_stops_serving() -> None:
    async def scenario() -> None:
        journal = InMemoryJournal()
        fenced_calls: list[bool] = []
        old = PoolHost(journal, on_fenced=lambda: fenced_calls.append(True))
        await old.execute("p", ConfigurePool(10, "z"))
        new = PoolHost(journal)
        await new.ensure_started("p")
        with pytest.raises(HostFenced):
            await old.execute("p", reserve())
        assert fenced_calls == [True]
        with pytest.raises(HostFenced):
            await old.view("p")
        assert (await new.execute("p", reserve())).view.reserved == 1
        assert journal.highest_seq_nr("p") == 2

    asyncio.run(scenario())


def test_publishers_get_views_and_events_and_cannot_break_writes() -> None:
    class Recorder:
        def __init__(self) -> None:
            self.views: list[PoolView] = []
            self.events: list[PersistedEvent] = []

        def publish_view(self, view: PoolView) -> None:
            self.views.append(view)

        def publish_events(self, events: Sequence[PersistedEvent]) -> None:
            self.events.extend(events)

    class Broken:
        def publish_view(self, view: PoolView) -> None:
            raise RuntimeError("read side down")

        def publish_events(self, events: Sequence[PersistedEvent]) -> None:
            raise RuntimeError("warehouse down")

    async def scenario() -> None:
        recorder = Recorder()
        host = PoolHost(InMemoryJournal(), views=recorder, events=recorder)
        await host.execute("p", ConfigurePool(10, "z"))
        await host.execute("p", reserve(quantity=3))
        assert [v.version for v in recorder.views] == [1, 2]
        assert [(e.seq_nr, e.reserved, e.capacity) for e in recorder.events] == [(1, 0, 10), (2, 3, 10)]
        broken = PoolHost(InMemoryJournal(), views=Broken(), events=Broken())
        await broken.execute("p", ConfigurePool(10, "z"))
        assert (await broken.execute("p", reserve())).rejection is None

    asyncio.run(scenario())


def test_recoveries_are_bounded() -> None:
    async def scenario() -> None:
        journal = SlowJournal(delay=0.0)
        creator = PoolHost(journal)
        await asyncio.gather(*(creator.execute(f"pool-{i}", ConfigurePool(1, "z")) for i in range(12)))
        journal.delay, journal.max_parallel_recoveries = 0.05, 0
        host = PoolHost(journal, WriteSideSettings(max_concurrent_recoveries=3))
        await asyncio.gather(*(host.ensure_started(f"pool-{i}") for i in range(12)))
        assert journal.max_parallel_recoveries == 3
        assert len(host.pool_ids) == 12

    asyncio.run(scenario())


def test_registered_pools_start_together_in_a_few_journal_calls_and_a_corrupt_one_fails_alone() -> None:
    class CountingJournal(InMemoryJournal):
        """Counts the calls a start makes; the stream of pool "bad" comes back with a gap."""

        def __init__(self) -> None:
            super().__init__()
            self.calls: Counter[str] = Counter()

        def highest_seq_nr(self, pool_id: str) -> int:
            self.calls["highest_seq_nr"] += 1
            return super().highest_seq_nr(pool_id)

        def claim_epochs(self, pool_ids: Sequence[str]) -> list[int]:
            self.calls["claim_epochs"] += 1
            return super().claim_epochs(pool_ids)

        def newest_snapshots(self, pool_ids: Sequence[str]) -> dict[str, SnapshotRecord]:
            self.calls["newest_snapshots"] += 1
            return super().newest_snapshots(pool_ids)

        def read_streams(self, from_seq_nrs: Mapping[str, int]) -> dict[str, list[StoredEvent]]:
            self.calls["read_streams"] += 1
            streams = super().read_streams(from_seq_nrs)
            if "bad" in streams:
                streams["bad"] = [e for e in streams["bad"] if e.seq_nr != 2]
            return streams

    async def scenario() -> None:
        journal = CountingJournal()
        creator = PoolHost(journal)
        pool_ids = [f"pool-{i}" for i in range(1200)]
        await asyncio.gather(*(creator.execute(p, ConfigurePool(5, "z")) for p in [*pool_ids, "bad"]))
        await creator.execute("bad", reserve("bad"))
        await creator.execute("bad", reserve("bad"))
        journal.calls.clear()

        host = PoolHost(journal)
        answers = await host.ensure_started_many([*pool_ids, "bad"])
        assert answers[:-1] == [1] * len(pool_ids)
        assert isinstance(answers[-1], Unavailable) and "expected seq_nr 2" in str(answers[-1])
        batches = -(-len(pool_ids) // 500)  # whole batches of pools started together
        assert journal.calls["highest_seq_nr"] == 0  # registered pools are not asked whether they exist
        assert journal.calls["newest_snapshots"] == journal.calls["read_streams"] == batches
        assert 1 <= journal.calls["claim_epochs"] <= batches
        assert sorted(host.pool_ids) == sorted(pool_ids)

        journal.calls.clear()
        assert (await host.ensure_started_many(pool_ids[:10])) == [1] * 10
        assert not journal.calls  # running pools cost nothing
        assert (await host.execute(pool_ids[0], reserve(pool_ids[0]))).view.reserved == 1
        with pytest.raises(HostFenced):  # the claims fenced the host that ran them before
            await creator.execute(pool_ids[1], reserve(pool_ids[1]))

    asyncio.run(scenario())


def test_an_unexpected_error_answers_the_callers_and_keeps_only_durable_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from capacity_service.adapters.codec import Codec

    async def scenario() -> None:
        journal = InMemoryJournal()
        host = await configured_host(journal, capacity=10)
        original = Codec.encode_event
        monkeypatch.setattr(Codec, "encode_event", lambda self, event: (_ for _ in ()).throw(RuntimeError("bug")))
        with pytest.raises(Unavailable):
            await host.execute("p", reserve(quantity=4))
        monkeypatch.setattr(Codec, "encode_event", original)
        outcome = await host.execute("p", reserve(quantity=10))
        assert outcome.rejection is None and outcome.view.reserved == 10  # the failed 4 was never taken

    asyncio.run(scenario())


class SlowSnapshotStore(InMemoryJournal):
    """Storing a snapshot blocks until ``stored`` is set (a big pool's snapshot on a slow store)."""

    def __init__(self) -> None:
        super().__init__()
        self.storing = threading.Event()
        self.stored = threading.Event()
        self.snapshot_seq_nrs: list[int] = []

    def save_snapshot(self, snapshot: SnapshotRecord, keep: int) -> None:
        self.storing.set()
        self.stored.wait(10)
        super().save_snapshot(snapshot, keep)
        self.snapshot_seq_nrs.append(snapshot.seq_nr)


def test_writes_go_on_while_a_snapshot_is_stored() -> None:
    async def scenario() -> None:
        journal = SlowSnapshotStore()
        host = PoolHost(journal, snapshots=SnapshotSettings(every_n_events=5))
        await host.execute("p", ConfigurePool(50, "z"))
        for _ in range(4):
            await host.execute("p", reserve())
        await asyncio.to_thread(journal.storing.wait, 5)  # the snapshot at seq_nr 5 is being stored
        outcome = await asyncio.wait_for(host.execute("p", reserve()), timeout=5)
        assert outcome.view.version == 6 and journal.snapshot_seq_nrs == []
        journal.stored.set()
        for _ in range(100):
            if journal.snapshot_seq_nrs:
                break
            await asyncio.sleep(0.01)
        assert journal.snapshot_seq_nrs == [5]
        recovered = PoolHost(journal)
        assert (await recovered.view("p")).reserved == 5

    asyncio.run(scenario())


def test_on_a_sqlite_file_concurrent_reserves_are_committed_inline_and_never_oversell(tmp_path: Path) -> None:
    """The committer appends inline when the journal can answer at once (a SQLite file no one else is
    writing): the same group commit, the same answers."""

    class CountingSqlJournal(SqlJournal):
        inline = threaded = 0

        def append_many_now(self, appends: Sequence[AppendRequest]) -> list[int | JournalError] | None:
            results = super().append_many_now(appends)
            self.inline += results is not None
            return results

        def append_many(self, appends: Sequence[AppendRequest]) -> list[int | JournalError]:
            self.threaded += 1
            return super().append_many(appends)

    async def scenario() -> None:
        journal = CountingSqlJournal(SqlJournalSettings(url=f"sqlite:///{tmp_path / 'journal.db'}"))
        host = await configured_host(journal, capacity=50)
        outcomes = await asyncio.gather(*(host.execute("p", reserve()) for _ in range(200)))
        assert len([o for o in outcomes if o.rejection is None]) == 50
        assert journal.highest_seq_nr("p") == 51
        assert journal.inline >= 2 and journal.threaded == 0
        journal.close()

    asyncio.run(scenario())


class ClaimCountingJournal(FaultyJournal):
    def __init__(self) -> None:
        super().__init__()
        self.claims: list[str] = []

    def claim_epoch(self, pool_id: str) -> int:
        self.claims.append(pool_id)
        return super().claim_epoch(pool_id)


def test_requests_for_unknown_pools_start_nothing_and_write_nothing() -> None:
    async def scenario() -> None:
        journal = ClaimCountingJournal()
        host = PoolHost(journal)
        forged = new_reservation_id("ghost")
        answers = await host.execute_many(
            [("ghost", reserve("ghost"), None, None), ("ghost", Release(forged), None, None)]
        )
        assert [type(a.rejection) for a in answers if isinstance(a, CommandOutcome)] == [
            PoolNotFoundRejection,
            ReservationNotFoundRejection,
        ]
        assert not (await host.view("ghost")).exists
        assert await host.reservation("ghost", forged) is None
        assert await host.ensure_started("ghost") == 0
        assert journal.claims == [] and host.pool_ids == [] and journal.heads() == {}
        # Configuring is what creates a pool (its first append claims the stream: no claim of its own);
        # from then on it is hosted and answers.
        await host.execute("ghost", ConfigurePool(5, "z"))
        assert journal.claims == [] and host.epoch_of("ghost") == FIRST_EPOCH
        assert (await host.execute("ghost", reserve("ghost", quantity=2))).view.remaining == 3
        assert [e.writer_epoch for e in journal.read("ghost")] == [FIRST_EPOCH, FIRST_EPOCH]

    asyncio.run(scenario())


def test_configuring_a_pool_that_exists_elsewhere_claims_and_reads_it_before_deciding() -> None:
    """A host that believes a configured pool new (it is not running here) finds its stream exists: it claims
    it (fencing the pool's earlier host), reads it and decides again, so nothing taken is forgotten."""

    async def scenario() -> None:
        journal = ClaimCountingJournal()
        before, after = PoolHost(journal), PoolHost(journal)
        await before.execute("p", ConfigurePool(5, "z"))
        assert (await before.execute("p", reserve("p", quantity=2))).view.remaining == 3
        raised = await after.execute("p", ConfigurePool(8, "z"))  # an append that finds the stream exists
        assert raised.rejection is None and raised.view.capacity == 8 and raised.view.remaining == 6
        assert journal.claims == ["p"] and after.epoch_of("p") == FIRST_EPOCH + 1
        with pytest.raises(HostFenced):
            await before.execute("p", reserve("p"))
        # The same again on a third host, with a command that writes nothing: still read before answering.
        third = PoolHost(journal)
        repeated = await third.execute("p", ConfigurePool(8, "z"))
        assert repeated.view.remaining == 6 and journal.claims == ["p", "p"]
        assert journal.highest_seq_nr("p") == (await third.view("p")).version

    asyncio.run(scenario())


def test_a_creation_whose_outcome_is_unknown_is_settled_by_a_claim_before_the_next_decision() -> None:
    async def scenario() -> None:
        journal = ClaimCountingJournal()
        journal.lost_replies = 1
        host = PoolHost(journal)
        with pytest.raises(OutcomeUnknown):
            await host.execute("p", ConfigurePool(5, "z"))
        # It landed; the writer may not assume it was its own: it claims, then reads, then decides.
        again = await host.execute("p", ConfigurePool(5, "z"))
        assert again.view.exists and again.view.capacity == 5
        assert journal.claims == ["p"] and host.epoch_of("p") == FIRST_EPOCH + 1
        assert (await host.execute("p", reserve("p"))).view.remaining == 4

    asyncio.run(scenario())


def test_a_command_past_its_deadline_is_not_decided_but_a_known_request_id_is_answered() -> None:
    async def scenario() -> None:
        journal = SlowJournal(delay=0.0)
        host = await configured_host(journal)
        kept = reserve()
        assert (await host.execute("p", kept, deadline=time.time() + 5)).rejection is None
        late = reserve()
        with pytest.raises(Unavailable, match="deadline passed"):
            await host.execute("p", late, deadline=time.time() - 0.01)
        assert journal.highest_seq_nr("p") == 2  # nothing written for it
        again = await host.execute("p", kept, deadline=time.time() - 0.01)  # settling an unknown outcome
        assert again.reservation is not None and again.reservation.request_id == kept.request_id
        assert again.events == () and (await host.view("p")).reserved == 1

    asyncio.run(scenario())


def test_a_full_pool_queue_refuses_at_once_and_takes_nothing() -> None:
    async def scenario() -> None:
        journal = SlowJournal(delay=0.2)
        host = await configured_host(journal, capacity=100, max_queued_per_pool=3)
        started = time.monotonic()
        answers = await asyncio.gather(*(host.execute("p", reserve()) for _ in range(10)), return_exceptions=True)
        refused = [a for a in answers if isinstance(a, Overloaded)]
        taken = [a for a in answers if isinstance(a, CommandOutcome)]
        # All ten arrive before the pool drains its queue: three wait, seven are refused without waiting.
        assert (len(taken), len(refused)) == (3, 7)
        assert time.monotonic() - started < 1.0
        assert (await host.view("p")).reserved == 3 and journal.highest_seq_nr("p") == 1 + 3

    asyncio.run(scenario())


def test_the_log_lines_of_a_write_name_the_requests_it_answers(caplog: pytest.LogCaptureFixture) -> None:
    """The request id the router carries with each command (HTTP's X-Request-ID) is in every log line the
    host writes about the batch: a failed append here, an operator's pause there."""
    from capacity_service.application import tracing
    from capacity_service.domain import PausePool

    tracing.install_log_stamp()

    async def scenario() -> None:
        journal = SlowJournal(delay=0.0)
        host = await configured_host(journal, capacity=5)
        with caplog.at_level(logging.INFO, logger="capacity_service"):
            journal.failing = True
            await host.execute_many([("p", reserve("p"), None, "trace-a"), ("p", reserve("p"), None, "trace-b")])
            journal.failing = False
            await host.execute_many([("p", PausePool("incident 9"), None, "trace-pause")])
        lines = [r.getMessage() for r in caplog.records]
        failed = [line for line in lines if "journal write failed" in line]
        assert failed and failed[0].startswith("request_id=trace-a,trace-b "), lines
        paused = [line for line in lines if "PoolPaused" in line]
        assert paused and paused[0].startswith("request_id=trace-pause "), lines

    asyncio.run(scenario())


class OneAtATimeJournal(InMemoryJournal):
    """Takes appends through ``append_soon`` (as Cassandra does) and holds each until the test lets it
    land, so a test sees which appends were under way together."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.started: list[str] = []
        self.held: list[tuple[AppendRequest, Future[int]]] = []

    def append_soon(self, request: AppendRequest) -> Future[int]:
        answer: Future[int] = Future()
        self.started.append(request.pool_id)
        if self.hold:
            self.held.append((request, answer))
        else:
            answer.set_result(self.append(*request))
        return answer

    def release(self) -> None:
        for request, answer in self.held:
            answer.set_result(self.append(*request))
        self.held.clear()


def test_with_append_soon_no_pools_append_waits_for_another_pools() -> None:
    async def scenario() -> None:
        journal = OneAtATimeJournal()
        host = PoolHost(journal)
        for pool_id in ("a", "b"):
            await host.execute(pool_id, ConfigurePool(10, "north"))
        journal.hold = True
        first = asyncio.ensure_future(host.execute("a", reserve("a")))
        await asyncio.sleep(0.05)
        # a's append is under way and not done: b's goes out meanwhile, not after it.
        assert journal.started[-1] == "a" and not first.done()
        second = asyncio.ensure_future(host.execute("b", reserve("b")))
        await asyncio.sleep(0.05)
        assert journal.started[-2:] == ["a", "b"]
        journal.hold = False
        journal.release()
        assert (await first).view.reserved == 1 and (await second).view.reserved == 1

    asyncio.run(scenario())
