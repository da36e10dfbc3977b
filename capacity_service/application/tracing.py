"""The id of the request being answered (HTTP's ``X-Request-ID``), carried with its commands to their pool,
so that every log line about a request names it: a context variable, set by the HTTP edge, read by the
router when it sends a command, and set by a pool host while it writes a batch (the ids of its requests)."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from typing import Any

current: ContextVar[str | None] = ContextVar("capacity_request_id", default=None)


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


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the request id when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            line["request_id"] = request_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def log_to_stderr(json_lines: bool) -> None:
    """The service's log lines (INFO and up) to this process's stderr, as text or JSON lines, each stamped
    with its request id (a Ray worker's stderr is its log file). Idempotent."""
    install_log_stamp()
    logger = logging.getLogger("capacity_service")
    if any(getattr(h, "_capacity_service", False) for h in logger.handlers):
        return
    # The process's own stderr: Serve replaces sys.stderr in a replica with a logger at Serve's level.
    handler: logging.Handler = logging.StreamHandler(sys.__stderr__ or sys.stderr)
    handler.setFormatter(
        JsonFormatter() if json_lines else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handler._capacity_service = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
