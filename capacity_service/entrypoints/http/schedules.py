"""The schedules' calls (an admin key when keys are configured): put a template, whose pools the service then
creates or updates in the background, and read how that goes. Their routes are in ``routes.py``; the work is
the service layer's (``application/schedule_operations.py``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request, Response

from capacity_service.client import AsyncCapacityClient
from capacity_service.entrypoints.http.schemas import SCHEDULE_ID, PutScheduleRequest
from capacity_service.models import Schedule


def schedule_handlers(
    client: AsyncCapacityClient, parse: Callable[[bytes, str], PutScheduleRequest]
) -> list[Callable[..., Any]]:
    async def put_schedule(schedule_id: SCHEDULE_ID, request: Request, response: Response) -> Schedule:
        """Create or update the pools of the template, in the background: 202 when this put started an apply
        (GET the schedule for its progress), 200 when this very template is being applied already. Pools
        already as the template says are left unchanged; a pool whose capacity would go below what is held
        and active there is refused and left as it is (unless allow_capacity_below_reserved); a put while
        another template is being applied replaces it (docs/http-api.md, "Schedules")."""
        body = parse(await request.body(), request.headers.get("content-type", ""))
        schedule, started = await client.put_schedule(schedule_id, body.template())
        response.status_code = 202 if started else 200
        response.headers["Location"] = f"/v1/schedules/{schedule_id}"
        return schedule

    async def get_schedule(schedule_id: SCHEDULE_ID) -> Schedule:
        """The schedule and its latest apply: total, done, created, updated, unchanged, refused (with why)."""
        return await client.get_schedule(schedule_id)

    return [put_schedule, get_schedule]
