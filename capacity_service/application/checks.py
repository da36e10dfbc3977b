"""Checks of what callers send that more than one operation makes (names that reach logs, the warehouse
and PostgreSQL; a choice of slot)."""

from __future__ import annotations

import re

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
