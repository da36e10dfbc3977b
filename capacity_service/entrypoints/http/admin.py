"""The operator's calls, under ``/v1/admin`` (an admin key when keys are configured): pause and resume a
pool or every live pool (the kill switch), reset a pool to an earlier state, list a pool's reservations,
check a pool against its journal. Each acts through the pool's single writer; pauses, resumes and resets
are events in the pool's journal. Their routes are in ``routes.py``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import Query

from capacity_service.client import MAX_LISTED_RESERVATIONS, AsyncCapacityClient
from capacity_service.entrypoints.http.schemas import POOL_ID, PauseRequest, ResetRequest
from capacity_service.models import Pool, PoolCheck, PoolsChanged, ReservationList

log = logging.getLogger(__name__)

Status = Literal["held", "active", "released", "expired"]


def admin_handlers(client: AsyncCapacityClient) -> list[Callable[..., Any]]:
    async def pause_pool(pool_id: POOL_ID, body: PauseRequest) -> Pool:
        """Stop the pool's writes (answered 503 `paused`, nothing taken) until resumed; reads and hold
        expiry go on. Pausing a paused pool changes nothing."""
        log.info("operator: pause pool %s (%s)", pool_id, body.reason)
        return await client.pause_pool(pool_id, body.reason)

    async def resume_pool(pool_id: POOL_ID) -> Pool:
        log.info("operator: resume pool %s", pool_id)
        return await client.resume_pool(pool_id)

    async def pause_all(body: PauseRequest) -> PoolsChanged:
        """The kill switch: pause every live pool (one created afterwards is not paused)."""
        log.info("operator: pause every live pool (%s)", body.reason)
        return await client.pause_all(body.reason)

    async def resume_all() -> PoolsChanged:
        log.info("operator: resume every live pool")
        return await client.resume_all()

    async def reservations(
        pool_id: POOL_ID,
        status: Status | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LISTED_RESERVATIONS)] = 1_000,
    ) -> ReservationList:
        """The pool's reservations, of one status when given, in the order they were made."""
        return ReservationList(reservations=await client.reservations(pool_id, status, limit))

    async def reset_pool(pool_id: POOL_ID, body: ResetRequest) -> Pool:
        """Set the pool back to its state after its event `to_seq_nr`, as one more event (history stays).
        Pause the pool first, check it after, then resume it."""
        log.info("operator: reset pool %s to seq_nr %d", pool_id, body.to_seq_nr)
        return await client.reset_pool(pool_id, body.to_seq_nr)

    async def check_pool(pool_id: POOL_ID) -> PoolCheck:
        """Replay the pool from its journal, every event from the first, and compare with its live state."""
        return await client.check_pool(pool_id)

    return [pause_pool, resume_pool, pause_all, resume_all, reservations, reset_pool, check_pool]
