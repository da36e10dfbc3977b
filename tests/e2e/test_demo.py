"""README command (a), as a user runs it: the pool survives restarts of the process."""

import subprocess
import sys
from pathlib import Path

from capacity_service.adapters.codec import Codec
from capacity_service.adapters.journal.sql import SqlJournal
from capacity_service.application.recovery import recover_pool
from capacity_service.entrypoints.demo import DEMO_POOL
from capacity_service.settings import SqlJournalSettings


def run_demo_process(data_dir: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "capacity_service", "--data-dir", str(data_dir), "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


def test_demo_pool_survives_process_restarts(tmp_path: Path) -> None:
    first = run_demo_process(tmp_path)
    second = run_demo_process(tmp_path)
    assert "created pool" in first
    assert "recovered" in second and "2/10 reserved" in second
    with SqlJournal(SqlJournalSettings(url=f"sqlite:///{tmp_path / 'capacity.db'}")) as journal:
        state = recover_pool(journal, Codec(), DEMO_POOL).state
        assert list(journal.pool_ids()) == [DEMO_POOL]
    # Each run reserved 2 units once, though it sent its request twice.
    assert state.reserved == 4
    assert len(state.reservations) == 2
