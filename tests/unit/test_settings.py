"""Settings refuse combinations that cannot work, at construction (from Serve args or the environment)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from capacity_service.settings import ReadSideSettings


def test_a_mirror_whose_long_poll_outlasts_its_freshness_is_refused() -> None:
    ReadSideSettings(mirror_wait_s=0.25, mirror_interval_s=0.05, mirror_stale_after_s=1.0)
    with pytest.raises(ValidationError, match="mirror_stale_after_s"):
        ReadSideSettings(mirror_wait_s=0.5, mirror_interval_s=0.05, mirror_stale_after_s=1.0)
