"""Choosing a slot: a reserve (or an order's line) may ask for "any pool of this zone whose slot overlaps
this window" instead of naming one. The candidates come from the replicated availability cache, best
first; the cache may lag a write by a little, so the service layer tries them in turn
(``CapacityOperations.reserve_chosen``), and only a pool's own decision counts.

Each attempt on a candidate is a reserve under its own request id, derived from the caller's and the
pool's (``attempt_request_id``): repeating the same request finds on a pool the reservation it took there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

from capacity_service.domain import PoolView
from capacity_service.domain.choice import Preference, SlotChoice

if TYPE_CHECKING:
    from capacity_service.application.operations import AvailabilitySource

# The longest request id a pool is given for an attempt (a caller's may be 128 characters, as may a pool id).
MAX_ATTEMPT_REQUEST_ID_LENGTH = 128


async def candidates(availability: AvailabilitySource, choice: SlotChoice, limit: int = 20) -> list[str]:
    """The pools ``choice`` may take, best first, at most ``limit``: those the cache lists for the zone and
    window with ``quantity`` left, not paused (a hint: the pool decides)."""
    views = await availability.query(choice.zone, choice.slot_from, choice.slot_to, choice.quantity)
    fitting = (v for v in views if v.zone == choice.zone and v.remaining >= choice.quantity and not v.paused)
    return [view.pool_id for view in ordered(fitting, choice.prefer)[:limit]]


def ordered(views: Iterable[PoolView], prefer: Preference) -> list[PoolView]:
    """``views`` in the order of the preference (ties broken by slot start, then pool id: a total order,
    so that the same views always give the same order)."""
    if prefer == "most_remaining":
        return sorted(views, key=lambda v: (-v.remaining, _start(v), v.pool_id))
    return sorted(views, key=lambda v: (_start(v), v.pool_id))


def _start(view: PoolView) -> float:
    return view.slot_start.timestamp() if view.slot_start is not None else float("inf")


def attempt_request_id(request_id: str, pool_id: str) -> str:
    """The request id of the attempt of ``request_id`` on ``pool_id``: ``<request_id>@<pool_id>`` (a pool
    id has no ``@``, so the two are told apart), or a digest of it when that is longer than
    ``MAX_ATTEMPT_REQUEST_ID_LENGTH``. The same for every repeat of the request."""
    plain = f"{request_id}@{pool_id}"
    if len(plain) <= MAX_ATTEMPT_REQUEST_ID_LENGTH:
        return plain
    return "@" + hashlib.sha256(plain.encode()).hexdigest()
