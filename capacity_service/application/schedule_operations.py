"""The service layer's operations on schedules (decision 0010), part of ``CapacityOperations``: a template is
checked (and counted) before anything exists for it, then put to the schedule's stream, whose driver
applies it to the pools; a schedule is read from its writer."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol

from capacity_service.application.order_operations import raised
from capacity_service.application.schedule_writer import ScheduleOutcome
from capacity_service.domain import InvalidId
from capacity_service.domain.ids import check_schedule_id
from capacity_service.domain.schedule import (
    ApplySchedule,
    InvalidTemplate,
    ScheduleCommand,
    ScheduleView,
    check_template,
)
from capacity_service.errors import CapacityError, InvalidRequest, ScheduleNotFound
from capacity_service.models import Schedule, ScheduleTemplate


class ScheduleGateway(Protocol):
    """Where schedules' commands and reads go; errors as values."""

    async def execute_schedule(
        self, schedule_id: str, command: ScheduleCommand, deadline: float | None = None
    ) -> ScheduleOutcome | CapacityError: ...

    async def schedule_view(self, schedule_id: str) -> ScheduleView | CapacityError: ...


class ScheduleOperations:
    _gateway: ScheduleGateway
    _call_timeout_s: float

    async def put_schedule(self, schedule_id: str, template: ScheduleTemplate) -> tuple[Schedule, bool]:
        """Create or update the pools ``template`` describes, in the background; the schedule as its apply
        starts, and whether this put started one (False: this template was being applied already). A bad
        template, or one of more than 100,000 pools, is ``InvalidRequest`` and changes nothing."""
        _check_schedule_id(schedule_id)
        domain_template = template.template()
        try:
            total = check_template(domain_template)
        except InvalidTemplate as exc:
            raise InvalidRequest(str(exc)) from exc
        command = ApplySchedule(domain_template, total, datetime.now(UTC))
        outcome = raised(await self._gateway.execute_schedule(schedule_id, command, time.time() + self._call_timeout_s))
        return Schedule.of(outcome.view), bool(outcome.events)

    async def get_schedule(self, schedule_id: str) -> Schedule:
        """The schedule and how its latest apply stands (``ScheduleNotFound`` if it was never put)."""
        _check_schedule_id(schedule_id)
        view = raised(await self._gateway.schedule_view(schedule_id))
        if not view.exists:
            raise ScheduleNotFound(schedule_id)
        return Schedule.of(view)


def _check_schedule_id(schedule_id: str) -> None:
    try:
        check_schedule_id(schedule_id)
    except InvalidId as exc:
        raise InvalidRequest(str(exc)) from exc
