"""The orders' calls: place (on the fast lane, as hot as a reserve), read, confirm, cancel. Their routes
are in ``routes.py``; the work is the service layer's (``application/order_operations.py``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from capacity_service.client import AsyncCapacityClient
from capacity_service.entrypoints.http.schemas import ORDER_ID, OrderLineBody, PlaceOrderRequest, choice_of
from capacity_service.models import Order, OrderLineRequest


async def place_order(client: AsyncCapacityClient, body: PlaceOrderRequest) -> Order:
    lines = [
        OrderLineRequest(pool_id=line.pool_id, quantity=line.quantity)
        if isinstance(line, OrderLineBody)
        else OrderLineRequest(choose=choice_of(line.choose))
        for line in body.lines
    ]
    return await client.place_order(lines, body.order_id, body.hold_seconds)


def order_handlers(client: AsyncCapacityClient) -> list[Callable[..., Any]]:
    async def get_order(order_id: ORDER_ID) -> Order:
        return await client.get_order(order_id)

    async def confirm_order(order_id: ORDER_ID) -> Order:
        """Confirm every line's hold: the order is then confirmed. 409 hold_expired when a hold expired
        first (the order is cancelled: nothing of it stays taken); confirming twice answers 200 both times."""
        return await client.confirm_order(order_id)

    async def cancel_order(order_id: ORDER_ID) -> Order:
        """Give every line back: the order is cancelled (failed, if it never was taken). Cancelling twice
        answers 200 both times."""
        return await client.cancel_order(order_id)

    return [get_order, confirm_order, cancel_order]
