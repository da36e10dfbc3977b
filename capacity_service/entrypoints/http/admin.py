"""The operator's calls, under ``/v1/admin`` (an admin key when keys are configured): pause and resume a
pool or every live pool (the kill switch), reset a pool to an earlier state, list a pool's reservations,
check a pool against its journal, read a pool's history (its state at a past moment), list the zones.
Each change acts through the pool's single writer; pauses, resumes and resets are events in the pool's
journal. Their routes are in ``routes.py``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Query
from pydantic import BeforeValidator

from capacity_service.application.operations import MAX_HISTORY_LIMIT, MAX_LISTED_ZONES
from capacity_service.client import MAX_LISTED_RESERVATIONS, AsyncCapacityClient
from capacity_service.entrypoints.http.schemas import POOL_ID, PRINTABLE, PauseRequest, ResetRequest
from capacity_service.models import Pool, PoolCheck, PoolHistory, PoolsChanged, ReservationList, ZoneList

log = logging.getLogger(__name__)

Status = Literal["held", "active", "released", "expired"]


def _date_time(value: object) -> object:
    # A date-time in a query is a string either way: one without a date and a time is no RFC 3339 date-time
    # (pydantic would take a number as a Unix time, which the contract never does).
    if isinstance(value, str) and not (len(value) > 10 and value[10] in "Tt "):
        raise ValueError("an RFC 3339 date-time is required, e.g. 2026-12-01T08:00:00Z")
    return value


Moment = Annotated[
    datetime | None,
    Query(description="an RFC 3339 date-time (UTC when it has no offset); left out: now"),
    BeforeValidator(_date_time),
]


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

    async def pool_history(
        pool_id: POOL_ID,
        at: Moment = None,
        before: Annotated[int | None, Query(ge=1, description="list the events before this seq_nr")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_HISTORY_LIMIT)] = 50,
    ) -> PoolHistory:
        """The pool as its journal has it at `at` (left out: now), replayed by the pool's own code: the pool,
        its holds, reservations and waitlist then, and its events up to then, newest first, each with the
        time the journal recorded it (at most `limit` of each; page back with `before`). Reads the journal
        from the pool's first event to `at`."""
        return await client.pool_history(pool_id, at, before, limit)

    async def zones(
        after: Annotated[str | None, Query(min_length=1, max_length=128, pattern=PRINTABLE)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LISTED_ZONES)] = 100,
    ) -> ZoneList:
        """The zones with pools on sale, in the order of their names, from the replicated cache: each with its
        pools, their units left, and how many are sold out and paused. Page on with `after` = `next_after`."""
        return await client.zones(after, limit)

    return [pause_pool, resume_pool, pause_all, resume_all, reservations, reset_pool, check_pool, pool_history, zones]
