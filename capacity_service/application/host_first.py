"""Commands an order's driver (and a schedule's) sends to its pools: straight to the pool when it runs in
this process's host, else through the router (``runtime``) to the actor that hosts it."""

from __future__ import annotations

import asyncio

from capacity_service.application.order_driver import CommandSender
from capacity_service.application.pool_host import AddressedCommand, PoolHost
from capacity_service.application.pool_writer import CommandOutcome
from capacity_service.domain import ConfigurePool, PoolCommand, Reservation
from capacity_service.errors import CapacityError


class HostFirstSender:
    def __init__(self, host: PoolHost, elsewhere: CommandSender) -> None:
        self._host = host
        self._elsewhere = elsewhere

    async def execute(
        self, pool_id: str, command: PoolCommand, deadline: float | None = None
    ) -> CommandOutcome | CapacityError:
        if self._host.durable_view(pool_id) is None:  # not running here: its host may be another actor
            return await self._elsewhere.execute(pool_id, command, deadline)
        try:
            return await self._host.execute(pool_id, command, deadline)
        except CapacityError as exc:
            return exc

    async def reservation(self, pool_id: str, reservation_id: str) -> Reservation | CapacityError | None:
        if self._host.durable_view(pool_id) is None:
            return await self._elsewhere.reservation(pool_id, reservation_id)
        try:
            return await self._host.reservation(pool_id, reservation_id)
        except CapacityError as exc:
            return exc


class HostFirstConfigurer:
    """A schedule's batches of configure commands, by the same rule: those of pools running in this
    process's host in one call to it, the others through the router, which batches them per actor
    (``PoolRouter``). A pool not running here is never started here: were this process a zombie (its actor
    restarted elsewhere), starting one would claim it from its current host."""

    def __init__(self, host: PoolHost, elsewhere: CommandSender) -> None:
        self._host = host
        self._elsewhere = elsewhere

    async def configure_many(
        self, commands: list[tuple[str, ConfigurePool]], deadline: float
    ) -> list[CommandOutcome | CapacityError]:
        here = [self._host.durable_view(pool_id) is not None for pool_id, _ in commands]
        local: list[AddressedCommand] = [(p, c, deadline, None) for (p, c), h in zip(commands, here, strict=True) if h]
        away = [self._elsewhere.execute(p, c, deadline) for (p, c), h in zip(commands, here, strict=True) if not h]
        from_here, from_away = await asyncio.gather(self._host.execute_many(local), asyncio.gather(*away))
        answers_here, answers_away = iter(from_here), iter(from_away)
        return [next(answers_here) if h else next(answers_away) for h in here]
