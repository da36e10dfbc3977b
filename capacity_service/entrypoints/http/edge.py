"""The outermost ASGI layer of the HTTP app: request ids, the bound on requests in flight, the body size
limit, and the fast lane.

The fast lane answers the hot calls (availability and reserve: most of the traffic) itself, with the same
operation functions the FastAPI routes call, so there is one implementation of each. It skips only the
framework's per-request machinery (middleware stack, routing, request objects), which cost about as much
CPU as the call's own work. Everything else, and every request the fast lane does not know, goes to the
FastAPI app.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from fastapi import FastAPI
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from capacity_service.entrypoints.http import request_ids
from capacity_service.entrypoints.http.auth import ApiKeys
from capacity_service.entrypoints.http.errors import capacity_error_response, error_response, internal_error_response
from capacity_service.entrypoints.http.routes import BY_OPERATION, PROBE_PATHS, STREAM_PATHS, route_of
from capacity_service.errors import CapacityError, Overloaded

# A JSON call: (request body, its content-type) -> the response. Contract errors are raised as
# ``CapacityError``s.
JsonOperation = Callable[[bytes, str], Awaitable[Response]]


class RequestMetrics(Protocol):
    def answered(self, route: str, status: int, seconds: float) -> None:
        """A request to ``route`` (its template: ids never become label values) was answered."""


class Edge:
    def __init__(
        self,
        app: FastAPI,
        limit: int,
        fast_lane: Mapping[tuple[str, str], JsonOperation] | None = None,
        keys: ApiKeys | None = None,
        max_in_flight: int | None = None,
        metrics: RequestMetrics | None = None,
    ) -> None:
        self.app = app
        self._metrics = metrics
        self.limit = limit
        self._fast_lane = dict(fast_lane or {})
        self._keys = keys
        self._max_in_flight = max_in_flight
        self._in_flight = 0

    def __getattr__(self, name: str) -> Any:  # openapi(), routes, ... of the wrapped app
        return getattr(self.app, name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_ids.request_id_of(_first_header(scope, request_ids.HEADER))
        token = request_ids.current.set(request_id)
        answer = _Answer(send, request_id.encode())
        started = time.perf_counter()
        try:
            await self._admit(scope, receive, answer.send)
        finally:
            request_ids.current.reset(token)
            if self._metrics is not None:
                self._metrics.answered(route_of(_route_path(scope)), answer.status, time.perf_counter() - started)

    async def _admit(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._max_in_flight is None or _route_path(scope) in _NOT_IN_FLIGHT:
            await self._answer(scope, receive, send)
            return
        if self._in_flight >= self._max_in_flight:  # refused at once, rather than answered late
            # Clients refused together are told different waits, so that they do not all come back at once.
            busy = Overloaded(
                f"{self._in_flight} requests are being answered; nothing was taken", retry_after_s=random.randint(1, 3)
            )
            if (scope["method"], _route_path(scope)) == _RESERVE:
                busy.request_id = await _reserve_request_id(receive, self.limit)
            await capacity_error_response(busy)(scope, receive, send)
            return
        self._in_flight += 1
        try:
            await self._answer(scope, receive, send)
        finally:
            self._in_flight -= 1

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._keys is not None:
            try:
                self._keys.require_reachable((scope.get("client") or (None,))[0])
            except CapacityError as exc:
                await capacity_error_response(exc)(scope, receive, send)
                return
        headers: dict[bytes, bytes] = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._reject(scope, receive, send)
            return
        # Bodies here are small: read the whole body first (at most limit + one chunk), then replay it.
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([], message, receive), send)
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                await self._reject(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        operation = self._fast_lane.get((scope["method"], _route_path(scope)))
        if operation is None:
            await self.app(scope, _replay(chunks, None, receive), send)
            return
        try:
            if self._keys is not None and self._keys.enabled:
                self._keys.require_key(_header(headers, b"authorization"))
            response = await operation(b"".join(chunks), _header(headers, b"content-type") or "")
        except CapacityError as exc:
            response = capacity_error_response(exc)
        except Exception as exc:
            response = internal_error_response(exc)
        await response(scope, receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(413, "payload_too_large", f"request body over {self.limit} bytes")
        await response(scope, receive, send)


# Health probes are answered whatever the load: a busy service is not a dead one.
# Probes answer whatever the load; streams are open-ended, with their own bound (the availability feed's).
_NOT_IN_FLIGHT = PROBE_PATHS | STREAM_PATHS
_RESERVE = (BY_OPERATION["reserve"].method, BY_OPERATION["reserve"].path)


async def _reserve_request_id(receive: Receive, limit: int) -> str:
    """The id a refused reserve was handled under, which every reserve answer carries: its own, or one made
    as the client makes them (nothing was taken under it)."""
    body = b""
    while len(body) <= limit:
        message = await receive()
        body += message.get("body", b"")
        if message["type"] != "http.request" or not message.get("more_body", False):
            break
    try:
        given = json.loads(body).get("request_id")
    except (ValueError, AttributeError):
        given = None
    return given if isinstance(given, str) and given else f"auto:{uuid.uuid4().hex}"


def _first_header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers") or ():
        if key == name:
            return bytes(value)
    return None


class _Answer:
    """``send``, with the request's id added to the answer's headers, and the status it was given kept
    (0: none was sent, the client went away first)."""

    __slots__ = ("_request_id", "_send", "status")

    def __init__(self, send: Send, request_id: bytes) -> None:
        self._send, self._request_id, self.status = send, request_id, 0

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != request_ids.HEADER]
            message = {**message, "headers": [*headers, (request_ids.HEADER, self._request_id)]}
        await self._send(message)


def _header(headers: dict[bytes, bytes], name: bytes) -> str | None:
    value = headers.get(name)
    return None if value is None else value.decode("latin-1")


def _route_path(scope: Scope) -> str:
    """The path the app routes on: without the root path it is mounted under (as Starlette does)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] == "/":
        return path[len(root) :]
    return path


def _replay(chunks: list[bytes], then: Message | None, original: Receive) -> Receive:
    """A ``receive`` that hands out an already read body, then waits on the original stream's end (an
    open-ended answer, the availability stream, ends when its client goes)."""
    pending: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]
    if then is not None:
        pending = [then]

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        return await original()

    return receive
