"""The Python client over the in-process service (a ``PoolHost`` on the in-memory journal)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from capacity_service.adapters.journal import JournalUnavailable
from capacity_service.errors import OutcomeUnknown
from tests.support.in_process import InProcessBackend


def test_errors_of_reserves_decided_together_each_name_their_own_request_id(monkeypatch: pytest.MonkeyPatch) -> None:
    """One journal failure answers a whole batch with one error; each caller must still be told its own
    request id, the one that settles its outcome."""
    backend = InProcessBackend()

    def broken(appends: Any) -> Any:
        time.sleep(0.05)  # the others queue up meanwhile and are written (and fail) together
        raise JournalUnavailable("connection lost during commit")

    async def scenario() -> None:
        await backend.client.configure_pool("p1", 100, "north")
        monkeypatch.setattr(backend.journal, "append_many", broken)
        ids = [f"order-{k}" for k in range(4)]
        answers = await asyncio.gather(
            *(backend.client.reserve("p1", request_id=i) for i in ids), return_exceptions=True
        )
        assert all(isinstance(a, OutcomeUnknown) for a in answers), answers
        assert [a.request_id for a in answers if isinstance(a, OutcomeUnknown)] == ids

    asyncio.run(scenario())
