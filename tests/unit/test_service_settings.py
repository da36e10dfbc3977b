"""The running service's settings: how the shard count is fixed, and which differences a redeploy or a
client may not bring (``runtime/service.py``). No Ray: the cluster's CPUs are a stand-in."""

from __future__ import annotations

import pytest

from capacity_service.errors import SettingsMismatch
from capacity_service.runtime import _ray, service
from capacity_service.settings import (
    CassandraJournalSettings,
    HostingSettings,
    HttpSettings,
    ServiceSettings,
    SnapshotSettings,
)


@pytest.fixture
def cluster_cpus(monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    cpus = {"count": 6.0}
    monkeypatch.setattr(_ray, "pool_host_cpus", lambda resources: cpus["count"])
    return cpus


def test_shards_default_to_the_pool_host_cpus_and_to_one_on_sqlite(cluster_cpus: dict[str, float]) -> None:
    cassandra = ServiceSettings(journal=CassandraJournalSettings())
    assert service.with_shards_counted(cassandra).hosting.shards == 6
    assert service.with_shards_counted(ServiceSettings()).hosting.shards == 1  # SQLite: one writer at a time
    given = ServiceSettings(journal=CassandraJournalSettings(), hosting=HostingSettings(shards=3))
    assert service.with_shards_counted(given).hosting.shards == 3
    cluster_cpus["count"] = 0
    with pytest.raises(SettingsMismatch, match="no alive node"):
        service.with_shards_counted(cassandra)


def test_only_http_settings_may_differ_from_the_running_service() -> None:
    running = ServiceSettings(hosting=HostingSettings(shards=2))
    assert service.actor_setting_differences(running, running.model_copy(update={"http": HttpSettings()})) == []
    unset = ServiceSettings(hosting=HostingSettings(shards=None))  # agrees with any counted shard count
    assert service.actor_setting_differences(running, unset) == []
    other = ServiceSettings(hosting=HostingSettings(shards=3), snapshots=SnapshotSettings(every_n_events=5))
    assert service.actor_setting_differences(running, other) == ["snapshots.every_n_events", "hosting.shards"]
