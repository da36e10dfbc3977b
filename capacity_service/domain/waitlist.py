"""A pool's waitlist: entries waiting, in the order they joined, for units of the pool to come free.

When units come free (a release, an expiry, capacity raised, a pool resumed), the pool offers them to the
waiting entries in join order, each as a hold of the entry's ``hold_seconds``. The rule for an entry too
large for what is free: it is skipped and keeps its place, and smaller entries behind it are offered (so
freed units never sit idle while someone waiting could use them; a large entry is served when enough comes
free at once). After every decision of an open pool, no waiting entry fits in what remains.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

# Defaults of the pool settings that bound waiting and holds, for pools configured without them (and for
# every pool configured before they existed).
DEFAULT_MAX_HOLD_SECONDS = 86_400  # a day: what a reserve's hold may be, so extending changes no old limit
DEFAULT_WAITLIST_LIMIT = 10_000
# How long an offer is held when the entry named no ``hold_seconds``.
DEFAULT_OFFER_HOLD_SECONDS = 600
# The bounds of those settings.
LONGEST_HOLD_SECONDS = 7 * 86_400
MAX_WAITLIST_LIMIT = 100_000
# The request id of the hold a waitlist entry is offered: its own namespace, apart from reserves' ids.
WAITLIST_REQUEST_PREFIX = "waitlist:"


class WaitlistStatus(StrEnum):
    WAITING = "waiting"
    OFFERED = "offered"  # it got its hold (``reservation_id``); what became of the hold is the hold's
    LEFT = "left"


class WaitlistEntry(NamedTuple):
    """Immutable, like a reservation: an offer or a leave replaces it. ``reservation_id`` is minted when
    it joins, so that the offer the pool decides later is deterministic."""

    entry_id: str
    request_id: str
    quantity: int
    hold_seconds: int
    reservation_id: str
    status: WaitlistStatus = WaitlistStatus.WAITING


def offer_request_id(entry_id: str) -> str:
    """The request id of the hold an entry is offered."""
    return WAITLIST_REQUEST_PREFIX + entry_id
