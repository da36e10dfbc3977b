"""Every HTTP request gets an id: the client's ``X-Request-ID`` when it sends a usable one, else one made
here. It is returned in the answer's ``X-Request-ID`` header, and every log line this process writes while
answering the request says ``request_id=...``, so an answer can be found in the logs. (It is a trace id,
apart from a reserve's ``request_id``, which is the idempotency key.)"""

from __future__ import annotations

import re
import uuid

from capacity_service.application import tracing

HEADER = b"x-request-id"

# What the service accepts as a client's id: visible ASCII, as HTTP header values are; anything else is
# replaced, so that log lines and answers never carry control characters or unbounded text.
_USABLE = re.compile(rb"^[\x21-\x7e]{1,128}$")

# The request being answered: the one context variable the router and the pool hosts read too.
current = tracing.current
install_log_stamp = tracing.install_log_stamp


def request_id_of(header: bytes | None) -> str:
    if header is not None and _USABLE.match(header):
        return header.decode("ascii")
    return uuid.uuid4().hex
