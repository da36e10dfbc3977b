"""The history checker finds each kind of disagreement between answers and the journal (and none where
they agree): a checker that cannot fail would prove nothing in the fault tests that use it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tests.support.history import History, Operation, check, outcome_of_code


def reserved(seq_nr: int, request_id: str, quantity: int = 1) -> dict[str, Any]:
    return {
        "seq_nr": seq_nr,
        "type": "CapacityReserved",
        "request_id": request_id,
        "reservation_id": f"res-{request_id}",
        "quantity": quantity,
    }


def configured(capacity: int) -> dict[str, Any]:
    return {"seq_nr": 1, "type": "PoolConfigured", "capacity": capacity}


def op(request_id: str, code: str, started: float, ended: float, quantity: int = 1) -> Operation:
    reservation_id = f"res-{request_id}" if code == "ok" else None
    return Operation("reserve", "p", request_id, quantity, started, ended, outcome_of_code(code), code, reservation_id)


def history(*operations: Operation) -> History:
    recorded = History()
    for operation in operations:
        recorded.record(operation)
    return recorded


def test_a_history_that_agrees_with_the_journal_has_no_problems() -> None:
    answers = history(
        op("a", "ok", 0, 1),
        op("b", "unavailable", 0, 1),
        op("c", "outcome_unknown", 0, 1),
        op("c", "ok", 2, 3),  # the retry settles it: taken once
        op("d", "outcome_unknown", 0, 1),
        op("d", "insufficient_capacity", 2, 3),  # settled: not taken
    )
    events = {"p": [configured(2), reserved(2, "a"), reserved(3, "c")]}
    assert check(answers, events) == []
    assert answers.unsettled() == []


def test_each_kind_of_disagreement_is_found() -> None:
    answers = history(
        op("lost", "ok", 0, 1),
        op("phantom-503", "unavailable", 0, 1),
        op("phantom-429", "overloaded", 0, 1),
        op("open", "outcome_unknown", 0, 1),
        op("open", "unavailable", 2, 3),  # a 503 after a 504 settles nothing
        op("twice", "ok", 0, 1),
    )
    events = {
        "p": [
            configured(3),
            reserved(2, "phantom-503"),
            reserved(3, "phantom-429"),
            reserved(4, "twice"),
            reserved(5, "twice"),
            reserved(6, "nobody-asked"),
        ]
    }
    problems = "\n".join(check(answers, events))
    assert "lost ack: 'lost'" in problems
    assert "phantom: 'phantom-503'" in problems and "phantom: 'phantom-429'" in problems
    assert "'open': outcome outcome_unknown" in problems and "never settled" in problems
    assert "'twice' took capacity twice" in problems
    assert "oversold at seq_nr 5: 4 > 3" in problems
    assert "'nobody-asked' in pool 'p' was never requested" in problems
    assert [o.request_id for o in answers.unsettled()] == ["open"]


def held(seq_nr: int, request_id: str, expires_at: str = "2026-12-03 12:00:05+00:00") -> dict[str, Any]:
    return {**reserved(seq_nr, request_id), "type": "CapacityHeld", "expires_at": expires_at}


def hold_end(seq_nr: int, kind: str, request_id: str) -> dict[str, Any]:
    """The end of one hold as the CLI dumps it (an expiry names its holds in a list)."""
    if kind == "HoldExpired":
        return {"seq_nr": seq_nr, "type": kind, "reservation_ids": [f"res-{request_id}"], "quantities": [1]}
    return {"seq_nr": seq_nr, "type": kind, "reservation_id": f"res-{request_id}", "quantity": 1}


def confirm(request_id: str, code: str) -> Operation:
    return Operation("confirm", "p", None, 0, 5, 6, outcome_of_code(code), code, f"res-{request_id}")


def test_holds_that_agree_with_the_journal_have_no_problems() -> None:
    answers = history(
        op("kept", "ok", 0, 1),
        op("late", "ok", 0, 1),
        op("let-go", "ok", 0, 1),
        confirm("kept", "ok"),
        confirm("late", "hold_expired"),
    )
    events = {
        "p": [
            configured(2),
            held(2, "kept"),
            held(3, "late"),
            hold_end(4, "HoldConfirmed", "kept"),
            hold_end(5, "HoldExpired", "late"),
            held(6, "let-go"),  # fits: the expired hold gave its unit back
            hold_end(7, "CapacityReleased", "let-go"),
        ]
    }
    assert check(answers, events, now=datetime(2026, 12, 3, 13, tzinfo=UTC)) == []


def test_each_kind_of_hold_disagreement_is_found() -> None:
    answers = history(
        op("twice", "ok", 0, 1),
        op("lost-confirm", "ok", 0, 1),
        op("wrong-expiry", "ok", 0, 1),
        op("overdue", "ok", 0, 1),
        confirm("lost-confirm", "ok"),
        confirm("wrong-expiry", "hold_expired"),
    )
    events = {
        "p": [
            configured(9),
            held(2, "twice"),
            hold_end(3, "HoldExpired", "twice"),
            hold_end(4, "HoldConfirmed", "twice"),  # a second end
            held(5, "lost-confirm"),
            hold_end(6, "HoldExpired", "lost-confirm"),
            held(7, "wrong-expiry"),
            hold_end(8, "HoldConfirmed", "wrong-expiry"),
            held(9, "overdue"),
            hold_end(10, "HoldExpired", "never-held"),
        ]
    }
    problems = "\n".join(check(answers, events, now=datetime(2026, 12, 3, 13, tzinfo=UTC)))
    assert "HoldConfirmed of 'res-twice', which is not held" in problems
    assert "confirm of 'res-lost-confirm' was answered 200 but the hold ended by HoldExpired" in problems
    assert "'res-wrong-expiry' was answered hold_expired, the journal says HoldConfirmed" in problems
    assert "holds past their expiry that never ended: ['res-overdue']" in problems
    assert "HoldExpired of 'res-never-held', which is not held" in problems


def joined(seq_nr: int, entry: str, quantity: int = 1) -> dict[str, Any]:
    return {
        "seq_nr": seq_nr,
        "type": "WaitlistJoined",
        "entry_id": entry,
        "request_id": f"req-{entry}",
        "quantity": quantity,
        "hold_seconds": 60,
        "reservation_id": f"res-{entry}",
    }


def offered(seq_nr: int, entry: str, quantity: int = 1) -> dict[str, Any]:
    return {
        "seq_nr": seq_nr,
        "type": "WaitlistOffered",
        "entry_id": entry,
        "request_id": f"req-{entry}",
        "reservation_id": f"res-{entry}",
        "quantity": quantity,
        "expires_at": "2026-12-01T12:01:00+00:00",
    }


def released(seq_nr: int, request_id: str) -> dict[str, Any]:
    return {"seq_nr": seq_nr, "type": "CapacityReleased", "reservation_id": f"res-{request_id}", "quantity": 1}


def join_op(entry: str, code: str = "ok", quantity: int = 1) -> Operation:
    ok = code == "ok"
    return Operation(
        "join", "p", f"req-{entry}", quantity, 0, 1, outcome_of_code(code), code, None, "", entry if ok else None
    )


def test_waitlist_offers_that_agree_with_the_journal_have_no_problems() -> None:
    answers = history(
        op("a", "ok", 0, 1), join_op("big", quantity=2), join_op("small"), join_op("full", "waitlist_full")
    )
    events = {
        "p": [
            configured(1),
            reserved(2, "a"),
            joined(3, "big", 2),
            joined(4, "small"),
            released(5, "a"),
            offered(6, "small"),  # the big entry did not fit in 1 free unit: skipped, keeps its place
        ]
    }
    assert check(answers, events) == []


def test_each_kind_of_waitlist_disagreement_is_found() -> None:
    answers = history(join_op("first"), join_op("second"), join_op("lost"), join_op("refused", "waitlist_full"))
    events = {
        "p": [
            configured(2),
            joined(2, "first"),
            joined(3, "second"),
            joined(4, "refused"),
            joined(5, "stranger"),
            offered(6, "second"),  # before "first", which fitted
            offered(7, "second"),  # twice
            offered(8, "first"),
            offered(9, "stranger"),  # oversold: 3 units taken of 2
        ]
    }
    problems = "\n".join(check(answers, events))
    assert "offered before 'first', which fitted" in problems
    assert "'second' offered twice" in problems
    assert "oversold by an offer at seq_nr 9" in problems
    assert "join 'req-lost' of 'p' is not in the journal" in problems
    assert "join 'req-refused' was refused (waitlist_full) but joined" in problems
    assert "'req-stranger' joined 'p' and was never asked" in problems


def test_an_entry_left_waiting_while_units_are_free_is_found() -> None:
    answers = history(join_op("idle"))
    assert check(answers, {"p": [configured(1), joined(2, "idle")]}) == [
        "pool 'p': 'idle' waits while 1 units are free"
    ]
    paused = [configured(1), {"seq_nr": 2, "type": "PoolPaused", "reason": "x"}, joined(3, "idle")]
    assert check(answers, {"p": paused}) == []  # a paused pool offers nothing
