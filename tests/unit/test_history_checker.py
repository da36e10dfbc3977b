"""The history checker finds each kind of disagreement between answers and the journal (and none where
they agree): a checker that cannot fail would prove nothing in the fault tests that use it."""

from __future__ import annotations

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
