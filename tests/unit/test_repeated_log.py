import logging

import pytest

from capacity_service.application.repeated_log import RepeatedFailureLog


def test_a_repeated_failure_is_logged_once_per_interval_with_how_often(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    failures = RepeatedFailureLog(logging.getLogger("test.repeated"), interval_s=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.repeated"):
        for second in range(25):
            now[0] = 100.0 + second
            for pool in range(100):
                failures.warning("write:JournalUnavailable", "pool %s: journal write failed: %s", pool, "down")
        failures.warning("start:JournalUnavailable", "pools %s cannot be started: %s", [1], "down")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "pool 0: journal write failed: down",
        "pool 0: journal write failed: down (and 999 more like it in the last 10 s)",
        "pool 0: journal write failed: down (and 999 more like it in the last 10 s)",
        "pools [1] cannot be started: down",
    ]
