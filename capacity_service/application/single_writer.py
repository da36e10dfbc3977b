"""What a stream's single writer is, to the machinery that hosts it (``stream_runner``): pools
(``PoolWriter``) and orders (``OrderWriter``) are both."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from capacity_service.adapters.journal import AppendRequest, JournalError, JournalUnavailable

Outcome = TypeVar("Outcome")
Persisted = TypeVar("Persisted")


@dataclass(frozen=True, slots=True)
class BatchResult(Generic[Outcome, Persisted]):
    """The answer to each command of a batch, and the events it added (with whatever the writer keeps
    about each)."""

    outcomes: list[Outcome]
    persisted: list[Persisted]


@dataclass(frozen=True, slots=True)
class PreparedBatch(Generic[Outcome, Persisted]):
    """Commands decided and applied tentatively; ``append`` is what must become durable (None: nothing)."""

    result: BatchResult[Outcome, Persisted]
    append: AppendRequest | None


def landed_after_all(prepared: PreparedBatch[Any, Any], error: JournalError, seq_nr_now: int) -> bool:
    """Whether an append whose outcome was unknown (``JournalUnavailable``) is in the journal after all: appends
    are atomic and the writer is the stream's only one, so if the stream, re-read, ends exactly where the
    append would have left it, the append is the writer's own and durable."""
    assert prepared.append is not None
    expected_after = prepared.append.expected_seq_nr + len(prepared.append.events)
    return isinstance(error, JournalUnavailable) and seq_nr_now == expected_after


class SingleWriter(Protocol):
    """The single writer of one stream, as its runner uses it: deciding batches and settling their appends,
    its timer, and when it may be handed back."""

    @property
    def stream_id(self) -> str: ...
    @property
    def needs_reload(self) -> bool: ...
    @property
    def dormant(self) -> bool: ...
    def view(self) -> object: ...
    def reload(self) -> None: ...
    def prepare(self, commands: list[Any]) -> PreparedBatch[Any, Any]: ...
    def append_landed(self, prepared: PreparedBatch[Any, Any], new_seq_nr: int) -> None: ...
    def append_failed(self, prepared: PreparedBatch[Any, Any], error: JournalError) -> None: ...
    def repeats_known_request(self, command: Any) -> bool: ...
    def next_expiry(self) -> datetime | None: ...
    def timer_command(self) -> Any: ...
    def take_snapshot_if_due(self) -> object | None: ...
    def store_snapshot(self, captured: Any) -> bool: ...
