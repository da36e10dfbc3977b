"""Webhook delivery, without Ray: registrations, a durable cursor per webhook and stream, and the loop that
reads the journal after the cursors and POSTs each webhook event, signed, until the receiver answers 2xx.

- **From the journal, never from the request path.** The hosts of pools and orders say which streams moved
  (``streams_moved``, their newest seq_nr, a message every few hundred ms), and every ``poll_interval_s``
  one heads query says it of every stream (what a lost message missed); each webhook reads the events after
  its cursor of the streams that moved (``webhook_events.EventMapper`` folds them into webhook events) into
  a bounded queue (``max_pending_events``): what does not fit waits in the journal. A stream's move costs
  in proportion to it: every order is a stream, and a heads query grows with every one ever placed.
- **In order per stream, at least once.** A stream's events go one at a time, in journal order; up to
  ``max_concurrent_streams`` streams of one webhook at once. A cursor moves past a stored event only once
  every webhook event made from it was acknowledged, and is saved every ``cursor_save_interval_s``: after a
  restart, what was delivered since the last save is sent again (receivers deduplicate by event id).
- **Retried with backoff.** A failed POST (not 2xx, a timeout, a refused connection) makes the webhook wait,
  exponentially longer from ``initial_backoff_s`` to ``max_backoff_s``, half of each wait random (jitter),
  then try again; it never gives up. Other webhooks are not held back.
- **Targets.** A URL is checked at registration, and the host's addresses again at every POST (the
  transport's part): no private targets unless ``allow_private_targets`` (``webhook_targets.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import re
import secrets as token_source
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Protocol

from capacity_service.adapters.journal import Journal
from capacity_service.adapters.webhooks import CursorRecord, WebhookRecord, WebhookStore
from capacity_service.adapters.webhooks.targets import (
    TargetRefused,
    check_addresses,
    checked_url,
    is_local_name,
    literal_address,
    port_of,
    refusal,
)
from capacity_service.application.metrics import NO_WEBHOOK_METRICS, WebhookMetrics
from capacity_service.application.webhook_events import (
    EVENT_TYPES,
    EventMapper,
    Fold,
    WebhookEvent,
    decode_fold,
    encode_fold,
    new_fold,
)
from capacity_service.application.webhook_signing import signed_headers
from capacity_service.errors import InvalidRequest, TooManyWebhooks, WebhookNotFound
from capacity_service.models import Webhook, WebhookStatus
from capacity_service.settings import WebhookSettings

log = logging.getLogger(__name__)

WEBHOOK_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")
MIN_SECRET_LENGTH = 16
MAX_SECRET_LENGTH = 512
# Stored events one stream's read takes at most per scan (the next scan goes on): the loop stays responsive.
_MAX_READ_PER_SCAN = 5_000
# Units (stored events with something to send) a stream delivers per round before others get a turn.
_UNITS_PER_ROUND = 64
# The page the journal the deliveries read is fetched in (``fetch_size``): a scan takes a share of the queue
# from each stream behind, often a few events, and a page of 2,000 fetched for them made a receiver back
# after an outage wait on reads (9 ms a stream on SQLite, against 0.6 ms with pages of 64).
JOURNAL_PAGE_EVENTS = 64


class WebhookTransport(Protocol):
    """The network, as delivery needs it (``adapters/webhooks/http.py``)."""

    async def resolve(self, host: str, port: int) -> list[str]:
        """The host's addresses (``OSError`` when it resolves to none)."""
        ...

    async def post(self, url: str, headers: dict[str, str], body: bytes, timeout_s: float, allow_private: bool) -> int:
        """POST and return the status; raises ``TargetRefused`` when the host resolves to an address
        webhooks may not reach (unless ``allow_private``), and any other error when the POST fails."""
        ...

    async def aclose(self) -> None:
        """Close its connections (the deliveries are stopped)."""
        ...


class WebhookAdmin(Protocol):
    """The operator's calls on webhooks (the HTTP routes and the client's methods go through it)."""

    async def put_webhook(
        self, webhook_id: str, url: str, events: Sequence[str], secret: str
    ) -> tuple[Webhook, bool]: ...

    async def list_webhooks(self) -> list[Webhook]: ...

    async def get_webhook(self, webhook_id: str) -> Webhook: ...

    async def delete_webhook(self, webhook_id: str) -> Webhook: ...


def backoff_s(failures: int, initial_s: float, max_s: float, rng: Callable[[], float] = random.random) -> float:
    """The wait after ``failures`` failures in a row (1, 2, ...): ``d = min(max_s, initial_s * 2**(failures-1))``,
    half of it fixed and half random (jitter): between d/2 and d, so that the receivers of a recovered
    outage are not all hit at the same moment, and the wait still grows."""
    ceiling = min(max_s, initial_s * 2.0 ** min(max(failures - 1, 0), 60))
    return ceiling / 2 + rng() * ceiling / 2


@dataclass(slots=True)
class _Unit:
    """A stored event with webhook events to send, and the fold after it (and after any events with
    nothing to send that followed it: delivering this unit covers them too)."""

    seq_nr: int
    state: bytes
    events: list[WebhookEvent]
    sent: int = 0
    failures: int = 0


@dataclass(slots=True)
class _Stream:
    stream_id: str
    cursor_seq: int  # delivered up to here (its fold: cursor_state)
    cursor_state: bytes | None  # None: a stream never folded yet
    scanned_seq: int  # read from the journal up to here (its fold: fold)
    fold: Fold
    units: deque[_Unit] = field(default_factory=deque)


class _Delivery:
    """One webhook's delivery: its cursors, its queue, its loop."""

    def __init__(
        self,
        record: WebhookRecord,
        settings: WebhookSettings,
        store: WebhookStore,
        journal: Journal,
        transport: WebhookTransport,
        metrics: WebhookMetrics,
        rng: Callable[[], float],
    ) -> None:
        self.record = record
        self._settings = settings
        self._store = store
        self._journal = journal
        self._transport = transport
        self._metrics = metrics
        self._rng = rng
        self._mapper = EventMapper()
        self._streams: dict[str, _Stream] | None = None  # None until the cursors are loaded
        self._dirty: set[str] = set()
        self._heads: dict[str, int] = {}  # the service's, shared by every webhook's delivery
        self._moved: set[str] = set()  # streams whose head may be past what was read of them
        self._pending = 0
        self._more_to_read = False
        self._wake = asyncio.Event()
        self._retry_now = False
        self._saving: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_save = time.monotonic()
        self._next_attempt_at = 0.0
        self.delivered = 0
        self.attempts = 0
        self.retries = 0
        self.failures_in_a_row = 0
        self.last_error: str | None = None
        self.last_delivered_at: datetime | None = None

    # ------------------------------------------------------------------ life

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self, save: bool) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None
        if self._saving is not None:  # a save the cancel interrupted goes on in its thread: let it end
            with contextlib.suppress(Exception):
                await self._saving
        if save and self._streams is not None:
            # Every cursor, not only those marked since the last save: that save may have failed.
            self._dirty = {stream_id for stream_id, s in self._streams.items() if s.cursor_state is not None}
            with contextlib.suppress(Exception):
                await self._save()

    def changed(self, record: WebhookRecord) -> None:
        """The operator changed the webhook (a new URL, secret or event types): a delivery waiting to
        retry tries again at once."""
        self.record = record
        self._retry_now = True
        self._wake.set()

    def heads_moved(self, heads: dict[str, int], moved: Iterable[str] | None = None) -> None:
        """The heads of every stream (``heads``, shared, kept up to date by the caller); ``moved``: the streams
        that moved since the last call, or None when every stream may have (a heads query)."""
        self._heads = heads
        candidates = heads if moved is None else moved
        behind = {stream_id for stream_id in candidates if heads.get(stream_id, 0) > self._scanned(stream_id)}
        if behind or self._streams is None:
            self._moved |= behind
            self._wake.set()

    def _scanned(self, stream_id: str) -> int:
        stream = None if self._streams is None else self._streams.get(stream_id)
        return 0 if stream is None else stream.scanned_seq

    async def _run(self) -> None:
        while True:
            try:
                if self._streams is None:
                    await self._load()
                await self._scan()
                failures = await self._deliver_round()
                if self._dirty and time.monotonic() - self._last_save >= self._settings.cursor_save_interval_s:
                    await self._save()
                if failures:
                    self.failures_in_a_row += 1
                    # As long as the event that failed most has failed: a receiver that refuses one pool's
                    # event and takes the others' is not asked again for it at the first step's pace.
                    wait = self._backoff(max(failures, self.failures_in_a_row))
                    self._next_attempt_at = time.monotonic() + wait
                    await self._sleep(wait, wakeable=False)
                    self._next_attempt_at = 0.0
                elif self._pending == 0 and not self._more_to_read:
                    await self._sleep(self._idle_wait(), wakeable=True)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the journal or the store failed: try again after a wait
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.failures_in_a_row += 1
                log.warning("webhook %s: %s", self.record.webhook_id, self.last_error)
                await self._sleep(self._backoff(), wakeable=False)

    def _backoff(self, failures: int | None = None) -> float:
        settings = self._settings
        failures = self.failures_in_a_row if failures is None else failures
        return backoff_s(failures, settings.initial_backoff_s, settings.max_backoff_s, self._rng)

    def _idle_wait(self) -> float:
        if self._dirty:
            return max(0.0, self._last_save + self._settings.cursor_save_interval_s - time.monotonic())
        return 3600.0  # until the heads move

    async def _sleep(self, seconds: float, wakeable: bool) -> None:
        if not wakeable:
            # A backoff ends early only to save cursors on time; then it goes on waiting.
            self._retry_now = False
            deadline = time.monotonic() + seconds
            while (left := deadline - time.monotonic()) > 0 and not self._retry_now:
                await asyncio.sleep(min(left, self._settings.cursor_save_interval_s, 0.1))
                if self._dirty:
                    await self._save()
            return
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _load(self) -> None:
        record = self.record
        saved = await asyncio.to_thread(self._store.cursors, record.webhook_id, record.generation)
        self._streams = {
            stream_id: _Stream(
                stream_id,
                cursor.seq_nr,
                cursor.state,
                cursor.seq_nr,
                decode_fold(stream_id, cursor.state),
            )
            for stream_id, cursor in saved.items()
        }

    # ------------------------------------------------------------------ reading the journal

    async def _scan(self) -> None:
        """Read the streams whose head is past what was read, into the queue, as far as it has room (all of
        them in one trip to a worker thread: a trip per stream took longer than the reads)."""
        assert self._streams is not None
        self._more_to_read = False
        heads = self._heads
        behind = sorted(stream_id for stream_id in self._moved if heads.get(stream_id, 0) > self._scanned(stream_id))
        self._moved = set(behind)
        if not behind or self._pending >= self._settings.max_pending_events:
            return  # a full queue: reading goes on as it empties
        for stream_id in behind:
            if stream_id not in self._streams:
                self._streams[stream_id] = _Stream(stream_id, 0, None, 0, new_fold(stream_id))
        self._moved = set()  # streams that move during the read are added to it again
        await asyncio.to_thread(self._read_all, [self._streams[stream_id] for stream_id in behind])
        self._moved |= {s for s in behind if self._heads.get(s, 0) > self._scanned(s)}  # not all read: its queue filled

    def _read_all(self, streams: list[_Stream]) -> None:
        """Each stream gets its share of the queue's room, so that a backlog (a receiver back after an
        outage) is delivered from many streams at once; one that took all of it was delivered alone, one
        POST at a time."""
        share = max(1, (self._settings.max_pending_events - self._pending) // len(streams))
        for stream in streams:
            if self._pending >= self._settings.max_pending_events:
                self._more_to_read = True
                return
            self._read(stream, share)

    def _read(self, stream: _Stream, share: int) -> None:
        """The events after what was read of ``stream``, folded; those this webhook is sent are queued, up to
        about ``share`` of them."""
        record = self.record
        wanted = set(record.event_types)
        read = queued = 0
        for stored in islice(self._journal.read(stream.stream_id, stream.scanned_seq + 1), _MAX_READ_PER_SCAN):
            read += 1
            made = self._mapper.map(stream.stream_id, stream.fold, stored)
            stream.scanned_seq = stored.seq_nr
            events = [e for e in made if e.event_type in wanted] if stored.recorded_at >= record.created_at else []
            state = encode_fold(stream.fold)
            if events:
                stream.units.append(_Unit(stored.seq_nr, state, events))
                self._pending += len(events)
                queued += len(events)
                if queued >= share or self._pending >= self._settings.max_pending_events:
                    self._more_to_read = True
                    break
            elif stream.units:
                stream.units[-1].seq_nr, stream.units[-1].state = stored.seq_nr, state
            else:
                stream.cursor_seq, stream.cursor_state = stored.seq_nr, state
                self._dirty.add(stream.stream_id)
        if read >= _MAX_READ_PER_SCAN:
            self._more_to_read = True

    # ------------------------------------------------------------------ delivering

    async def _deliver_round(self) -> int:
        """Deliver what is queued, the oldest first, up to ``max_concurrent_streams`` streams at once (each
        one freed takes the next: a slow stream does not hold the others back); 0 if every POST was
        acknowledged, else how many times the event that failed most has failed (after a failure no other
        stream is started this round)."""
        assert self._streams is not None
        ready = [stream for stream in self._streams.values() if stream.units]
        if not ready:
            return 0
        ready.sort(key=lambda stream: stream.units[0].events[stream.units[0].sent].occurred_at)
        waiting = iter(ready)  # shared by the workers: each stream is taken once
        worst = 0

        async def worker() -> None:
            nonlocal worst
            for stream in waiting:
                if worst:
                    return
                if not await self._deliver_stream(stream):
                    worst = max(worst, stream.units[0].failures)

        await asyncio.gather(*(worker() for _ in range(min(len(ready), self._settings.max_concurrent_streams))))
        return worst

    async def _deliver_stream(self, stream: _Stream) -> bool:
        for _ in range(_UNITS_PER_ROUND):
            if not stream.units:
                return True
            unit = stream.units[0]
            while unit.sent < len(unit.events):
                if not await self._post(unit.events[unit.sent], unit):
                    return False
                unit.sent += 1
                self._pending -= 1
            stream.units.popleft()
            stream.cursor_seq, stream.cursor_state = unit.seq_nr, unit.state
            self._dirty.add(stream.stream_id)
        return True

    async def _post(self, event: WebhookEvent, unit: _Unit) -> bool:
        record = self.record
        body = event.body()
        headers = signed_headers(record.secret, record.webhook_id, event.event_id, event.event_type, body)
        self.attempts += 1
        if unit.failures:
            self.retries += 1
            self._metrics.retried(record.webhook_id)
        try:
            status = await self._transport.post(
                record.url, headers, body, self._settings.request_timeout_s, self._settings.allow_private_targets
            )
            error = None if 200 <= status < 300 else f"the receiver answered HTTP {status}"
        except TargetRefused as exc:
            error = f"target refused: {exc}"
        except Exception as exc:  # the receiver is down, slow or unreachable: retried
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if error is not None:
            unit.failures += 1
            if error != self.last_error:
                log.warning("webhook %s: delivering %s failed: %s", record.webhook_id, event.event_id, error)
            self.last_error = error
            self._metrics.failed(record.webhook_id)
            return False
        self.delivered += 1
        self.failures_in_a_row = 0
        self.last_error = None
        now = datetime.now(UTC)
        self.last_delivered_at = now
        self._metrics.delivered(record.webhook_id, max(0.0, (now - event.occurred_at).total_seconds()))
        return True

    async def _save(self) -> None:
        if not self._dirty or self._streams is None:
            return
        dirty, self._dirty = self._dirty, set()
        cursors = []
        for stream_id in dirty:
            stream = self._streams[stream_id]
            if stream.cursor_state is not None:
                cursors.append(CursorRecord(stream_id, stream.cursor_seq, stream.cursor_state))
        record = self.record
        self._saving = asyncio.ensure_future(
            asyncio.to_thread(self._store.save_cursors, record.webhook_id, record.generation, cursors)
        )
        try:
            # Shielded: a stop cancels this task, never the write (``stop`` waits for it to end).
            await asyncio.shield(self._saving)
        except Exception:
            self._dirty |= dirty
            raise
        self._last_save = time.monotonic()

    # ------------------------------------------------------------------ status

    def status(self) -> WebhookStatus:
        streams = self._streams or {}
        behind = sum(
            max(0, head - (streams[stream_id].cursor_seq if stream_id in streams else 0))
            for stream_id, head in self._heads.items()
        )
        oldest = min(
            (s.units[0].events[s.units[0].sent].occurred_at for s in streams.values() if s.units), default=None
        )
        seconds = 0.0 if oldest is None else max(0.0, (datetime.now(UTC) - oldest).total_seconds())
        return WebhookStatus(
            delivered=self.delivered,
            attempts=self.attempts,
            retries=self.retries,
            failures_in_a_row=self.failures_in_a_row,
            last_error=self.last_error,
            last_delivered_at=self.last_delivered_at,
            events_behind=behind,
            pending=self._pending,
            seconds_behind=seconds,
            next_attempt_in_s=max(0.0, self._next_attempt_at - time.monotonic()) if self._next_attempt_at else 0.0,
        )

    def show_metrics(self) -> None:
        status = self.status()
        self._metrics.show(self.record.webhook_id, status.events_behind, status.pending, status.seconds_behind)


class WebhookDeliveries(WebhookAdmin):
    """Every webhook of the service: their registrations (the operator's calls) and their deliveries. One
    runs per service (the ``webhooks`` actor), the single writer of the webhooks' cursors."""

    def __init__(
        self,
        settings: WebhookSettings,
        open_store: Callable[[], WebhookStore],
        open_journal: Callable[[], Journal],
        transport: WebhookTransport,
        metrics: WebhookMetrics = NO_WEBHOOK_METRICS,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._settings = settings
        self._open_store = open_store
        self._open_journal = open_journal
        self._transport = transport
        self._metrics = metrics
        self._rng = rng
        self._store: WebhookStore | None = None
        self._journal: Journal | None = None
        self._deliveries: dict[str, _Delivery] | None = None  # None until the registrations are loaded
        self._heads: dict[str, int] = {}  # every stream's newest seq_nr, as the heads query and hosts told it
        self._admin = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.last_error: str | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    def streams_moved(self, heads: dict[str, int]) -> None:
        """Streams that moved, with their newest seq_nr (told by their hosts as their events become durable):
        each webhook reads them now, not at the next heads query."""
        if not self._deliveries:  # no webhook: nothing to read, nothing kept
            return
        known = self._heads
        moved = [stream_id for stream_id, seq_nr in heads.items() if seq_nr > known.get(stream_id, 0)]
        for stream_id in moved:
            known[stream_id] = heads[stream_id]
        if moved:
            for delivery in self._running():
                delivery.heads_moved(known, moved)

    async def _run(self) -> None:
        """Load the registrations, then hand every webhook the journal's heads every ``poll_interval_s``."""
        failures = 0
        while True:
            try:
                running = await self._loaded()
                if running:  # no webhook, no reads: the journal is not polled for nothing
                    journal = await self._journal_opened()
                    heads = await asyncio.to_thread(journal.heads)
                    for stream_id, seq_nr in self._heads.items():  # told since the query read it
                        if seq_nr > heads.get(stream_id, 0):
                            heads[stream_id] = seq_nr
                    self._heads = heads
                    for delivery in self._running():
                        delivery.heads_moved(heads)
                failures, self.last_error = 0, None
                wait = self._settings.poll_interval_s
            except Exception as exc:
                failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("webhooks: %s", self.last_error)
                wait = backoff_s(failures, self._settings.initial_backoff_s, self._settings.max_backoff_s, self._rng)
            await asyncio.sleep(wait)

    def _running(self) -> Iterable[_Delivery]:
        return list((self._deliveries or {}).values())

    async def _loaded(self) -> dict[str, _Delivery]:
        if self._deliveries is None:
            async with self._admin:
                if self._deliveries is None:
                    store = await self._store_opened()
                    records = await asyncio.to_thread(store.all)
                    deliveries = {}
                    for record in records:
                        deliveries[record.webhook_id] = await self._delivery(record)
                    self._deliveries = deliveries
        return self._deliveries

    async def _delivery(self, record: WebhookRecord) -> _Delivery:
        delivery = _Delivery(
            record,
            self._settings,
            await self._store_opened(),
            await self._journal_opened(),
            self._transport,
            self._metrics,
            self._rng,
        )
        delivery.heads_moved(self._heads)
        delivery.start()
        return delivery

    async def _store_opened(self) -> WebhookStore:
        if self._store is None:
            self._store = await asyncio.to_thread(self._open_store)
        return self._store

    async def _journal_opened(self) -> Journal:
        if self._journal is None:
            self._journal = await asyncio.to_thread(self._open_journal)
        return self._journal

    # ------------------------------------------------------------------ the operator's calls

    async def put_webhook(self, webhook_id: str, url: str, events: Sequence[str], secret: str) -> tuple[Webhook, bool]:
        """Register a webhook or change one (its cursors stay: a changed URL gets what the old one had not)."""
        _check_id(webhook_id)
        event_types = _checked_events(events)
        if not MIN_SECRET_LENGTH <= len(secret) <= MAX_SECRET_LENGTH:
            raise InvalidRequest(f"secret: {MIN_SECRET_LENGTH} to {MAX_SECRET_LENGTH} characters")
        await self._check_target(url)
        deliveries = await self._loaded()
        store = await self._store_opened()
        async with self._admin:
            existing = deliveries.get(webhook_id)
            if existing is not None:
                record = dataclasses.replace(existing.record, url=url, event_types=event_types, secret=secret)
            else:
                if len(deliveries) >= self._settings.max_webhooks:
                    raise TooManyWebhooks(
                        f"{len(deliveries)} webhooks are registered, the most webhooks.max_webhooks allows"
                    )
                record = WebhookRecord(
                    webhook_id, url, event_types, secret, token_source.token_hex(8), datetime.now(UTC)
                )
            await asyncio.to_thread(store.put, record)
            if existing is not None:
                existing.changed(record)
            else:
                deliveries[webhook_id] = await self._delivery(record)
        log.info("operator: webhook %s registered for %s", webhook_id, ", ".join(event_types))
        return _model(record), existing is None

    async def list_webhooks(self) -> list[Webhook]:
        deliveries = await self._loaded()
        return [_model(deliveries[webhook_id].record) for webhook_id in sorted(deliveries)]

    async def get_webhook(self, webhook_id: str) -> Webhook:
        delivery = (await self._loaded()).get(webhook_id)
        if delivery is None:
            raise WebhookNotFound(webhook_id)
        return _model(delivery.record, delivery.status())

    async def delete_webhook(self, webhook_id: str) -> Webhook:
        deliveries = await self._loaded()
        store = await self._store_opened()
        async with self._admin:
            delivery = deliveries.get(webhook_id)
            if delivery is None:
                raise WebhookNotFound(webhook_id)
            await delivery.stop(save=False)
            await asyncio.to_thread(store.delete, webhook_id)
            del deliveries[webhook_id]
        log.info("operator: webhook %s deleted", webhook_id)
        return _model(delivery.record)

    async def _check_target(self, url: str) -> None:
        parts = checked_url(url)
        if self._settings.allow_private_targets:
            return
        host = parts.hostname or ""
        if is_local_name(host):
            raise InvalidRequest(f"url: {host} is a loopback name (webhooks.allow_private_targets is off)")
        literal = literal_address(host)
        try:
            if literal is not None:
                why = refusal(literal)
                if why is not None:
                    raise TargetRefused(why)
                return
            try:
                addresses = await self._transport.resolve(host, port_of(parts))
            except OSError as exc:
                raise InvalidRequest(f"url: {host} does not resolve ({exc})") from None
            check_addresses(host, addresses)
        except TargetRefused as exc:
            raise InvalidRequest(f"url: {exc} (webhooks.allow_private_targets is off)") from None

    # ------------------------------------------------------------------ status and life

    def show_metrics(self) -> None:
        for delivery in self._running():
            delivery.show_metrics()

    def status(self) -> dict[str, object]:
        return {
            "loaded": self._deliveries is not None,
            "webhooks": len(self._deliveries or {}),
            "last_error": self.last_error,
        }

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        for delivery in self._running():
            await delivery.stop(save=True)
        await self._transport.aclose()
        for resource in (self._store, self._journal):
            if resource is not None:
                resource.close()


def _check_id(webhook_id: str) -> None:
    if WEBHOOK_ID_PATTERN.fullmatch(webhook_id) is None:
        raise InvalidRequest(f"webhook id must be 1-128 characters of [A-Za-z0-9._:-], got {webhook_id!r:.140}")


def _checked_events(events: Sequence[str]) -> tuple[str, ...]:
    unknown = sorted(set(events) - set(EVENT_TYPES))
    if unknown:
        raise InvalidRequest(f"events: unknown {unknown}; known: {list(EVENT_TYPES)}")
    if not events:
        raise InvalidRequest("events: at least one")
    return tuple(dict.fromkeys(events))


def _model(record: WebhookRecord, status: WebhookStatus | None = None) -> Webhook:
    return Webhook(
        webhook_id=record.webhook_id,
        url=record.url,
        events=list(record.event_types),
        created_at=record.created_at,
        status=status,
    )
