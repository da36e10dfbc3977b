"""Every HTTP request gets an id: the client's ``X-Request-ID`` when it sends a usable one, else one made
here. It is returned in the answer's ``X-Request-ID`` header, and every log line this process writes while
answering the request says ``request_id=...``, so an answer can be found in the logs. (It is a trace id,
apart from a reserve's ``request_id``, which is the idempotency key.)"""

from __future__ import annotations

import logging
import re
import uuid
from contextvars import ContextVar
from typing import Any

HEADER = b"x-request-id"

# What the service accepts as a client's id: visible ASCII, as HTTP header values are; anything else is
# replaced, so that log lines and answers never carry control characters or unbounded text.
_USABLE = re.compile(rb"^[\x21-\x7e]{1,128}$")

current: ContextVar[str | None] = ContextVar("capacity_http_request_id", default=None)


def request_id_of(header: bytes | None) -> str:
    if header is not None and _USABLE.match(header):
        return header.decode("ascii")
    return uuid.uuid4().hex


def install_log_stamp() -> None:
    """Make every log record created while a request is answered carry its id (in its message, so that any
    log format shows it). Idempotent."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "_stamps_request_ids", False):
        return

    def stamped(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        request_id = current.get()
        if request_id is not None:
            record.request_id = request_id
            record.msg = f"request_id={request_id} {record.msg}"
        return record

    stamped._stamps_request_ids = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(stamped)
