"""Settings refuse combinations that cannot work, at construction (from Serve args or the environment)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from capacity_service.settings import CassandraJournalSettings, ReadSideSettings, SqlJournalSettings


def test_a_mirror_whose_long_poll_outlasts_its_freshness_is_refused() -> None:
    ReadSideSettings(mirror_wait_s=0.25, mirror_interval_s=0.05, mirror_stale_after_s=1.0)
    with pytest.raises(ValidationError, match="mirror_stale_after_s"):
        ReadSideSettings(mirror_wait_s=0.5, mirror_interval_s=0.05, mirror_stale_after_s=1.0)


def test_each_journal_names_its_store_as_logs_and_metrics_show_it() -> None:
    assert SqlJournalSettings(url="sqlite:///data/capacity.db").store == "sqlite"
    assert SqlJournalSettings(url="postgresql+psycopg://u@127.0.0.1/db").store == "postgresql"
    assert CassandraJournalSettings().store == "cassandra"
