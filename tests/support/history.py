"""A history checker in Jepsen's manner: record every request with its answer and its time, then check the
whole history against the journal. The journal is read through the CLI's dump (``capacity-service
events``), not through the code under test's recovery.

What a history must satisfy:
- every acknowledged reserve is in the journal, exactly once, with the acknowledged reservation id;
- a request id whose answers were all refusals (503, 429, 409, 404) took nothing;
- every unknown outcome (504, or no answer at all) was settled by a later attempt with the same request id
  that was decided (201 or a 409 rejection), and the journal agrees with that decision;
- no reservation appears that nobody asked for (each request id at most once);
- at no sequence number is a pool over its capacity (holds count as taken until they end);
- every acknowledged release is a release event in the journal;
- holds: every hold ends at most once (confirmed, released or expired), an expiry or a confirm only of a
  hold that is still held; an acknowledged confirm is a confirm in the journal, a confirm answered
  ``hold_expired`` an expiry; and (given ``now``) every hold whose expiry is over a second past has ended
  (at its expiry as extended last);
- waitlists: every acknowledged join is in the journal once (a request id joins a pool once), and no entry
  joined that nobody asked for; an entry is offered at most once, only while it waits, and in order: no
  entry waiting ahead of it fitted in what was free (the skip rule); offers never oversell; an acknowledged
  leave of a waiting entry is in the journal; and at the end no entry waits in an open pool while enough
  units are free for it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from capacity_service.errors import CapacityError

Outcome = Literal["ok", "refused", "rejected", "unknown"]

# Error codes that prove nothing was taken, and those that are a decision of the pool (also nothing taken).
_REFUSALS = {"unavailable", "overloaded", "pool_not_found", "invalid_request", "payload_too_large"}
_REJECTIONS = {
    "insufficient_capacity",
    "request_id_conflict",
    "hold_expired",
    "reservation_released",
    "waitlist_full",
    "pool_retired",
}


@dataclass(frozen=True, slots=True)
class Operation:
    kind: Literal["reserve", "release", "confirm", "join", "leave"]
    pool_id: str
    request_id: str | None
    quantity: int
    started: float
    ended: float
    outcome: Outcome
    code: str  # "ok" or the error code (or the exception's name when there was no answer)
    reservation_id: str | None = None
    message: str = ""  # the error's
    entry_id: str | None = None  # a join's or a leave's waitlist entry


def outcome_of_code(code: str) -> Outcome:
    if code == "ok":
        return "ok"
    if code in _REFUSALS:
        return "refused"
    if code in _REJECTIONS:
        return "rejected"
    return "unknown"  # outcome_unknown, a timeout, a broken connection: anything that says nothing


@dataclass
class History:
    operations: list[Operation] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, operation: Operation) -> None:
        with self._lock:
            self.operations.append(operation)

    def reserve(
        self, client: Any, pool_id: str, quantity: int, request_id: str | None, hold_seconds: int | None = None
    ) -> Operation:
        """``client.reserve`` (a ``CapacityClient``), recorded. Without a ``request_id`` the one the service
        made is recorded, from its answer or its error."""
        started = time.monotonic()
        reservation_id, message = None, ""
        try:
            receipt = client.reserve(pool_id, quantity, request_id=request_id, hold_seconds=hold_seconds)
            code, reservation_id, request_id = "ok", receipt.reservation_id, receipt.request_id
        except CapacityError as exc:
            code, request_id, message = exc.code, exc.request_id or request_id, str(exc)
        except Exception as exc:  # no answer at all
            code, message = type(exc).__name__, str(exc)
        operation = Operation(
            "reserve",
            pool_id,
            request_id,
            quantity,
            started,
            time.monotonic(),
            outcome_of_code(code),
            code,
            reservation_id,
            message,
        )
        self.record(operation)
        return operation

    def confirm(self, client: Any, pool_id: str, reservation_id: str) -> Operation:
        """``client.confirm``, recorded."""
        started = time.monotonic()
        message = ""
        try:
            client.confirm(reservation_id)
            code = "ok"
        except CapacityError as exc:
            code, message = exc.code, str(exc)
        except Exception as exc:
            code, message = type(exc).__name__, str(exc)
        operation = Operation(
            "confirm", pool_id, None, 0, started, time.monotonic(), outcome_of_code(code), code, reservation_id, message
        )
        self.record(operation)
        return operation

    def join(
        self, client: Any, pool_id: str, quantity: int, request_id: str, hold_seconds: int | None = None
    ) -> Operation:
        """``client.join_waitlist``, recorded (with the entry id it answered)."""
        started = time.monotonic()
        entry_id, message = None, ""
        try:
            entry_id, code = client.join_waitlist(pool_id, quantity, request_id, hold_seconds).entry_id, "ok"
        except CapacityError as exc:
            code, message = exc.code, str(exc)
        except Exception as exc:
            code, message = type(exc).__name__, str(exc)
        outcome = outcome_of_code(code)
        operation = Operation(
            "join", pool_id, request_id, quantity, started, time.monotonic(), outcome, code, None, message, entry_id
        )
        self.record(operation)
        return operation

    def leave(self, client: Any, pool_id: str, entry_id: str) -> Operation:
        """``client.leave_waitlist``, recorded."""
        started = time.monotonic()
        message = ""
        try:
            client.leave_waitlist(pool_id, entry_id)
            code = "ok"
        except CapacityError as exc:
            code, message = exc.code, str(exc)
        except Exception as exc:
            code, message = type(exc).__name__, str(exc)
        outcome = outcome_of_code(code)
        operation = Operation(
            "leave", pool_id, None, 0, started, time.monotonic(), outcome, code, None, message, entry_id
        )
        self.record(operation)
        return operation

    def unsettled(self) -> list[Operation]:
        """The unknown outcomes no later decided attempt with the same request id settles (retry these)."""
        by_request = _by_request(self.operations)
        return [
            op
            for op in self.operations
            if op.outcome == "unknown" and not _settled(op, by_request.get(op.request_id or "", []))
        ]


def _by_request(operations: Iterable[Operation]) -> dict[str, list[Operation]]:
    grouped: dict[str, list[Operation]] = {}
    for op in operations:
        if op.kind == "reserve" and op.request_id is not None:
            grouped.setdefault(op.request_id, []).append(op)
    return grouped


def _settled(unknown: Operation, attempts: list[Operation]) -> bool:
    return any(op.started >= unknown.ended and op.outcome in ("ok", "rejected") for op in attempts)


def journal_events(
    pool_id: str, data_dir: Path | None = None, env: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """A pool's events as the CLI dumps them (JSON lines), from the SQLite journal in ``data_dir`` or from
    the journal ``env`` names (``CAPACITY_JOURNAL``...)."""
    command = [str(Path(sys.executable).with_name("capacity-service")), "events", pool_id]
    if data_dir is not None:
        command += ["--data-dir", str(data_dir)]
    done = subprocess.run(
        command, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=120, check=True
    )
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def holds_ended(events: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """How many holds ended by a confirm and by an expiry, in a pool's dumped events."""
    confirmed = sum(1 for e in events if e["type"] == "HoldConfirmed")
    expired = sum(len(e["reservation_ids"]) for e in events if e["type"] == "HoldExpired")
    return {"HoldConfirmed": confirmed, "HoldExpired": expired}


def check(
    history: History, events_by_pool: Mapping[str, list[dict[str, Any]]], now: datetime | None = None
) -> list[str]:
    """Every way the history and the journal disagree (empty: they agree). ``now``: the wall-clock time the
    journal was read at; holds due over a second before it must have ended."""
    problems: list[str] = []
    reserved_by_request: dict[str, dict[str, Any]] = {}
    released: dict[str, int] = {}
    hold_ends: dict[str, str] = {}  # reservation id -> how its hold ended
    hold_ids: set[str] = set()
    joined_by_pool: dict[str, _Waitlist] = {}
    for pool_id, events in events_by_pool.items():
        capacity = reserved = 0
        live: dict[str, int] = {}
        held: dict[str, datetime] = {}
        waitlist = _Waitlist(pool_id, problems)
        for event in events:
            kind = event["type"]
            waitlist.take(event, capacity - reserved)
            if kind in ("HoldConfirmed", "HoldExpired"):
                # One HoldExpired names every hold the pool expired at once.
                ended = event["reservation_ids"] if kind == "HoldExpired" else [event["reservation_id"]]
                for reservation_id in map(str, ended):
                    if reservation_id not in held:
                        problems.append(f"pool {pool_id!r}: {kind} of {reservation_id!r}, which is not held")
                        continue
                    del held[reservation_id]
                    hold_ends[reservation_id] = kind
                    if kind == "HoldExpired":
                        reserved -= live.pop(reservation_id)
            if kind == "PoolConfigured":
                capacity = int(event["capacity"])
            elif kind == "HoldExtended" and str(event["reservation_id"]) in held:
                held[str(event["reservation_id"])] = datetime.fromisoformat(str(event["expires_at"]))
            elif kind == "WaitlistOffered":  # a hold, taken for an entry: ended as any hold
                reservation_id = str(event["reservation_id"])
                held[reservation_id] = datetime.fromisoformat(str(event["expires_at"]))
                hold_ids.add(reservation_id)
                live[reservation_id] = int(event["quantity"])
                reserved += int(event["quantity"])
                if reserved > capacity:
                    problems.append(f"pool {pool_id!r} oversold by an offer at seq_nr {event['seq_nr']}")
            elif kind in ("CapacityReserved", "CapacityHeld"):
                if kind == "CapacityHeld":
                    held[str(event["reservation_id"])] = datetime.fromisoformat(str(event["expires_at"]))
                    hold_ids.add(str(event["reservation_id"]))
                request_id = str(event["request_id"])
                if request_id in reserved_by_request:
                    problems.append(f"request id {request_id!r} took capacity twice (seq_nr {event['seq_nr']})")
                reserved_by_request[request_id] = {**event, "pool_id": pool_id}
                live[str(event["reservation_id"])] = int(event["quantity"])
                reserved += int(event["quantity"])
                if reserved > capacity:
                    problems.append(f"pool {pool_id!r} oversold at seq_nr {event['seq_nr']}: {reserved} > {capacity}")
            elif kind == "CapacityReleased":
                reservation_id = str(event["reservation_id"])
                released[reservation_id] = released.get(reservation_id, 0) + 1
                if reservation_id not in live:
                    problems.append(f"pool {pool_id!r}: release of {reservation_id!r} that is not held")
                else:
                    reserved -= live.pop(reservation_id)
                if held.pop(reservation_id, None) is not None:
                    hold_ends[reservation_id] = kind
        waitlist.check_end(capacity - reserved)
        joined_by_pool[pool_id] = waitlist
        if now is not None:
            overdue = sorted(rid for rid, expires_at in held.items() if expires_at < now - timedelta(seconds=1))
            if overdue:
                problems.append(f"pool {pool_id!r}: holds past their expiry that never ended: {overdue[:5]}")

    by_request = _by_request(history.operations)
    for request_id, attempts in by_request.items():
        stored = reserved_by_request.get(request_id)
        acknowledged = [op for op in attempts if op.outcome == "ok"]
        for op in acknowledged:
            if stored is None:
                problems.append(f"lost ack: {request_id!r} was answered 201 and is not in the journal")
            elif op.reservation_id != stored["reservation_id"] or op.quantity != int(stored["quantity"]):
                problems.append(f"{request_id!r}: acknowledged {op.reservation_id!r}, journal has {stored}")
        for op in attempts:
            if op.outcome == "unknown" and not _settled(op, attempts):
                problems.append(f"{request_id!r}: outcome {op.code} at {op.ended:.3f} never settled by a retry")
        if not acknowledged and stored is not None:
            codes = sorted({op.code for op in attempts})
            at = stored["seq_nr"]
            problems.append(f"phantom: {request_id!r} answered only {codes} but took capacity (seq_nr {at})")
    asked = set(by_request)
    for request_id, stored in reserved_by_request.items():
        if request_id not in asked:
            problems.append(f"phantom: {request_id!r} in pool {stored['pool_id']!r} was never requested")
    for op in history.operations:
        if op.kind == "release" and op.outcome == "ok" and op.reservation_id not in released:
            problems.append(f"lost ack: release of {op.reservation_id!r} was answered and is not in the journal")
        ended = hold_ends.get(op.reservation_id or "")
        if op.kind == "confirm" and op.code == "ok" and op.reservation_id in hold_ids and ended != "HoldConfirmed":
            problems.append(f"confirm of {op.reservation_id!r} was answered 200 but the hold ended by {ended}")
        if op.kind == "confirm" and op.code == "hold_expired" and ended != "HoldExpired":
            problems.append(f"confirm of {op.reservation_id!r} was answered hold_expired, the journal says {ended}")
    problems += _waitlist_acks(history, joined_by_pool)
    return problems


@dataclass
class _Waitlist:
    """A pool's waitlist as its journal tells it, checked event by event."""

    pool_id: str
    problems: list[str]
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)  # entry id -> its WaitlistJoined
    waiting: dict[str, int] = field(default_factory=dict)  # entry id -> quantity, in join order
    offered: set[str] = field(default_factory=set)
    left: set[str] = field(default_factory=set)
    request_ids: set[str] = field(default_factory=set)
    open: bool = True

    def take(self, event: Mapping[str, Any], free: int) -> None:
        """``event``, with ``free`` units before it."""
        kind, where = event["type"], f"pool {self.pool_id!r} at seq_nr {event['seq_nr']}"
        if kind in ("PoolPaused", "PoolRetired"):
            self.open = False
        elif kind == "PoolResumed":
            self.open = True
        elif kind == "WaitlistJoined":
            if event["request_id"] in self.request_ids:
                self.problems.append(f"{where}: request id {event['request_id']!r} joined twice")
            self.request_ids.add(str(event["request_id"]))
            self.entries[str(event["entry_id"])] = dict(event)
            self.waiting[str(event["entry_id"])] = int(event["quantity"])
        elif kind == "WaitlistLeft":
            if self.waiting.pop(str(event["entry_id"]), None) is None:
                self.problems.append(f"{where}: {event['entry_id']!r} left without waiting")
            self.left.add(str(event["entry_id"]))
        elif kind == "WaitlistOffered":
            entry_id = str(event["entry_id"])
            if entry_id in self.offered:
                self.problems.append(f"{where}: {entry_id!r} offered twice")
            elif entry_id not in self.waiting:
                self.problems.append(f"{where}: {entry_id!r} offered while not waiting")
            ahead = list(self.waiting)[: list(self.waiting).index(entry_id)] if entry_id in self.waiting else []
            skipped_fitting = [e for e in ahead if self.waiting[e] <= free]
            if skipped_fitting:
                self.problems.append(f"{where}: {entry_id!r} offered before {skipped_fitting[0]!r}, which fitted")
            if not self.open:
                self.problems.append(f"{where}: {entry_id!r} offered while the pool was paused or retired")
            self.waiting.pop(entry_id, None)
            self.offered.add(entry_id)

    def check_end(self, free: int) -> None:
        fitting = [e for e, quantity in self.waiting.items() if quantity <= free]
        if self.open and fitting:
            self.problems.append(f"pool {self.pool_id!r}: {fitting[0]!r} waits while {free} units are free")


def _waitlist_acks(history: History, waitlists: Mapping[str, _Waitlist]) -> list[str]:
    problems: list[str] = []
    asked: dict[str, set[str]] = {}
    for op in history.operations:
        waitlist = waitlists.get(op.pool_id)
        if op.kind == "join":
            asked.setdefault(op.pool_id, set()).add(op.request_id or "")
            if op.outcome == "ok" and (waitlist is None or (op.entry_id or "") not in waitlist.entries):
                problems.append(f"lost ack: join {op.request_id!r} of {op.pool_id!r} is not in the journal")
            if op.outcome in ("refused", "rejected") and waitlist is not None and op.code != "request_id_conflict":
                joined = [e for e, j in waitlist.entries.items() if j["request_id"] == op.request_id]
                if joined and not any(
                    o.kind == "join" and o.request_id == op.request_id and o.outcome == "ok" for o in history.operations
                ):
                    problems.append(f"phantom: join {op.request_id!r} was refused ({op.code}) but joined")
        elif op.kind == "leave" and op.outcome == "ok" and waitlist is not None:
            entry_id = op.entry_id or ""
            if entry_id not in waitlist.left and entry_id not in waitlist.offered:
                problems.append(f"lost ack: leave of {entry_id!r} was answered and the entry still waits")
    for pool_id, waitlist in waitlists.items():
        for entry in waitlist.entries.values():
            if entry["request_id"] not in asked.get(pool_id, set()):
                problems.append(f"phantom: {entry['request_id']!r} joined {pool_id!r} and was never asked")
    return problems


def events_in(journal: Any, pool_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """Each pool's events, dumped by the CLI from the journal these settings name (``SqlJournalSettings``
    or ``CassandraJournalSettings``)."""
    env = {"CAPACITY_JOURNAL": journal.model_dump_json()}
    return {pool_id: journal_events(pool_id, env=env) for pool_id in pool_ids}
