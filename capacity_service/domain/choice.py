"""A choice of slot: "any pool of this zone whose slot overlaps this window", instead of a named pool
(``application/choosing.py`` finds the candidates)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args

__all__ = ["PREFERENCES", "Preference", "SlotChoice"]

Preference = Literal["earliest", "most_remaining"]
PREFERENCES: tuple[Preference, ...] = get_args(Preference)


@dataclass(frozen=True, slots=True)
class SlotChoice:
    """Any pool of ``zone`` whose slot overlaps ``[slot_from, slot_to)`` (an open side, or a pool without
    a slot, matches everything) with ``quantity`` units left. ``prefer``: ``earliest`` (by slot start,
    pools without a slot last, then pool id) or ``most_remaining`` (most units left first, then as
    earliest)."""

    zone: str
    slot_from: datetime | None = None
    slot_to: datetime | None = None
    quantity: int = 1
    prefer: Preference = "earliest"
