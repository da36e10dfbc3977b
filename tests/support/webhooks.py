"""What webhook tests share: writing events into a journal as pools and orders do, and a receiver."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from capacity_service.adapters.codec import Codec, OrderCodec
from capacity_service.adapters.journal import Journal, NewEvent
from capacity_service.application.webhook_signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from capacity_service.domain import PoolEvent
from capacity_service.domain.order import OrderEvent


class Appender:
    """Appends events to streams of a journal, one writer epoch per stream (as a pool's writer does)."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self._heads: dict[str, tuple[int, int]] = {}
        self._codec, self._order_codec = Codec(), OrderCodec()

    def pool(self, pool_id: str, *events: PoolEvent) -> int:
        return self.raw(pool_id, *(self._encoded(self._codec.encode_event(e)) for e in events))

    def order(self, stream_id: str, *events: OrderEvent) -> int:
        return self.raw(stream_id, *(self._encoded(self._order_codec.encode_event(e)) for e in events))

    def raw(self, stream_id: str, *events: NewEvent) -> int:
        epoch, seq_nr = self._heads.get(stream_id) or (self._journal.claim_epoch(stream_id), 0)
        seq_nr = self._journal.append(stream_id, seq_nr, epoch, list(events))
        self._heads[stream_id] = (epoch, seq_nr)
        return seq_nr

    @staticmethod
    def _encoded(encoded: Any) -> NewEvent:
        return NewEvent(encoded.event_type, encoded.schema_version, encoded.payload)


def waitlist_offered(pool_id: str, quantity: int, reservation_id: str) -> NewEvent:
    """A synthetic ``WaitlistOffered`` as the waitlist stores it (pool_id, entry, request_id, reservation_id,
    quantity, expires_at)."""
    payload = {
        "pool_id": pool_id,
        "entry_id": "entry-1",
        "request_id": "wait-1",
        "reservation_id": reservation_id,
        "quantity": quantity,
        "expires_at": "2026-12-01T08:00:00+00:00",
    }
    return NewEvent("WaitlistOffered", 1, json.dumps(payload).encode())


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


@dataclass
class Receiver:
    """A real HTTP receiver on 127.0.0.1 that checks every signature; ``status`` is what it answers."""

    secret: str
    status: int = 200
    received: list[Received] = field(default_factory=list)
    bad_signatures: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, port: int = 0) -> int:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                ok = verify(
                    receiver.secret,
                    headers.get(TIMESTAMP_HEADER.lower(), ""),
                    headers.get(SIGNATURE_HEADER.lower(), ""),
                    body,
                )
                with receiver._lock:
                    if not ok:
                        receiver.bad_signatures += 1
                    status = receiver.status if ok else 401
                    if 200 <= status < 300:
                        receiver.received.append(Received(headers, body))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return int(self._server.server_address[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.event for r in self.received]


def first_deliveries(events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each event at its first delivery (delivery is at least once: a restart may send some again)."""
    seen: set[str] = set()
    firsts = []
    for event in events:
        if event["id"] not in seen:
            seen.add(event["id"])
            firsts.append(event)
    return firsts


def in_order_per_stream(events: Sequence[dict[str, Any]]) -> bool:
    """Each stream's events arrived in journal order (ids ``<stream>/<seq_nr>/<n>``), counting each event at
    its first delivery."""
    last: dict[str, tuple[int, int]] = {}
    for event in first_deliveries(events):
        stream, seq_nr, n = event["id"].rsplit("/", 2)
        place = (int(seq_nr), int(n))
        if place <= last.get(stream, (0, -1)):
            return False
        last[stream] = place
    return True
