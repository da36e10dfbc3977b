"""Pool ids and reservation ids.

A reservation id carries its pool id, so a release is routed straight to the pool that owns it: no
replicated roster, no broadcast (the original system's roster collapsed under load).
Format: ``<base64url(pool_id)>.<random token>``. The base64url alphabet has no ``.``, so the split is
unambiguous; the token has 128 bits from ``secrets``, so ids cannot be guessed.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets

POOL_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,64}")
_TOKEN_BYTES = 16


# An order's stream id: the prefix's ``~`` is in no pool id, so pool and order streams never collide in a
# journal; the order id itself is written like a pool id. A schedule's stream id likewise.
ORDER_STREAM_PREFIX = "order~"
SCHEDULE_STREAM_PREFIX = "schedule~"


class InvalidId(ValueError):
    """A pool id or reservation id that is not well formed."""


def is_valid_pool_id(pool_id: str) -> bool:
    return POOL_ID_PATTERN.fullmatch(pool_id) is not None


def check_pool_id(pool_id: str) -> str:
    if not is_valid_pool_id(pool_id):
        raise InvalidId(f"pool id must be 1-128 characters of [A-Za-z0-9._:-], got {pool_id!r:.140}")
    return pool_id


def new_reservation_id(pool_id: str) -> str:
    """A fresh, unguessable, URL-safe reservation id that names its pool."""
    check_pool_id(pool_id)
    encoded_pool = base64.urlsafe_b64encode(pool_id.encode()).rstrip(b"=").decode()
    return f"{encoded_pool}.{secrets.token_urlsafe(_TOKEN_BYTES)}"


def new_waitlist_entry_id() -> str:
    """A fresh, unguessable, URL-safe id of a waitlist entry (its pool is in every path that names it)."""
    return secrets.token_urlsafe(_TOKEN_BYTES)


def is_waitlist_entry_id(entry_id: str) -> bool:
    return _TOKEN_PATTERN.fullmatch(entry_id) is not None


def pool_of_reservation(reservation_id: str) -> str:
    """The pool id a reservation id belongs to; ``InvalidId`` when it is not one of ours."""
    encoded_pool, dot, token = reservation_id.rpartition(".")
    if not dot or not encoded_pool or _TOKEN_PATTERN.fullmatch(token) is None:
        raise InvalidId("not a reservation id")
    try:
        padded = encoded_pool + "=" * (-len(encoded_pool) % 4)
        pool_id = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidId("not a reservation id") from exc
    if not is_valid_pool_id(pool_id):
        raise InvalidId("not a reservation id")
    return pool_id


def check_order_id(order_id: str) -> str:
    if POOL_ID_PATTERN.fullmatch(order_id) is None:
        raise InvalidId(f"order id must be 1-128 characters of [A-Za-z0-9._:-], got {order_id!r:.140}")
    return order_id


def order_stream_id(order_id: str) -> str:
    return ORDER_STREAM_PREFIX + check_order_id(order_id)


def is_order_stream(stream_id: str) -> bool:
    return stream_id.startswith(ORDER_STREAM_PREFIX)


def order_of_stream(stream_id: str) -> str:
    return stream_id.removeprefix(ORDER_STREAM_PREFIX)


def check_schedule_id(schedule_id: str) -> str:
    if POOL_ID_PATTERN.fullmatch(schedule_id) is None:
        raise InvalidId(f"schedule id must be 1-128 characters of [A-Za-z0-9._:-], got {schedule_id!r:.140}")
    return schedule_id


def schedule_stream_id(schedule_id: str) -> str:
    return SCHEDULE_STREAM_PREFIX + check_schedule_id(schedule_id)


def is_schedule_stream(stream_id: str) -> bool:
    return stream_id.startswith(SCHEDULE_STREAM_PREFIX)


def schedule_of_stream(stream_id: str) -> str:
    return stream_id.removeprefix(SCHEDULE_STREAM_PREFIX)


def is_pool_stream(stream_id: str) -> bool:
    """A pool's stream, not an order's or a schedule's (their prefixes hold a ``~``, which no pool id does)."""
    return "~" not in stream_id
