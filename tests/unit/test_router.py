"""PoolRouter's batching without Ray: the actor call is replaced by a fake that records the batches."""

from __future__ import annotations

import asyncio
from typing import Any

from capacity_service.cluster.router import PoolRouter
from capacity_service.domain import Reserve, new_reservation_id
from capacity_service.settings import HostingSettings, ServiceSettings


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

    async def call(self, name: str, method: str, commands: list[tuple[str, Any]]) -> list[str]:
        assert method == "execute_many"
        pools = [pool_id for pool_id, _ in commands]
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


def router_with(actor: FakeActor) -> PoolRouter:
    router = PoolRouter(ServiceSettings(hosting=HostingSettings(mode="sharded", shards=1)))
    router._call_actor = actor.call  # type: ignore[method-assign]
    return router


def reserve(pool_id: str) -> Reserve:
    rid = new_reservation_id(pool_id)
    return Reserve(1, rid, rid)


def test_commands_to_one_actor_go_in_batches_one_call_at_a_time() -> None:
    async def scenario() -> None:
        actor = FakeActor()
        router = router_with(actor)
        pools = [f"p{i}" for i in range(100)]
        answers = await asyncio.gather(*(router.execute(p, reserve(p)) for p in pools))
        assert answers == pools  # each caller gets its own command's answer
        assert actor.max_in_flight == 1
        assert len(actor.batches) <= 3 and sorted(p for batch in actor.batches for p in batch) == sorted(pools)

    asyncio.run(scenario())


def test_a_slow_call_does_not_hold_back_the_other_pools() -> None:
    async def scenario() -> None:
        actor = FakeActor(slow_pool="recovering")
        router = router_with(actor)
        stuck = asyncio.ensure_future(router.execute("recovering", reserve("recovering")))
        await asyncio.sleep(0.01)
        # The call for the recovering pool is still under way; the other pools' commands go meanwhile.
        others = await asyncio.wait_for(asyncio.gather(*(router.execute(p, reserve(p)) for p in ["a", "b"])), 2)
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
            waiting.append(asyncio.ensure_future(router.execute(f"p{i}", reserve(f"p{i}"))))
            await asyncio.sleep(0.06)
        assert actor.in_flight == 4
        actor.gate.set()
        assert await asyncio.wait_for(asyncio.gather(*waiting), 5) == [f"p{i}" for i in range(20)]
        assert actor.max_in_flight == 4

    asyncio.run(scenario())
