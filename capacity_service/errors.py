"""The exceptions users of capacity_service catch. Errors of Ray, Cassandra and SQLAlchemy are
translated into these at the edge; nothing else escapes the public API."""

from __future__ import annotations


class CapacityError(Exception):
    """Base of all capacity_service errors. ``code`` is the HTTP contract's snake_case error code;
    ``request_id``: the id a reserve was handled under (the caller's or the one the service made), on
    every error of a reserve, so that its outcome can always be settled by repeating it."""

    code = "error"
    request_id: str | None = None

    def details(self) -> dict[str, object]:
        """Fields beyond code and message that the error's answer carries (over HTTP too)."""
        return {}


class InvalidRequest(CapacityError):
    code = "invalid_request"


class PoolNotFound(CapacityError):
    code = "pool_not_found"

    def __init__(self, pool_id: str) -> None:
        super().__init__(f"pool {pool_id!r} does not exist")
        self.pool_id = pool_id


class InsufficientCapacity(CapacityError):
    code = "insufficient_capacity"

    def __init__(self, pool_id: str, requested: int, remaining: int) -> None:
        super().__init__(f"pool {pool_id!r} has {remaining} left, {requested} requested")
        self.pool_id, self.requested, self.remaining = pool_id, requested, remaining


class ReservationNotFound(CapacityError):
    code = "reservation_not_found"

    def __init__(self, reservation_id: str) -> None:
        super().__init__(f"reservation {reservation_id!r} does not exist")
        self.reservation_id = reservation_id


class RequestIdConflict(CapacityError):
    """The request id was used before on this pool for a reservation of a different quantity."""

    code = "request_id_conflict"

    def __init__(self, request_id: str, reservation_id: str) -> None:
        super().__init__(f"request id {request_id!r} was already used for reservation {reservation_id!r}")
        self.request_id, self.reservation_id = request_id, reservation_id


class HoldExpired(CapacityError):
    """The hold expired before it was confirmed: its units went back on sale."""

    code = "hold_expired"

    def __init__(self, reservation_id: str) -> None:
        super().__init__(f"the hold {reservation_id!r} expired before it was confirmed")
        self.reservation_id = reservation_id


class ReservationReleased(CapacityError):
    """The reservation was released: it cannot be confirmed."""

    code = "reservation_released"

    def __init__(self, reservation_id: str) -> None:
        super().__init__(f"reservation {reservation_id!r} was released")
        self.reservation_id = reservation_id


class PoolRetired(CapacityError):
    """The pool was retired: it takes no new reservations (releases and reads still work)."""

    code = "pool_retired"

    def __init__(self, pool_id: str) -> None:
        super().__init__(f"pool {pool_id!r} is retired: it takes no new reservations")
        self.pool_id = pool_id


class ReservationActive(CapacityError):
    """An extend of an active reservation (confirmed, or never a hold): it has no expiry to move."""

    code = "reservation_active"

    def __init__(self, reservation_id: str) -> None:
        super().__init__(f"reservation {reservation_id!r} is active: it is not a hold, so it cannot be extended")
        self.reservation_id = reservation_id


class WaitlistEntryNotFound(CapacityError):
    code = "waitlist_entry_not_found"

    def __init__(self, pool_id: str, entry_id: str) -> None:
        super().__init__(f"pool {pool_id!r} has no waitlist entry {entry_id!r}")
        self.pool_id, self.entry_id = pool_id, entry_id


class WaitlistFull(CapacityError):
    """As many entries wait on the pool as its ``waitlist_limit`` allows: nothing was added."""

    code = "waitlist_full"

    def __init__(self, pool_id: str, limit: int) -> None:
        super().__init__(f"the waitlist of pool {pool_id!r} is full ({limit} waiting)")
        self.pool_id, self.limit = pool_id, limit

    def details(self) -> dict[str, object]:
        return {"limit": self.limit}


class OrderNotFound(CapacityError):
    code = "order_not_found"

    def __init__(self, order_id: str) -> None:
        super().__init__(f"order {order_id!r} does not exist")
        self.order_id = order_id


class OrderLineRefused(CapacityError):
    """A line of an order could not be served, so nothing of the order was taken: ``line`` (0-based),
    its ``pool_id`` (None for a chosen line), and ``line_error``, the code of the line's own error
    (``insufficient_capacity``, ``pool_not_found``, ``pool_retired``, ``paused``, ``no_capacity_in_window``)."""

    code = "order_line_refused"

    def __init__(self, order_id: str, line: int, pool_id: str | None, line_error: str) -> None:
        where = f"pool {pool_id!r}" if pool_id is not None else "its window"
        super().__init__(f"order {order_id!r}: line {line} ({where}) could not be served: {line_error}; nothing taken")
        self.order_id, self.line, self.pool_id, self.line_error = order_id, line, pool_id, line_error

    def details(self) -> dict[str, object]:
        return {"line": self.line, "pool_id": self.pool_id, "line_error": self.line_error}


class OrderFailed(CapacityError):
    """The order failed for another reason than a line it could not serve: ``reason`` is ``deadline``
    (its lines could not all be taken in time) or ``cancelled`` (cancelled while it was placed). Nothing of
    it is taken; it stays failed, so placing it again takes a new order id."""

    code = "order_failed"

    def __init__(self, order_id: str, reason: str) -> None:
        super().__init__(f"order {order_id!r} failed ({reason}); nothing of it is taken")
        self.order_id, self.reason = order_id, reason

    def details(self) -> dict[str, object]:
        return {"reason": self.reason}


class OrderIdConflict(CapacityError):
    """The order id was placed before with other lines or another hold."""

    code = "order_id_conflict"

    def __init__(self, order_id: str) -> None:
        super().__init__(f"order id {order_id!r} was already used for another order")
        self.order_id = order_id


class OrderNotHeld(CapacityError):
    """A confirm of an order that is not held any more (it failed, or was cancelled)."""

    code = "order_not_held"

    def __init__(self, order_id: str, status: str) -> None:
        super().__init__(f"order {order_id!r} is {status}: it cannot be confirmed")
        self.order_id, self.status = order_id, status


class NoCapacityInWindow(CapacityError):
    """A reserve that chose its pool (``choose``) found none of the zone, in the window, that could take the
    quantity: every candidate was full, retired, paused or gone (or the deadline came first). Nothing was
    taken."""

    code = "no_capacity_in_window"

    def __init__(self, zone: str, quantity: int, message: str) -> None:
        super().__init__(message)
        self.zone, self.quantity = zone, quantity


class CapacityBelowReserved(CapacityError):
    """A schedule would lower a pool's capacity below the units held and active there, and its template does
    not allow it: the pool was left as it was."""

    code = "capacity_below_reserved"

    def __init__(self, pool_id: str, capacity: int, reserved: int) -> None:
        super().__init__(
            f"pool {pool_id!r}: capacity {capacity} would be below the {reserved} units held and active there; "
            "left as it was (allow_capacity_below_reserved: true lowers it anyway)"
        )
        self.pool_id, self.capacity, self.reserved = pool_id, capacity, reserved


class ScheduleNotFound(CapacityError):
    code = "schedule_not_found"

    def __init__(self, schedule_id: str) -> None:
        super().__init__(f"schedule {schedule_id!r} does not exist")
        self.schedule_id = schedule_id


class SeqNrOutOfRange(CapacityError):
    """An operator's reset named a seq_nr the pool has not reached (or its last one)."""

    code = "seq_nr_out_of_range"


class WebhookNotFound(CapacityError):
    code = "webhook_not_found"

    def __init__(self, webhook_id: str) -> None:
        super().__init__(f"webhook {webhook_id!r} does not exist")
        self.webhook_id = webhook_id


class TooManyWebhooks(CapacityError):
    """A new webhook beyond ``webhooks.max_webhooks``."""

    code = "too_many_webhooks"


class Unavailable(CapacityError):
    """The service could not take the request now (journal outage, pool restarting, its deadline passed
    before the pool could decide). Nothing was taken, and nothing will be: retrying with the same request
    id is always safe."""

    code = "unavailable"


class Paused(Unavailable):
    """An operator paused the pool's writes (the kill switch): nothing was taken. Reads go on."""

    code = "paused"

    def __init__(self, pool_id: str, reason: str) -> None:
        super().__init__(f"pool {pool_id!r} is paused by an operator: {reason}")
        self.pool_id, self.reason = pool_id, reason


class OutcomeUnknown(CapacityError):
    """The service cannot tell whether the command took effect (its pool did not answer in time, or the
    journal did not confirm its append). Repeating it with the same ``request_id`` settles it: the same
    reservation if it was taken, else it is decided then; it never takes twice."""

    code = "outcome_unknown"


class Overloaded(CapacityError):
    """More work is waiting than can be done in time (a pool's queue, or the requests in flight, at their
    bound). Nothing was taken; try again after ``retry_after_s``."""

    code = "overloaded"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SettingsMismatch(ValueError):
    """Settings given to a client or a deploy disagree with those of the service running in the namespace."""
