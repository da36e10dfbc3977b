from datetime import UTC, datetime

from capacity_service.application.availability_index import AvailabilityIndex
from capacity_service.domain import PoolView


def view(pool_id: str, version: int, remaining: int = 5, zone: str = "north", hour: int | None = None) -> PoolView:
    start = None if hour is None else datetime(2026, 12, 1, hour, tzinfo=UTC)
    end = None if hour is None else datetime(2026, 12, 1, hour + 2, tzinfo=UTC)
    return PoolView(pool_id, True, zone, start, end, 10, 10 - remaining, remaining, version)


def test_last_writer_wins_by_version() -> None:
    index = AvailabilityIndex()
    assert index.update(view("p", 3, remaining=2))
    assert not index.update(view("p", 2, remaining=9))  # older: ignored
    assert not index.update(view("p", 3, remaining=9))  # same version: ignored
    assert [v.remaining for v in index.query("north", None, None)] == [2]
    assert index.update(view("p", 4, remaining=7, zone="south"))  # moved zone
    assert index.query("north", None, None) == []
    assert [v.remaining for v in index.query("south", None, None)] == [7]
    assert (index.version_of("p"), index.version_of("never-seen")) == (4, -1)  # what anti-entropy compares


def test_query_by_slot_overlap_and_quantity() -> None:
    index = AvailabilityIndex()
    index.update_all([view("a", 1, hour=8), view("b", 1, remaining=1, hour=10), view("c", 1)])

    def t(h: int) -> datetime:
        return datetime(2026, 12, 1, h, tzinfo=UTC)

    assert [v.pool_id for v in index.query("north", None, None)] == ["a", "b", "c"]
    assert [v.pool_id for v in index.query("north", t(10), None)] == ["b", "c"]
    assert [v.pool_id for v in index.query("north", None, t(10))] == ["a", "c"]
    assert [v.pool_id for v in index.query("north", None, None, quantity=2)] == ["a", "c"]


def test_change_feed_returns_only_what_changed_since() -> None:
    index = AvailabilityIndex()
    index.update_all([view("a", 1), view("b", 1), view("c", 1)])
    cursor, everything = index.changes_since(0)
    assert {v.pool_id for v in everything} == {"a", "b", "c"}
    assert index.changes_since(cursor) == (cursor, [])
    index.update(view("b", 2, remaining=1))
    index.update(view("a", 0))  # stale: not a change
    cursor2, changed = index.changes_since(cursor)
    assert [(v.pool_id, v.version) for v in changed] == [("b", 2)]
    mirror = AvailabilityIndex()
    mirror.update_all(everything)
    mirror.update_all(changed)
    assert mirror.query("north", None, None) == index.query("north", None, None)
    assert cursor2 > cursor
