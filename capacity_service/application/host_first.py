"""Commands an order's driver sends to its pools: straight to the pool when it runs in this process's host,
else through the router (``runtime``) to the actor that hosts it."""

from __future__ import annotations

from capacity_service.application.order_driver import CommandSender
from capacity_service.application.pool_host import PoolHost
from capacity_service.application.pool_writer import CommandOutcome
from capacity_service.domain import PoolCommand, Reservation
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
