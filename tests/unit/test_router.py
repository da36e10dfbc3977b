"""PoolRouter without Ray: its batching (the actor call replaced by a fake that records the batches), and
its choice between the same-node channel (a real one) and Ray (the Ray layer replaced by a fake)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any, TypeVar

import pytest

from capacity_service.application.hosting import HostFenced, HostFencedAfterWriting
from capacity_service.application.pool_writer import CommandOutcome
from capacity_service.domain import ConfigurePool, PoolCommand, PoolView, Release, Reserve, new_reservation_id
from capacity_service.domain import UnknownPool as PoolNotFoundRejection
from capacity_service.domain import UnknownReservation as ReservationNotFoundRejection
from capacity_service.domain.schedule import ApplySchedule, Template, ZoneTemplate
from capacity_service.errors import OutcomeUnknown, Overloaded, Unavailable
from capacity_service.runtime import router as router_module
from capacity_service.runtime._ray import ActorCalls, ActorGone
from capacity_service.runtime.actor_api import Call
from capacity_service.runtime.channel import ChannelServer
from capacity_service.runtime.router import PoolRouter
from capacity_service.settings import CassandraJournalSettings, HostingSettings, ServiceSettings

T = TypeVar("T")


class FakeActor:
    """Answers ``execute_many`` with each command's pool id, after ``delay``; a batch holding ``slow_pool``,
    or any batch while ``down``, only once ``gate`` opens."""

    def __init__(self, delay: float = 0.005, slow_pool: str | None = None, down: bool = False) -> None:
        self.delay = delay
        self.slow_pool = slow_pool
        self.down = down
        self.gate = asyncio.Event()
        self.batches: list[list[str]] = []
        self.in_flight = self.max_in_flight = 0

    async def call(self, name: str, request: Call[Any], deadline: float | None = None, sent: bool = False) -> Any:
        # Typed as PoolRouter._call_actor, which it replaces; its answers are the pools' ids (strings).
        assert request.method == "execute_many"
        (commands,) = request.args
        pools = [pool_id for pool_id, *_ in commands]
        self.batches.append(pools)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.down or self.slow_pool in pools:
                await self.gate.wait()
            await asyncio.sleep(self.delay)
            return pools
        finally:
            self.in_flight -= 1


class FakeCalls(ActorCalls):
    """Ray, as the router sees it, without Ray (the unit tier has none): every actor exists, and this
    process runs on "node-a", unless a test says otherwise; ``ask_with`` answers the actor calls."""

    def __init__(
        self,
        ask_with: Callable[..., Awaitable[Any]] | None = None,
        lookup: Callable[[str, str], Any] = lambda name, namespace: object(),
        ensure: Callable[..., Any] = lambda *args: object(),
        node_id: str = "node-a",
    ) -> None:
        self._ask_with, self._lookup, self._ensure, self._node_id = ask_with, lookup, ensure, node_id

    async def ask(self, handle: Any, call: Call[T], timeout: float) -> T:
        if self._ask_with is None:
            raise AssertionError(f"no actor call expected here: {call.method}")
        answer: T = await self._ask_with(handle, call.method, *call.args, timeout=timeout)
        return answer

    def lookup_actor(self, name: str, namespace: str) -> Any:
        return self._lookup(name, namespace)

    def ensure_actor(self, *args: Any) -> Any:
        return self._ensure(*args)

    def current_node_id(self) -> str:
        return self._node_id


def router_with(actor: FakeActor) -> PoolRouter:
    router = PoolRouter(ServiceSettings(hosting=HostingSettings(mode="sharded", shards=1)), calls=FakeCalls())
    router._call_actor = actor.call  # type: ignore[method-assign]
    return router


async def answer_of(router: PoolRouter, pool_id: str, command: PoolCommand) -> object:
    """``router.execute``'s answer, typed as what it is here: the fake actors answer with strings, where
    ``execute`` is typed to return a CommandOutcome or a CapacityError."""
    return await router.execute(pool_id, command)


def reserve(pool_id: str) -> Reserve:
    rid = new_reservation_id(pool_id)
    return Reserve(1, rid, rid)


def test_commands_to_one_actor_go_in_batches_one_call_at_a_time() -> None:
    async def scenario() -> None:
        actor = FakeActor()
        router = router_with(actor)
        pools = [f"p{i}" for i in range(100)]
        answers = await asyncio.gather(*(answer_of(router, p, reserve(p)) for p in pools))
        assert answers == pools  # each caller gets its own command's answer
        assert actor.max_in_flight == 1
        assert len(actor.batches) <= 3 and sorted(p for batch in actor.batches for p in batch) == sorted(pools)

    asyncio.run(scenario())


def test_a_slow_call_does_not_hold_back_the_other_pools() -> None:
    async def scenario() -> None:
        actor = FakeActor(slow_pool="recovering")
        router = router_with(actor)
        stuck = asyncio.ensure_future(answer_of(router, "recovering", reserve("recovering")))
        await asyncio.sleep(0.01)
        # The call for the recovering pool is still under way; the other pools' commands go meanwhile.
        others = await asyncio.wait_for(asyncio.gather(*(answer_of(router, p, reserve(p)) for p in ["a", "b"])), 2)
        assert others == ["a", "b"] and not stuck.done()
        actor.gate.set()
        assert await stuck == "recovering"
        assert actor.max_in_flight == 2

    asyncio.run(scenario())


def test_while_an_actor_is_down_at_most_four_calls_are_outstanding() -> None:
    async def scenario() -> None:
        actor = FakeActor(down=True)
        router = router_with(actor)
        waiting = []
        for i in range(20):  # commands keep arriving during the outage, each after the last call went slow
            waiting.append(asyncio.ensure_future(answer_of(router, f"p{i}", reserve(f"p{i}"))))
            await asyncio.sleep(0.06)
        assert actor.in_flight == 4
        actor.gate.set()
        assert await asyncio.wait_for(asyncio.gather(*waiting), 5) == [f"p{i}" for i in range(20)]
        assert actor.max_in_flight == 4

    asyncio.run(scenario())


class FakeRay:
    """Stands in for ``_ray`` under the router: every lookup returns a new handle object (as Ray does),
    after 0.1 s in a worker thread (creating an actor takes that); ``open_channel`` answers (0.1 s: the
    actor is starting) with a real channel server's address."""

    def __init__(self, server: ChannelServer, node_id: str = "node-a") -> None:
        self.server = server
        self.node_id = node_id
        self.lookups = 0
        self.opened = 0

    def ensure_actor(self, *args: Any) -> object:
        self.lookups += 1
        time.sleep(0.1)
        return object()

    async def ask(self, handle: object, method: str, *args: Any, timeout: float) -> Any:
        assert method == "open_channel"
        self.opened += 1
        await asyncio.sleep(0.1)
        return await self.server.start(self.node_id)


def test_a_burst_of_first_commands_to_a_fresh_actor_all_go_over_its_channel(monkeypatch: pytest.MonkeyPatch) -> None:
    async def execute_many(commands: list[tuple[str, Any]]) -> list[str]:
        await asyncio.sleep(0.005)
        return [pool_id for pool_id, *_ in commands]

    async def scenario() -> None:
        server = ChannelServer({"execute_many": execute_many})
        fake = FakeRay(server)
        router = PoolRouter(
            ServiceSettings(hosting=HostingSettings(mode="sharded", shards=1, call_timeout_s=5)),
            calls=FakeCalls(ask_with=fake.ask, ensure=fake.ensure_actor),
        )
        pools = [f"p{i}" for i in range(16)]
        # Calls slower than 50 ms each start another sender: up to four look the actor up at once, and each
        # lookup's handle supersedes the last.
        calls = []
        for pool_id in pools:  # arriving one after another, as requests do
            calls.append(asyncio.ensure_future(answer_of(router, pool_id, reserve(pool_id))))
            await asyncio.sleep(0.02)
        answers = await asyncio.wait_for(asyncio.gather(*calls), 3)
        assert answers == pools
        assert 1 < fake.lookups <= 4 and fake.opened == 1  # one channel, opened once, kept
        assert server.calls >= 1
        await router.aclose()
        await server.close()

    asyncio.run(scenario())


def test_an_actor_on_another_node_is_called_through_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        server = ChannelServer({})
        fake = FakeRay(server, node_id="node-b")
        ray_calls: list[str] = []

        async def ask(handle: object, method: str, *args: Any, timeout: float) -> Any:
            if method == "open_channel":
                return await fake.ask(handle, method, timeout=timeout)
            ray_calls.append(method)
            return [pool_id for pool_id, *_ in args[0]]

        router = PoolRouter(
            ServiceSettings(hosting=HostingSettings(mode="sharded", shards=1, call_timeout_s=5)),
            calls=FakeCalls(ask_with=ask, ensure=fake.ensure_actor),
        )
        assert await answer_of(router, "p1", reserve("p1")) == "p1"
        assert await answer_of(router, "p2", reserve("p2")) == "p2"
        assert ray_calls == ["execute_many", "execute_many"] and fake.opened == 1 and server.calls == 0
        await server.close()

    asyncio.run(scenario())


def test_a_channel_that_cannot_be_opened_in_time_costs_a_caller_no_more_than_its_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario() -> None:
        async def ask(handle: object, method: str, *args: Any, timeout: float) -> Any:
            await asyncio.sleep(5)  # the actor does not get to answer open_channel for a long while
            raise ActorGone("no answer")

        hosting = HostingSettings(mode="sharded", shards=1, call_timeout_s=1, answer_grace_s=0.2)
        router = PoolRouter(ServiceSettings(hosting=hosting), calls=FakeCalls(ask_with=ask))
        first = asyncio.ensure_future(router.execute("p1", reserve("p1")))  # starts the shared opening
        await asyncio.sleep(0.1)
        started = time.monotonic()
        with pytest.raises(Unavailable):
            await router.execute("p2", reserve("p2"))
        assert time.monotonic() - started < 2.5  # its own 1.2 s, not the opening's 5 s
        with pytest.raises(Unavailable):
            await first

    asyncio.run(scenario())


def test_after_a_failed_connect_calls_go_through_ray_and_the_channel_is_tried_again_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def execute_many(commands: list[tuple[str, Any]]) -> list[str]:
        return [pool_id for pool_id, *_ in commands]

    async def scenario() -> None:
        server = ChannelServer({"execute_many": execute_many})
        live = await server.start("node-a")
        addresses = [replace(live, path="\0capacity-service/gone"), live]  # the first: the actor restarted
        ray_calls: list[str] = []

        async def ask(handle: object, method: str, *args: Any, timeout: float) -> Any:
            if method == "open_channel":
                return addresses.pop(0)
            ray_calls.append(method)
            return await execute_many(*args)

        monkeypatch.setattr(router_module, "_CHANNEL_RETRY_S", 0.2)
        router = PoolRouter(
            ServiceSettings(hosting=HostingSettings(mode="sharded", shards=1, call_timeout_s=5)),
            calls=FakeCalls(ask_with=ask),
        )
        assert await answer_of(router, "p1", reserve("p1")) == "p1"
        assert await answer_of(router, "p2", reserve("p2")) == "p2"
        assert ray_calls == ["execute_many", "execute_many"] and server.calls == 0
        await asyncio.sleep(0.3)
        assert await answer_of(router, "p3", reserve("p3")) == "p3"
        assert len(ray_calls) == 2 and server.calls == 1
        await router.aclose()
        await server.close()

    asyncio.run(scenario())


def channel_router(servers: list[ChannelServer | None], timeout: float) -> PoolRouter:
    """A router whose actor lookups open a channel to the next of ``servers`` each time (incarnations);
    ``None``: that incarnation never answers."""
    incarnations = iter(servers)

    async def ask(handle: object, method: str, *args: Any, timeout: float) -> Any:
        assert method == "open_channel"
        server = next(incarnations)
        if server is None:
            await asyncio.sleep(60)
            raise ActorGone("never came up")
        return await server.start("node-a")

    hosting = HostingSettings(mode="sharded", shards=1, call_timeout_s=timeout, answer_grace_s=0.2)
    return PoolRouter(ServiceSettings(hosting=hosting), calls=FakeCalls(ask_with=ask))


def test_a_batch_on_an_open_channel_that_gets_no_answer_costs_one_call_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario() -> None:
        hung = asyncio.Event()

        async def execute_many(commands: list[tuple[str, Any]]) -> list[str]:
            if hung.is_set():
                await asyncio.sleep(60)
            return [pool_id for pool_id, *_ in commands]

        server = ChannelServer({"execute_many": execute_many})
        router = channel_router([server], timeout=1.0)
        assert await answer_of(router, "p1", reserve("p1")) == "p1"  # the channel is open now
        hung.set()
        started = time.monotonic()
        # The actor got the batch and said nothing: it may have decided it just before the deadline.
        with pytest.raises(OutcomeUnknown):
            await router.execute("p2", reserve("p2"))
        assert time.monotonic() - started < 1.7  # the retry had only what was left of the 1 s + 0.2 s
        await router.aclose()
        await server.close()

    asyncio.run(scenario())


def test_a_fenced_answer_on_an_open_channel_sends_the_batch_to_the_new_incarnation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario() -> None:
        zombie = asyncio.Event()

        async def old_execute_many(commands: list[tuple[str, Any]]) -> list[Any]:
            if zombie.is_set():
                return [HostFenced("moved") for _ in commands]
            return [f"old:{pool_id}" for pool_id, *_ in commands]

        async def new_execute_many(commands: list[tuple[str, Any]]) -> list[str]:
            return [f"new:{pool_id}" for pool_id, *_ in commands]

        old = ChannelServer({"execute_many": old_execute_many})
        new = ChannelServer({"execute_many": new_execute_many})
        router = channel_router([old, new], timeout=5.0)
        assert await answer_of(router, "p1", reserve("p1")) == "old:p1"
        zombie.set()
        assert await answer_of(router, "p2", reserve("p2")) == "new:p2"
        assert await answer_of(router, "p3", reserve("p3")) == "new:p3"
        assert (old.calls, new.calls) == (2, 2)
        await router.aclose()
        await old.close()
        await new.close()

    asyncio.run(scenario())


def fencing_server(fenced: asyncio.Event, answer: type[HostFenced]) -> ChannelServer:
    """A shard actor's channel that answers each command with its pool id, and once ``fenced`` is set
    with ``answer`` ("fenced", before or after writing)."""

    async def execute_many(commands: list[tuple[str, Any]]) -> list[Any]:
        return [answer("moved") if fenced.is_set() else pool_id for pool_id, *_ in commands]

    return ChannelServer({"execute_many": execute_many})


def test_a_batch_retrying_after_its_channel_failed_fast_does_not_hold_back_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def scenario() -> None:
        fenced = asyncio.Event()
        server = fencing_server(fenced, HostFenced)
        router = channel_router([server, None], timeout=1.0)  # the new incarnation never comes up
        assert await answer_of(router, "p0", reserve("p0")) == "p0"  # the channel is open now
        fenced.set()
        first = asyncio.ensure_future(router.execute("p1", reserve("p1")))
        await asyncio.sleep(0.3)  # p1's channel answered "fenced" at once; its retry waits for the actor
        started = time.monotonic()
        with pytest.raises(Unavailable):
            await router.execute("p2", reserve("p2"))
        assert time.monotonic() - started < 1.7  # its own 1.2 s, not after p1's retry gave up
        with pytest.raises(Unavailable):
            await first
        await router.aclose()
        await server.close()

    asyncio.run(scenario())


def test_a_batch_fenced_by_its_own_append_is_an_unknown_outcome_if_no_incarnation_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On Cassandra an append is written, then the writer's lease read: a host fenced by that read may have
    written the batch, so a caller the new incarnation never answers is told 504 (repeat), never 503
    (nothing taken)."""

    async def scenario() -> None:
        fenced = asyncio.Event()
        server = fencing_server(fenced, HostFencedAfterWriting)
        router = channel_router([server, None], timeout=1.0)  # the new incarnation never comes up
        assert await answer_of(router, "p0", reserve("p0")) == "p0"
        fenced.set()
        with pytest.raises(OutcomeUnknown):
            await router.execute("p1", reserve("p1"))
        await router.aclose()
        await server.close()

    asyncio.run(scenario())


def test_anti_entropy_pulls_only_the_views_the_caller_is_behind_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """Actors report their pools' versions first; only views the caller lacks, holds older, or whose pool
    must start first travel. A pool the caller is current (or ahead) on counts as answered."""
    versions: dict[str, int | None] = {f"p{i}": 5 for i in range(10)}
    versions["p3"] = None  # not running in its actor: only a view can tell
    held = {p: 5 for p in versions} | {"p1": 4, "p7": 6}  # behind on p1; ahead on p7 (a push crossed)
    del held["p2"]  # never seen
    asked_for_views: list[str] = []
    gone: set[object] = set()

    async def ask(handle: object, method: str, pools: list[str], timeout: float) -> list[Any]:
        if handle in gone:
            raise ActorGone("down")
        if method == "versions":
            return [versions[p] for p in pools]
        assert method == "views"
        asked_for_views.extend(pools)
        return [PoolView(p, True, "z", None, None, 10, 0, 10, versions[p] or 5) for p in pools]

    handles: dict[str, object] = {}
    router = PoolRouter(
        ServiceSettings(hosting=HostingSettings(mode="sharded", shards=2)),
        calls=FakeCalls(ask_with=ask, lookup=lambda name, namespace: handles.setdefault(name, object())),
    )

    async def scenario() -> None:
        views, answered = await router.views(list(versions), held=lambda p: held.get(p, -1))
        assert sorted(v.pool_id for v in views) == sorted(asked_for_views) == ["p1", "p2", "p3"]
        assert answered == 10
        asked_for_views.clear()
        views, answered = await router.views(list(versions))  # no versions held: the first pull, every view
        assert sorted(v.pool_id for v in views) == sorted(asked_for_views) == sorted(versions)
        assert answered == 10
        gone.add(handles[router.host_of("p0")])  # one of the two actors is down
        router._handles.clear()
        views, answered = await router.views(list(versions), held=lambda p: held.get(p, -1))
        down = [p for p in versions if router.host_of(p) == router.host_of("p0")]
        assert 0 < len(down) < 10 and answered == 10 - len(down)

    asyncio.run(scenario())


def test_requests_for_unknown_pools_start_no_actor(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pool whose actor does not run and which has no events: reads, reserves and releases are answered
    by the router, and no actor is created; configuring it (or a pool with events) goes to its actor."""

    async def scenario() -> None:
        created: list[str] = []
        known = {"real"}
        router = PoolRouter(
            ServiceSettings(hosting=HostingSettings(mode="actor_per_pool")),
            known.__contains__,
            FakeCalls(lookup=lambda name, namespace: None, ensure=lambda _cls, name, *args: created.append(name)),
        )
        calls: list[str] = []

        async def call_actor(name: str, request: Call[Any], deadline: float | None = None, sent: bool = False) -> Any:
            calls.append(name)
            return ["sent"]

        router._call_actor = call_actor  # type: ignore[method-assign]
        forged = new_reservation_id("ghost")
        outcome = await router.execute("ghost", reserve("ghost"))
        assert isinstance(outcome, CommandOutcome) and isinstance(outcome.rejection, PoolNotFoundRejection)
        released = await router.execute("ghost", Release(forged))
        assert isinstance(released, CommandOutcome)
        assert isinstance(released.rejection, ReservationNotFoundRejection)
        view = await router.view("ghost")
        assert isinstance(view, PoolView) and not view.exists
        assert await router.reservation("ghost", forged) is None
        assert calls == [] and created == []
        assert await answer_of(router, "ghost", ConfigurePool(1, "z")) == "sent"
        assert await answer_of(router, "real", reserve("real")) == "sent"
        assert calls == ["pool:ghost", "pool:real"]

    asyncio.run(scenario())


def test_schedules_under_an_actor_per_pool_are_503_and_start_no_actor() -> None:
    async def scenario() -> None:
        created: list[str] = []
        router = PoolRouter(
            ServiceSettings(hosting=HostingSettings(mode="actor_per_pool")),
            lambda _: False,
            FakeCalls(lookup=lambda name, namespace: None, ensure=lambda _cls, name, *args: created.append(name)),
        )
        template = Template((ZoneTemplate("north", 1),), ("08:00",), 60, date(2026, 12, 1), date(2026, 12, 1))
        put = await router.execute_schedule("december", ApplySchedule(template, 1, datetime.now(UTC)))
        shown = await router.schedule_view("december")
        for answer in (put, shown):
            assert isinstance(answer, Unavailable) and "sharded hosting" in str(answer)
        assert created == []

    asyncio.run(scenario())


def test_commands_in_flight_over_the_bound_are_refused_at_once() -> None:
    async def scenario() -> None:
        actor = FakeActor(down=True)
        router = PoolRouter(
            ServiceSettings(hosting=HostingSettings(mode="sharded", shards=1, max_commands_in_flight=3)),
            calls=FakeCalls(),
        )
        router._call_actor = actor.call  # type: ignore[method-assign]
        waiting = [asyncio.ensure_future(answer_of(router, f"p{i}", reserve(f"p{i}"))) for i in range(3)]
        await asyncio.sleep(0.05)
        refused = await asyncio.wait_for(router.execute("p9", reserve("p9")), 0.5)
        assert isinstance(refused, Overloaded) and "p9" not in [p for batch in actor.batches for p in batch]
        actor.gate.set()
        assert await asyncio.gather(*waiting) == ["p0", "p1", "p2"]
        assert await answer_of(router, "p9", reserve("p9")) == "p9"  # room again

    asyncio.run(scenario())


def test_a_command_that_never_left_is_503_and_one_that_went_unanswered_is_504(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        hosting = HostingSettings(
            mode="sharded", shards=1, call_timeout_s=0.3, answer_grace_s=0.2, same_node_channel=False
        )

        async def hung_ask(handle: object, method: str, *args: Any, timeout: float) -> Any:
            await asyncio.sleep(timeout)  # the actor got the call and says nothing
            raise TimeoutError

        def not_found(*args: Any) -> object:
            raise ActorGone("no such actor yet")

        router = PoolRouter(ServiceSettings(hosting=hosting), calls=FakeCalls(ask_with=hung_ask))
        started = time.monotonic()
        with pytest.raises(OutcomeUnknown):
            await router.execute("p1", reserve("p1"))
        assert 0.4 < time.monotonic() - started < 1.0  # the deadline and the grace, no longer
        unreachable = PoolRouter(ServiceSettings(hosting=hosting), calls=FakeCalls(ask_with=hung_ask, ensure=not_found))
        with pytest.raises(Unavailable):
            await unreachable.execute("p2", reserve("p2"))

    asyncio.run(scenario())


def test_an_actor_call_that_fails_oddly_is_504_never_a_raw_error() -> None:
    """Whatever fails on the way (here the Ray layer raises something unexpected), the caller gets an answer
    of the contract: the batch went out, so it may have been decided, and only the request id can settle it."""

    async def scenario() -> None:
        hosting = HostingSettings(mode="sharded", shards=1, call_timeout_s=5, same_node_channel=False)

        async def odd_ask(handle: object, method: str, *args: Any, timeout: float) -> Any:
            raise RuntimeError("a Ray internal error")

        router = PoolRouter(ServiceSettings(hosting=hosting), calls=FakeCalls(ask_with=odd_ask))
        started = time.monotonic()
        answer = await router.execute("p1", reserve("p1"))
        assert isinstance(answer, OutcomeUnknown) and "RuntimeError" in str(answer)
        assert time.monotonic() - started < 1.0

    asyncio.run(scenario())


def test_on_cassandra_commands_do_not_wait_for_the_batch_under_way() -> None:
    """Each pool's append on Cassandra is its own Paxos round: a command arriving while a batch's rounds
    run goes out at once in a batch of its own (up to 8 under way), instead of after that batch."""

    async def scenario() -> None:
        actor = FakeActor(delay=0.03)
        settings = ServiceSettings(
            journal=CassandraJournalSettings(), hosting=HostingSettings(mode="sharded", shards=1)
        )
        router = PoolRouter(settings, calls=FakeCalls())
        router._call_actor = actor.call  # type: ignore[method-assign]
        pools = [f"p{i}" for i in range(16)]
        waiting = []
        for pool in pools:  # one command every 2 ms: each arrives while earlier batches are under way
            waiting.append(asyncio.ensure_future(answer_of(router, pool, reserve(pool))))
            await asyncio.sleep(0.002)
        assert await asyncio.gather(*waiting) == pools
        assert actor.max_in_flight == 8

    asyncio.run(scenario())
