"""Checks of what callers send that more than one operation makes (names that reach logs, the warehouse
and PostgreSQL; a choice of slot)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from capacity_service.domain.choice import PREFERENCES, SlotChoice
from capacity_service.errors import InvalidRequest

MAX_ZONE_LENGTH = 128
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


def printable(text: str) -> bool:
    """No control characters (what the HTTP schema's pattern allows): these names reach logs and the
    warehouse, and PostgreSQL's text cannot hold a NUL."""
    return _CONTROL_CHARACTER.search(text) is None


def check_choice(choice: SlotChoice) -> None:
    if not (1 <= len(choice.zone) <= MAX_ZONE_LENGTH and printable(choice.zone)):
        raise InvalidRequest(f"zone must be 1-{MAX_ZONE_LENGTH} printable characters")
    if choice.quantity < 1:
        raise InvalidRequest("quantity must be >= 1")
    if choice.prefer not in PREFERENCES:
        raise InvalidRequest(f"prefer must be one of {list(PREFERENCES)}")
    for moment in (choice.slot_from, choice.slot_to):
        if moment is not None:
            in_utc(moment)


def in_utc(moment: datetime) -> datetime:
    """``moment`` in UTC (UTC when it has no offset); one whose offset takes it outside the years datetime
    can hold (0001-01-01T00:00:00+05:00) is a 422, not a comparison that overflows later."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise InvalidRequest(f"{moment.isoformat()} is out of the range of dates") from None
