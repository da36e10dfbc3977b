import asyncio
from collections.abc import Mapping

from capacity_service.runtime.watchdog import Watchdog


def test_pools_of_one_host_are_pinged_together_in_bounded_groups() -> None:
    pools = [f"pool-{i}" for i in range(10)]
    pings: list[list[str]] = []

    async def ping(group: list[str]) -> Mapping[str, str]:
        pings.append(group)
        return {}

    watchdog = Watchdog(lambda: pools, ping, concurrency=2, host_of=lambda p: f"shard-{int(p[5:]) % 2}", max_group=3)
    report = asyncio.run(watchdog.sweep())
    assert report.healthy and report.alive == 10
    assert sorted(p for group in pings for p in group) == sorted(pools)  # every pool, once
    assert all(len(group) <= 3 for group in pings)
    assert all(len({int(p[5:]) % 2 for p in group}) == 1 for group in pings)  # one host per call
    assert len(pings) == 4  # 5 pools per shard: 3 + 2, twice


def test_failures_are_reported_per_pool_and_a_failed_call_fails_its_group() -> None:
    async def ping(group: list[str]) -> Mapping[str, str]:
        if "b1" in group:
            raise TimeoutError("host b did not answer")
        return {"a2": "cannot recover"} if "a2" in group else {}

    watchdog = Watchdog(lambda: ["a1", "a2", "b1", "b2"], ping, concurrency=4, host_of=lambda p: p[0])
    report = asyncio.run(watchdog.sweep())
    assert report.alive == 1
    assert report.failed == {
        "a2": "cannot recover",
        "b1": "TimeoutError: host b did not answer",
        "b2": "TimeoutError: host b did not answer",
    }
    assert watchdog.last_report is report


def test_at_most_concurrency_calls_run_at_once() -> None:
    running, most = 0, 0

    async def ping(group: list[str]) -> Mapping[str, str]:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.01)
        running -= 1
        return {}

    report = asyncio.run(Watchdog(lambda: [str(i) for i in range(20)], ping, concurrency=3).sweep())
    assert report.alive == 20 and most == 3


def test_an_unreadable_registry_is_reported_not_raised() -> None:
    def registry() -> list[str]:
        raise ConnectionError("journal down")

    async def ping(group: list[str]) -> Mapping[str, str]:
        raise AssertionError("nothing to ping")

    report = asyncio.run(Watchdog(registry, ping, concurrency=1).sweep())
    assert report.journal_error == "ConnectionError: journal down" and not report.healthy
