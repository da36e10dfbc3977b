"""The waitlists' calls (join, read, leave) and extending a hold. Their routes are in ``routes.py``; the work
is the service layer's (``application/operations.py``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from capacity_service.client import AsyncCapacityClient
from capacity_service.entrypoints.http.schemas import (
    POOL_ID,
    RESERVATION_ID,
    WAITLIST_ENTRY_ID,
    ExtendHoldRequest,
    JoinWaitlistRequest,
)
from capacity_service.models import ReservationInfo, WaitlistPlace


def waitlist_handlers(client: AsyncCapacityClient) -> list[Callable[..., Any]]:
    async def join_waitlist(pool_id: POOL_ID, body: JoinWaitlistRequest) -> WaitlistPlace:
        """Wait for units of the pool: 202 with the entry's place. When units come free, the pool holds them
        for the first entries waiting that fit, in order (an entry too large for what came free is skipped
        and keeps its place); the entry then shows the reservation to confirm. Idempotent on request_id."""
        return await client.join_waitlist(pool_id, body.quantity, body.request_id, body.hold_seconds)

    async def get_waitlist_entry(pool_id: POOL_ID, entry_id: WAITLIST_ENTRY_ID) -> WaitlistPlace:
        return await client.get_waitlist_entry(pool_id, entry_id)

    async def leave_waitlist(pool_id: POOL_ID, entry_id: WAITLIST_ENTRY_ID) -> WaitlistPlace:
        """Stop waiting; leaving twice answers 200 both times. An entry already offered its hold is answered
        as it is (release the hold as any reservation)."""
        return await client.leave_waitlist(pool_id, entry_id)

    async def extend_hold(reservation_id: RESERVATION_ID, body: ExtendHoldRequest) -> ReservationInfo:
        """End the hold hold_seconds from now, up to the pool's max_hold_seconds; never sooner than it ends
        already (then nothing changes). 409 for an expired, released or active reservation."""
        return await client.extend_hold(reservation_id, body.hold_seconds)

    return [join_waitlist, get_waitlist_entry, leave_waitlist, extend_hold]
