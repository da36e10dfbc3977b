"""Every pool's latest view, indexed by zone, answering availability queries. No Ray here.

Last writer wins by the pool's sequence number: an update older than what the index holds is ignored,
so pushes, anti-entropy pulls and bootstraps can arrive in any order.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Iterable
from datetime import datetime
from typing import NamedTuple

from capacity_service.domain import PoolView


class ZoneCounts(NamedTuple):
    """A zone's pools on sale (retired pools leave it), their units left in all, how many have none left,
    and how many are paused."""

    zone: str
    pools: int
    remaining: int
    sold_out: int
    paused: int


class AvailabilityIndex:
    def __init__(self) -> None:
        self._views: dict[str, PoolView] = {}
        self._by_zone: dict[str, dict[str, PoolView]] = {}
        # Change feed for mirrors: pools in the order they last changed, each with its change number.
        self._changes: OrderedDict[str, int] = OrderedDict()
        self._change_nr = 0

    def __len__(self) -> int:
        return len(self._views)

    @property
    def change_nr(self) -> int:
        """The number of the latest change (0: none yet)."""
        return self._change_nr

    def update(self, view: PoolView) -> bool:
        """Apply one pool's view; False when it is not newer than what we hold."""
        current = self._views.get(view.pool_id)
        if current is not None and current.version >= view.version:
            return False
        if not view.exists:
            return False
        self._views[view.pool_id] = view
        if current is not None and (current.zone != view.zone or view.retired):
            self._unlist(current)
        if not view.retired:  # a retired pool keeps its version here (no older view revives it), unlisted
            self._by_zone.setdefault(view.zone, {})[view.pool_id] = view
        self._change_nr += 1
        self._changes[view.pool_id] = self._change_nr
        self._changes.move_to_end(view.pool_id)
        return True

    def _unlist(self, view: PoolView) -> None:
        listed = self._by_zone.get(view.zone)
        if listed is not None and listed.pop(view.pool_id, None) is not None and not listed:
            del self._by_zone[view.zone]

    def view(self, pool_id: str) -> PoolView | None:
        return self._views.get(pool_id)

    def version_of(self, pool_id: str) -> int:
        """The version held of a pool; -1 for none."""
        view = self._views.get(pool_id)
        return -1 if view is None else view.version

    def changes_since(self, change_nr: int) -> tuple[int, list[PoolView]]:
        """The views changed after ``change_nr`` (0: all), and the change number to ask from next time.
        Costs in proportion to the changes, not to all pools."""
        changed: list[PoolView] = []
        for pool_id in reversed(self._changes):
            if self._changes[pool_id] <= change_nr:
                break
            changed.append(self._views[pool_id])
        return self._change_nr, changed

    def update_all(self, views: Iterable[PoolView]) -> int:
        return sum(self.update(view) for view in views)

    def query(
        self, zone: str, slot_from: datetime | None, slot_to: datetime | None, quantity: int = 1
    ) -> list[PoolView]:
        """Pools of ``zone`` whose slot overlaps ``[slot_from, slot_to)`` (an open side, or a pool with no
        slot, matches everything) with at least ``quantity`` remaining. Costs in proportion to the pools
        of that zone, not to all pools."""
        matches = [
            view
            for view in self._by_zone.get(zone, {}).values()
            if view.remaining >= quantity and _overlaps(view, slot_from, slot_to)
        ]
        matches.sort(key=lambda v: (v.slot_start.timestamp() if v.slot_start else float("inf"), v.pool_id))
        return matches

    def views(self) -> list[PoolView]:
        return list(self._views.values())

    def zones(self, after: str | None, limit: int) -> tuple[list[ZoneCounts], bool]:
        """Up to ``limit`` zones named after ``after`` (None: from the first), in the order of their names,
        and whether more follow. Costs a sort of the zones' names and a pass over the listed zones' pools."""
        names = sorted(self._by_zone)
        start = 0 if after is None else bisect.bisect_right(names, after)
        listed = [_counts(zone, self._by_zone[zone].values()) for zone in names[start : start + limit]]
        return listed, start + limit < len(names)


def _counts(zone: str, views: Iterable[PoolView]) -> ZoneCounts:
    pools = remaining = sold_out = paused = 0
    for view in views:
        pools += 1
        remaining += view.remaining
        sold_out += view.remaining == 0
        paused += view.paused
    return ZoneCounts(zone, pools, remaining, sold_out, paused)


def _overlaps(view: PoolView, slot_from: datetime | None, slot_to: datetime | None) -> bool:
    if slot_to is not None and view.slot_start is not None and view.slot_start >= slot_to:
        return False
    return not (slot_from is not None and view.slot_end is not None and view.slot_end <= slot_from)
